"""The latent slider's Qt-free half (core.latent.view): encode once, z_t by eq. 5 with the seed's ε, the latent
PSNR against a direct computation, the histogram's values and N(0, 1) curve, the channel tiles, the strip jobs.
A tiny random Stable Diffusion pipeline (tests/sd_tiny.py), nothing downloaded."""
import math

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")
from sd_tiny import save_tiny_pipeline  # noqa: E402

from core.forward import draw_noise, q_sample  # noqa: E402
from core.images import load_image, sample_path, to_uint8  # noqa: E402
from core.latent.forward import fit_photo, latent_noise_strip  # noqa: E402
from core.latent.pipeline import load_pipeline, pixels_to_vae_input  # noqa: E402
from core.latent.view import (LATENT_PEAK, LatentPhoto, channel_tiles, decode_u8, encode_job, encode_photo,  # noqa: E402
                              export_strip_job, latent_psnr, strip_frames_job, strip_grid, vae_frame_job)
from core.readout import normal_density, psnr_db, readout_cells, readout_values  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DDPM_STUDIO_CACHE", str(tmp_path / "app-cache"))   # the linear map's fit lands here


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return load_pipeline(save_tiny_pipeline(tmp_path_factory.mktemp("sd-view") / "sd"))


@pytest.fixture(scope="module")
def cat():
    return load_image(sample_path("chelsea"))


def drain(gen):
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        return stop.value


def reference_z0(pipe, image):
    x = pixels_to_vae_input(fit_photo(image, pipe.default_size), pipe.vae_scale_factor)
    return pipe.encode_image(x, sample=False)[0].cpu().numpy(), x[0].numpy().transpose(1, 2, 0)


def test_encode_once_then_eq_5_with_the_seeds_noise(pipe, cat):
    photo = encode_photo(pipe, cat, seed=7)
    z0, x0 = reference_z0(pipe, cat)
    assert np.array_equal(photo.z0, z0) and np.array_equal(photo.x0, x0)
    assert photo.x0.shape[:2] == (10, 16)          # the cat (451×300) fitted to 16 pixels, floored to even sides
    eps = draw_noise(z0.shape, 7).numpy()          # the pixel view's seed rule, on the latents' shape
    assert np.array_equal(photo.noise, eps)
    s = pipe.denoiser.schedule
    assert s.name == "scaled_linear"
    for t in (0, 250, 999):
        assert np.array_equal(photo.at(t, s), q_sample(z0, t, eps, s))
    # the same ε as the CLI's strip (`ddpm noise IMAGE --model`)
    strip = latent_noise_strip(pipe, fit_photo(cat, pipe.default_size), [250], seed=7)
    assert np.allclose(strip.zt[0], photo.at(250, s), atol=1e-6)
    # a new seed re-draws ε without the VAE
    other = photo.with_seed(8)
    assert other.z0 is photo.z0 and np.array_equal(other.noise, draw_noise(z0.shape, 8).numpy())
    assert photo.with_seed(7) is photo


def test_the_encode_job_yields_cancel_points_and_returns_the_photo_and_the_linear_map(pipe, cat):
    gen = encode_job(pipe, cat, 0)
    assert next(gen) is None            # a cancel point before the VAE runs
    gen.close()
    photo, approx = drain(encode_job(pipe, cat, 0))
    assert isinstance(photo, LatentPhoto) and approx.name == "approx"
    u8 = decode_u8(approx, photo.z0)
    assert u8.dtype == np.uint8 and u8.shape == photo.x0.shape


def test_the_vae_frame_is_core_decode_of_z_t(pipe, cat):
    photo = encode_photo(pipe, cat, 3)
    s = pipe.denoiser.schedule
    z0, _ = reference_z0(pipe, cat)
    zt = q_sample(z0, 400, draw_noise(z0.shape, 3).numpy(), s)
    ref = to_uint8(pipe.decode(torch.from_numpy(zt[None])).clamp(-1, 1)[0].numpy().transpose(1, 2, 0))
    t, u8 = drain(vae_frame_job(pipe, photo.at(400, s), 400))
    assert t == 400 and np.array_equal(u8, ref)


def test_latent_psnr_and_the_readout_match_a_direct_computation(pipe, cat):
    photo = encode_photo(pipe, cat, 0)
    s = pipe.denoiser.schedule
    for t in (0, 10, 500, 999):
        zt = photo.at(t, s).astype(np.float64)
        mse = float(np.mean((zt - photo.z0) ** 2))
        direct = 10 * math.log10(LATENT_PEAK ** 2 / mse) if mse > 0 else math.inf
        assert photo.psnr(t, s) == pytest.approx(direct, rel=1e-6, abs=1e-6)
    assert LATENT_PEAK == 6.0 and latent_psnr(1.0) == pytest.approx(10 * math.log10(36))
    assert psnr_db(4.0) == pytest.approx(0.0)        # the pixel PSNR is unchanged (peak 2)
    v = readout_values(s, 500, photo.psnr(500, s))
    ab = float(np.prod(1 - s.betas[:501]))
    assert v["alpha_bar"] == pytest.approx(ab, rel=1e-9)
    assert v["snr_db"] == pytest.approx(10 * math.log10(ab / (1 - ab)), rel=1e-9)
    names = [k for k, _ in readout_cells(v, latent_peak=LATENT_PEAK)]
    assert names[-1].startswith("PSNR(z<sub>t</sub>, z<sub>0</sub>)") and "peak 6" in names[-1]


def test_histogram_values_and_the_normal_density(pipe, cat):
    photo = encode_photo(pipe, cat, 0)
    s = pipe.denoiser.schedule
    assert photo.hist_index is None           # 4×5×8 latents: all of them
    assert np.array_equal(photo.hist_values(300, s), photo.at(300, s).reshape(-1))
    xs = np.linspace(-4, 4, 9)
    assert np.allclose(normal_density(xs), np.exp(-xs ** 2 / 2) / np.sqrt(2 * np.pi))
    big = LatentPhoto.make(np.zeros((8, 8, 3), np.float32), np.zeros((4, 160, 160), np.float32), 0)
    assert big.hist_index is not None and big.hist_values(0, s).size == 65_536


def test_channel_tiles_two_per_row_over_plus_minus_3():
    z = np.zeros((4, 2, 3), np.float32)
    z[0] = 3.0
    z[3] = -3.0
    tiles = channel_tiles(z)
    assert tiles.shape == (5, 7, 3) and tiles.dtype == np.uint8
    assert (tiles[:2, :3] == 255).all() and (tiles[3:, 4:] == 0).all() and (tiles[:2, 4:] == 128).all()
    assert (tiles[2] == 40).all() and (tiles[:, 3] == 40).all()   # the gap


def test_strip_jobs_decode_z0_and_each_z_t(pipe, cat, tmp_path):
    photo = encode_photo(pipe, cat, 1)
    s = pipe.denoiser.schedule
    frames = drain(strip_frames_job(pipe, photo, s, [100, 900]))
    assert len(frames) == 3
    assert np.array_equal(frames[2], drain(vae_frame_job(pipe, photo.at(900, s), 900))[1])
    out = tmp_path / "strip.png"
    assert drain(export_strip_job(pipe, photo, s, [100, 900], out)) == str(out)
    strip = latent_noise_strip(pipe, fit_photo(cat, pipe.default_size), [100, 900], seed=1)
    want = strip_grid(strip.decoded, strip.z0, strip.zt)       # what `ddpm noise IMAGE --model SD` writes
    got = load_image(out)
    assert np.abs(to_uint8(got).astype(int) - want.astype(int)).max() <= 1
