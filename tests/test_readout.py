"""core.readout, headless: the readout's numbers against an independent computation from x_t itself, the PSNR's
edge cases, the histogram's fixed sample and the view's level of detail."""
import math

import numpy as np
import pytest

from core.forward import draw_noise, q_sample
from core.readout import (HIST_SAMPLES, closed_form_mse, closed_form_psnr, display_stride, histogram_index,
                          histogram_values, moments, psnr_db, readout_cells, readout_values)
from core.schedule import NoiseSchedule


def photo(h=37, w=53, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (h, w, 3)).astype(np.float32)


def test_psnr_is_10_log10_of_4_over_the_mse_with_its_edge_cases():
    assert psnr_db(4.0) == 0.0
    assert psnr_db(0.04) == pytest.approx(20.0)
    assert psnr_db(0.0) == math.inf and psnr_db(-1e-12) == math.inf
    assert math.isnan(psnr_db(math.nan))


def test_moments_are_the_float64_means_even_across_chunks():
    x0 = photo()
    eps = draw_noise(x0.shape, 3).numpy()
    x, e = x0.astype(np.float64).ravel(), eps.astype(np.float64).ravel()
    expected = (np.mean(x * x), np.mean(x * e), np.mean(e * e))
    assert moments(x0, eps) == pytest.approx(expected, rel=1e-12)
    assert moments(x0, eps, chunk=1000) == pytest.approx(expected, rel=1e-12)   # 5,883 values in 6 chunks


@pytest.mark.parametrize("t", [0, 17, 250, 999])
def test_the_closed_form_psnr_equals_the_psnr_of_x_t_itself(t):
    s = NoiseSchedule.preset("linear")
    x0 = photo()
    eps = draw_noise(x0.shape, 0).numpy()
    xt = q_sample(x0.astype(np.float64), t, eps.astype(np.float64), s)
    mse = float(np.mean((xt - x0) ** 2))
    assert closed_form_mse(s, t, moments(x0, eps)) == pytest.approx(mse, rel=1e-9)
    assert closed_form_psnr(s, t, moments(x0, eps)) == pytest.approx(10 * math.log10(4 / mse), abs=1e-8)


def test_readout_values_and_their_text():
    s = NoiseSchedule.preset("linear")
    t = 250
    betas = np.linspace(1e-4, 0.02, 1000)
    ab = float(np.prod(1 - betas[:t + 1]))
    v = readout_values(s, t, 12.345)
    assert v["t"] == t and v["beta"] == pytest.approx(betas[t], rel=1e-12)
    assert v["alpha_bar"] == pytest.approx(ab, rel=1e-10)
    assert v["sqrt_alpha_bar"] == pytest.approx(math.sqrt(ab), rel=1e-10)
    assert v["sqrt_one_minus_alpha_bar"] == pytest.approx(math.sqrt(1 - ab), rel=1e-10)
    assert v["snr_db"] == pytest.approx(10 * math.log10(ab / (1 - ab)), rel=1e-9)
    cells = dict(readout_cells(v))
    assert cells["t"] == "250" and cells["PSNR(x<sub>t</sub>, x<sub>0</sub>)"] == "12.35 dB"
    assert cells["SNR"] == f"{10 * math.log10(ab / (1 - ab)):+.2f} dB"
    assert cells["ᾱ<sub>t</sub>"] == f"{ab:.5g}" and cells["√ᾱ<sub>t</sub>"] == f"{math.sqrt(ab):.4f}"
    # zero terminal SNR: −∞ dB; an exact PSNR ∞; a chain's PSNR not known yet …
    z = NoiseSchedule.preset("linear", T=100, zero_snr=True)
    last = readout_values(z, 99, math.inf)
    assert last["snr_db"] == -math.inf and dict(readout_cells(last))["SNR"] == "−∞ dB"
    assert dict(readout_cells(last))["PSNR(x<sub>t</sub>, x<sub>0</sub>)"] == "∞ dB"
    assert dict(readout_cells(readout_values(s, 3, math.nan)))["PSNR(x<sub>t</sub>, x<sub>0</sub>)"] == "… dB"


def test_the_histogram_sample_is_fixed_and_shows_x_t_at_those_pixels():
    idx = histogram_index(10_000_000)
    assert idx.shape == (HIST_SAMPLES,) and idx.min() >= 0 and idx.max() < 10_000_000
    assert np.array_equal(idx, histogram_index(10_000_000))                # the same pixels every time
    assert histogram_index(500).shape == (500,)                            # a small image: as many as it has
    s = NoiseSchedule.preset("cosine", T=200)
    x0 = photo()
    eps = draw_noise(x0.shape, 1).numpy()
    idx = histogram_index(x0.size)
    xs, es = x0.ravel()[idx].astype(np.float64), eps.ravel()[idx].astype(np.float64)
    a, b = math.sqrt(s.alphas_cumprod[120]), math.sqrt(1 - s.alphas_cumprod[120])
    assert np.allclose(histogram_values(s, 120, xs, es), a * xs + b * es, rtol=1e-12, atol=1e-12)


def test_the_level_of_detail_is_how_many_photo_pixels_one_screen_pixel_covers():
    assert display_stride(0.25) == 1 and display_stride(1.0) == 1 and display_stride(1.99) == 1
    assert display_stride(2.0) == 2 and display_stride(2.9999999) == 3 and display_stride(7.5) == 7
