"""The variational bound (core.vlb): its two densities against independent computations, the oracle's exact
terms in closed form, batching, progress and cancel, and refusals."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from core.forward import draw_noise
from core.models.denoiser import Denoiser
from core.models.oracle import OracleDenoiser
from core.models.unet import UNet, UNetConfig
from core.schedule import NoiseSchedule
from core.vlb import (BoundProgress, BoundResult, compute_bound, discretized_gaussian_log_likelihood, noise_seed,
                      normal_kl, variational_bound)

LN2 = math.log(2.0)


def grid_image(shape, seed=0):
    """A random image on the uint8 grid x = u/127.5 − 1, with both edge levels present."""
    rng = np.random.default_rng(seed)
    u = rng.integers(0, 256, size=shape)
    u.flat[0], u.flat[1] = 0, 255
    return (u / 127.5 - 1.0).astype(np.float32)


def phi(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


# ----- the Gaussian KL ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("m1,v1,m2,v2", [(0.3, 0.5, -0.2, 2.0), (1.0, 0.01, 0.9, 0.02), (0.0, 3.0, 0.0, 1.0)])
def test_normal_kl_matches_monte_carlo(m1, v1, m2, v2):
    rng = np.random.default_rng(1)
    z = rng.normal(m1, math.sqrt(v1), size=400_000)
    log_ratio = (-0.5 * np.log(v1) - (z - m1) ** 2 / (2 * v1)) - (-0.5 * np.log(v2) - (z - m2) ** 2 / (2 * v2))
    estimate, stderr = log_ratio.mean(), log_ratio.std() / math.sqrt(len(z))
    kl = float(normal_kl(m1, math.log(v1), m2, math.log(v2)))
    assert abs(kl - estimate) < 5 * stderr + 1e-12
    assert kl > 0


def test_normal_kl_is_zero_only_between_equal_gaussians():
    assert float(normal_kl(0.4, -3.0, 0.4, -3.0)) == 0.0
    assert float(normal_kl(0.4, -3.0, 0.4 + 1e-3, -3.0)) == pytest.approx(0.5 * 1e-6 / math.exp(-3.0), rel=1e-6)


# ----- the discretized decoder -------------------------------------------------------------------------------
@pytest.mark.parametrize("mean,log_scale", [(0.0, math.log(0.01)), (0.37, math.log(0.3)), (-0.999, math.log(1e-4)),
                                            (1.8, math.log(0.05)), (0.0, math.log(50.0)), (-0.5, math.log(1e-7))])
def test_decoder_probabilities_over_all_256_bins_sum_to_one(mean, log_scale):
    x = torch.arange(256, dtype=torch.float64) / 127.5 - 1.0
    logp = discretized_gaussian_log_likelihood(x, torch.full_like(x, mean), torch.full_like(x, log_scale))
    assert torch.isfinite(logp).all()
    assert float(torch.exp(logp).sum()) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("u,mean", [(0, -0.97), (1, -0.97), (127, 0.1), (140, 0.1), (254, 0.95), (255, 0.95)])
def test_decoder_bins_match_the_normal_cdf(u, mean):
    sigma = 0.02
    x = u / 127.5 - 1.0
    hi = 1.0 if u == 255 else phi((x + 1 / 255 - mean) / sigma)  # open-ended edge bins
    lo = 0.0 if u == 0 else phi((x - 1 / 255 - mean) / sigma)
    got = float(discretized_gaussian_log_likelihood(x, mean, math.log(sigma)))
    assert got == pytest.approx(math.log(hi - lo), rel=1e-9, abs=1e-12)


def test_decoder_tail_costs_its_true_nats_on_both_sides():
    """A pixel 20σ from the mean: Φ(b) − Φ(a) ≈ 1e-89 — the reference code's clamp would say log(1e-12) = −27.6, and
    a naive difference on the right side is 0 (−inf). Both sides must give the true ≈ −202 nats."""
    sigma = 1 / 255 / 0.25  # the bin is 0.5σ wide
    x = 0.0
    for sign in (-1, 1):
        mean = x - sign * 20.25 * sigma  # the bin spans 20σ…20.5σ on one side of the mean
        a, b = 20.0, 20.5
        expected = math.log(0.5 * math.erfc(a / math.sqrt(2)) - 0.5 * math.erfc(b / math.sqrt(2)))
        got = float(discretized_gaussian_log_likelihood(x, mean, math.log(sigma)))
        assert got == pytest.approx(expected, rel=1e-10)
        assert got < -200


# ----- the whole bound with the exact oracle -----------------------------------------------------------------
def posterior_variance(betas: np.ndarray) -> np.ndarray:
    ab = np.cumprod(1 - betas)
    ab_prev = np.concatenate([[1.0], ab[:-1]])
    return betas * (1 - ab_prev) / (1 - ab)


def expected_prior_bits(x: np.ndarray, betas: np.ndarray) -> float:
    """KL(N(√ᾱ x, 1−ᾱ) ‖ N(0, 1)) = ½(ᾱx² + (1−ᾱ) − 1 − log(1−ᾱ)) per dim, ᾱ = Π(1−β), in bits."""
    ab = float(np.prod(1 - betas))
    return float(np.mean(0.5 * (ab * x.astype(np.float64) ** 2 + (1 - ab) - 1 - math.log(1 - ab)))) / LN2


def expected_exact_decoder_bits(x: np.ndarray, sigma: float) -> float:
    """−log₂ P(bin of x) for a decoder centred exactly on x: interior pixels 2Φ(h/σ)−1, edge pixels Φ(h/σ)."""
    inner = 2 * phi(1 / 255 / sigma) - 1
    edge = phi(1 / 255 / sigma)
    u = np.round((x.astype(np.float64) + 1) * 127.5)
    bits = np.where((u == 0) | (u == 255), -math.log2(edge), -math.log2(inner))
    return float(bits.mean())


@pytest.fixture(scope="module")
def linear():
    return NoiseSchedule.preset("linear", T=1000)


def test_oracle_single_image_small_variance_has_zero_kl_and_closed_form_ends(linear):
    x = grid_image((1, 1, 12, 12))
    r = variational_bound(OracleDenoiser(x), x, linear, "small", batch_size=250)
    assert r.terms.shape == (1001,) and r.per_image.shape == (1, 1001)
    kl = r.terms[1:-1]
    assert np.all(np.abs(kl) < 1e-9), f"max |L_k| = {np.abs(kl).max()}"  # μ_θ = μ̃ and σ² = β̃: every KL vanishes
    assert r.prior == pytest.approx(expected_prior_bits(x, linear.betas), rel=1e-9)
    sigma = math.sqrt(posterior_variance(linear.betas)[1])  # the decoder's documented variance: β̃ at code index 1
    assert r.decoder == pytest.approx(expected_exact_decoder_bits(x, sigma), rel=1e-7)
    assert r.bits_per_dim == pytest.approx(r.terms.sum(), rel=1e-12)
    assert r.bits_per_dim == pytest.approx(r.decoder + r.prior, abs=1e-8)


def test_oracle_large_variance_kl_is_the_variance_mismatch(linear):
    """With σ² = β_t and an exact mean, L_k = ½(log β/β̃ + β̃/β − 1)/ln 2 for code timesteps k ≥ 1."""
    x = grid_image((1, 1, 6, 6), seed=3)
    r = variational_bound(OracleDenoiser(x), x, linear, "large", batch_size=500)
    b, bt = linear.betas[1:], posterior_variance(linear.betas)[1:]
    expected = 0.5 * (np.log(b / bt) + bt / b - 1) / LN2
    np.testing.assert_allclose(r.terms[1:-1], expected, rtol=1e-6, atol=1e-12)
    sigma = math.sqrt(posterior_variance(linear.betas)[1])  # same decoder as "small"
    assert r.decoder == pytest.approx(expected_exact_decoder_bits(x, sigma), rel=1e-7)
    assert r.variance == "large"


# ----- batching, parameterisations, reproducibility ----------------------------------------------------------
class NetDenoiser(Denoiser):
    """A small random UNet answering in any prediction type (the same x̂_0 function underneath)."""

    def __init__(self, schedule, prediction_type="epsilon", resolution=8, channels=1, seed=0):
        super().__init__(resolution=resolution, channels=channels, prediction_type=prediction_type,
                         schedule=schedule, clip_sample=False)
        torch.manual_seed(seed)
        self.net = UNet(UNetConfig(resolution=resolution, in_channels=channels, base_channels=8, channel_mults=(1, 2),
                                   attention_resolutions=(), groups=4)).eval()
        self.calls = 0

    def eps(self, x_t, t):
        return 0.5 * torch.tanh(self.net(x_t, t))

    def model_output(self, x_t, t, class_labels=None, schedule=None):
        self.calls += 1
        eps = self.eps(x_t, t).double()
        ab = torch.tensor(np.array(self.schedule.alphas_cumprod))[t.cpu()].reshape(-1, 1, 1, 1)
        a, s = ab.sqrt(), (1 - ab).sqrt()
        x0 = (x_t.double() - s * eps) / a
        out = {"epsilon": eps, "sample": x0, "v_prediction": a * eps - s * x0}[self.prediction_type]
        return out.float() if self.prediction_type == "epsilon" else out


def reference_bound(den: NetDenoiser, x: np.ndarray, schedule: NoiseSchedule, seed: int) -> np.ndarray:
    """improved-diffusion's calc_bpd_loop, one timestep at a time, in numpy (no clipping): N×(T+1) bits/dim."""
    n, T = len(x), schedule.T
    x = x.astype(np.float64)
    betas = schedule.betas
    ab = np.cumprod(1 - betas)
    ab_prev = np.concatenate([[1.0], ab[:-1]])
    pv = betas * (1 - ab_prev) / (1 - ab)
    logvar = np.log(np.concatenate([[pv[1]], pv[1:]]))
    out = np.zeros((n, T + 1))
    for t in range(T - 1, -1, -1):
        eps = np.stack([draw_noise(x.shape[1:], noise_seed(seed, i, t), dtype=torch.float64).numpy()
                        for i in range(n)])
        x_t = (math.sqrt(ab[t]) * x + math.sqrt(1 - ab[t]) * eps).astype(np.float32)
        with torch.no_grad():
            e = den.eps(torch.from_numpy(x_t), torch.full((n,), t)).double().numpy()
        x_t = x_t.astype(np.float64)
        x0_hat = (x_t - math.sqrt(1 - ab[t]) * e) / math.sqrt(ab[t])
        c1 = betas[t] * math.sqrt(ab_prev[t]) / (1 - ab[t])
        c2 = math.sqrt(1 - betas[t]) * (1 - ab_prev[t]) / (1 - ab[t])
        mean = c1 * x0_hat + c2 * x_t
        if t == 0:
            sigma = math.exp(0.5 * logvar[0])
            u = np.round((x + 1) * 127.5)
            cdf = np.vectorize(phi)
            hi = np.where(u == 255, 1.0, cdf((x + 1 / 255 - mean) / sigma))
            lo = np.where(u == 0, 0.0, cdf((x - 1 / 255 - mean) / sigma))
            out[:, 0] = -np.log2(hi - lo).reshape(n, -1).mean(1)
        else:
            true_mean = c1 * x + c2 * x_t
            out[:, t] = ((true_mean - mean) ** 2 / (2 * pv[t])).reshape(n, -1).mean(1) / LN2
    out[:, T] = [expected_prior_bits(im, betas) for im in x]
    return out


@pytest.fixture(scope="module")
def short():
    return NoiseSchedule.preset("linear", T=30, beta_start=1e-3, beta_end=0.3)


def test_batched_bound_equals_a_timestep_by_timestep_reference(short):
    den = NetDenoiser(short)
    x = grid_image((2, 1, 8, 8), seed=5)
    expected = reference_bound(den, x, short, seed=7)
    for batch in (1, 7, 1000):
        r = variational_bound(den, x, seed=7, batch_size=batch)
        np.testing.assert_allclose(r.per_image, expected, rtol=1e-5, atol=1e-9, err_msg=f"batch_size={batch}")
    assert r.clip_denoised is False and r.variance == "small" and r.schedule == short


@pytest.mark.parametrize("kind", ["sample", "v_prediction"])
def test_prediction_types_that_agree_on_x0_give_the_same_bound(short, kind):
    x = grid_image((2, 1, 8, 8), seed=2)
    eps_bound = variational_bound(NetDenoiser(short, "epsilon"), x, seed=1).per_image
    other = variational_bound(NetDenoiser(short, kind), x, seed=1).per_image
    np.testing.assert_allclose(other, eps_bound, rtol=1e-5, atol=1e-9)


def test_an_images_terms_do_not_depend_on_its_companions(short):
    den = NetDenoiser(short)
    x = grid_image((3, 1, 8, 8), seed=9)
    alone = variational_bound(den, x[:1], seed=4, batch_size=11).per_image[0]
    together = variational_bound(den, x, seed=4, batch_size=16).per_image[0]
    np.testing.assert_allclose(together, alone, rtol=1e-6)
    other_seed = variational_bound(den, x[:1], seed=5).per_image[0]
    assert not np.allclose(other_seed[:-1], alone[:-1])  # the seed does pick the noise


def test_images_are_snapped_to_the_uint8_grid(short):
    den = NetDenoiser(short)
    x = grid_image((1, 1, 8, 8), seed=4)
    off = x + np.float32(0.2 / 127.5) * np.sign(np.random.default_rng(0).normal(size=x.shape)).astype(np.float32)
    off = np.clip(off, -1, 1)
    np.testing.assert_array_equal(variational_bound(den, off).per_image, variational_bound(den, x).per_image)


# ----- progress and cancel ------------------------------------------------------------------------------------
def test_progress_events_then_one_result(short):
    den = NetDenoiser(short)
    x = grid_image((2, 1, 8, 8))
    events = list(compute_bound(den, x, batch_size=16))
    progress, result = events[:-1], events[-1]
    assert isinstance(result, BoundResult) and all(isinstance(e, BoundProgress) for e in progress)
    assert [e.done for e in progress] == [0, 16, 32, 48, 60] and all(e.total == 60 for e in progress)
    assert den.calls == 4  # 60 (image, timestep) pairs in forward passes of 16
    first = progress[0].terms
    assert np.isnan(first[:-1]).all() and first[-1] == pytest.approx(result.prior)  # L_T is known at once
    after_one = progress[1].terms  # 16 pairs: code timesteps 29…22 for both images
    np.testing.assert_allclose(after_one[22:30], result.terms[22:30])
    assert np.isnan(after_one[:22]).all()
    np.testing.assert_array_equal(progress[-1].terms, result.terms)
    assert progress[-1].fraction == 1.0


def test_closing_the_generator_stops_the_work(short):
    den = NetDenoiser(short)
    gen = compute_bound(den, grid_image((1, 1, 8, 8)), batch_size=5)
    next(gen), next(gen)
    assert den.calls == 1
    gen.close()
    with pytest.raises(StopIteration):
        next(gen)
    assert den.calls == 1
    assert not torch.is_inference_mode_enabled()  # nothing leaks into the caller between events


def test_variational_bound_reports_progress(short):
    seen = []
    r = variational_bound(NetDenoiser(short), grid_image((1, 1, 8, 8)), batch_size=10, on_progress=seen.append)
    assert [e.done for e in seen] == [0, 10, 20, 30] and r.T == 30


def test_to_dict_is_json_ready_and_consistent(short):
    import json
    r = variational_bound(NetDenoiser(short), grid_image((2, 1, 8, 8)))
    d = json.loads(json.dumps(r.to_dict()))
    assert len(d["terms"]) == 31 and math.fsum(d["terms"]) == pytest.approx(d["bits_per_dim"], rel=1e-12)
    assert d["decoder_bits_per_dim"] + d["kl_bits_per_dim"] + d["prior_bits_per_dim"] == pytest.approx(
        d["bits_per_dim"], rel=1e-12)
    assert np.mean(d["per_image_bits_per_dim"]) == pytest.approx(d["bits_per_dim"], rel=1e-12)
    assert d["dims"] == 64 and d["n_images"] == 2


# ----- refusals -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("x,kwargs,message", [
    (np.zeros((1, 3, 8, 8), np.float32), {}, "the model takes 1×8×8"),
    (np.zeros((1, 1, 9, 9), np.float32), {}, "the model takes 1×8×8"),
    (np.zeros((8, 8), np.float32), {}, "N×C×H×W"),
    (np.full((1, 1, 8, 8), 200.0, np.float32), {}, "[−1, 1]"),
    (np.full((1, 1, 8, 8), np.nan, np.float32), {}, "NaN"),
    (np.zeros((1, 1, 8, 8), np.float32), {"variance": "medium"}, "unknown variance"),
    (np.zeros((1, 1, 8, 8), np.float32), {"batch_size": 0}, "batch size"),
    (np.zeros((2, 1, 8, 8), np.float32), {"class_labels": [1]}, "1 class labels for 2 images"),
])
def test_bad_input_is_refused_before_any_work(short, x, kwargs, message):
    den = NetDenoiser(short)
    with pytest.raises(ValueError, match=None) as e:
        compute_bound(den, x, **kwargs)  # raises at the call, not at the first next()
    assert message in str(e.value) and "\n" not in str(e.value)
    assert den.calls == 0


def test_the_oracle_needs_a_schedule():
    x = grid_image((1, 1, 4, 4))
    with pytest.raises(ValueError, match="no schedule of its own"):
        compute_bound(OracleDenoiser(x), x)


def test_a_trained_model_is_refused_a_schedule_of_another_T(short):
    den = NetDenoiser(short)  # trained (it says) on T = 30
    x = grid_image((1, 1, 8, 8))
    with pytest.raises(ValueError, match="was trained with T = 30 timesteps; this schedule has T = 40"):
        compute_bound(den, x, NoiseSchedule.preset("linear", T=40))
    assert den.calls == 0
    other_shape = NoiseSchedule.preset("cosine", T=30)  # another schedule of the same T is the user's choice
    assert variational_bound(den, x, other_shape).schedule == other_shape


def test_terms_are_improved_diffusions_vb_reversed_then_the_prior(short):
    """calc_bpd_loop appends vb while looping t = T−1 … 0, so its column j is timestep T−1−j (module docstring)."""
    den = NetDenoiser(short)
    x = grid_image((2, 1, 8, 8), seed=3)
    by_t = reference_bound(den, x, short, seed=2)           # [:, t] is timestep t's term, [:, T] the prior
    vb = np.stack([by_t[:, t] for t in list(range(short.T))[::-1]], axis=1)  # their loop, their append order
    prior_bpd = by_t[:, short.T]
    r = variational_bound(den, x, seed=2)
    np.testing.assert_allclose(r.per_image, np.concatenate([vb[:, ::-1], prior_bpd[:, None]], axis=1),
                               rtol=1e-5, atol=1e-9)
    assert not np.allclose(r.per_image[:, :-1], vb)  # not their columns as they stand
