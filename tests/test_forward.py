"""The forward process: eq. 5 (closed form), eq. 2 (the chain) and eq. 14 (the posterior)."""
import numpy as np
import pytest
import torch

from core.forward import ForwardPreview, chain_noise, draw_noise, markov_chain, q_posterior, q_sample, q_step
from core.images import to_uint8
from core.schedule import NoiseSchedule

NOTES = NoiseSchedule.preset("linear", T=100, beta_start=1e-4, beta_end=0.05)


def test_closed_form_matches_hand_computation_numpy_and_torch():
    x0 = np.linspace(-1, 1, 12, dtype=np.float32).reshape(2, 2, 3)
    eps = draw_noise(x0.shape, 3).numpy()
    ab = np.cumprod(1 - np.linspace(1e-4, 0.05, 100))[37]
    want = np.sqrt(ab) * x0 + np.sqrt(1 - ab) * eps
    np.testing.assert_allclose(q_sample(x0, 37, eps, NOTES), want, rtol=1e-6)
    got_t = q_sample(torch.from_numpy(x0), 37, torch.from_numpy(eps), NOTES)
    assert isinstance(got_t, torch.Tensor)
    np.testing.assert_allclose(got_t.numpy(), want, rtol=1e-6)


def test_batched_timesteps_broadcast_per_sample():
    x0 = torch.ones(3, 1, 2, 2)
    eps = torch.zeros_like(x0)
    t = torch.tensor([0, 50, 99])
    out = q_sample(x0, t, eps, NOTES)
    for i, ti in enumerate(t.tolist()):
        assert torch.allclose(out[i], torch.full((1, 2, 2), float(NOTES.sqrt_alphas_cumprod[ti])))


def test_draw_noise_is_seeded_and_standard_normal():
    a, b, c = draw_noise((256, 256), 7), draw_noise((256, 256), 7), draw_noise((256, 256), 8)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert abs(a.mean().item()) < 0.01 and abs(a.std().item() - 1) < 0.01


@pytest.mark.parametrize("t", [0, 9, 49, 99])
def test_chain_and_closed_form_agree_in_distribution(t):
    """Many independent pixels: after t+1 Markov steps the mean is √ᾱ_t·x_0 and the variance 1 − ᾱ_t (eq. 5)."""
    n = 200_000
    x0 = torch.full((n,), 0.6)
    xt = None
    for xt in markov_chain(x0, NOTES, seed=11, t_end=t):
        pass
    mean, var = xt.mean().item(), xt.var().item()
    want_mean, want_var = 0.6 * NOTES.sqrt_alphas_cumprod[t], 1 - NOTES.alphas_cumprod[t]
    se_mean, se_var = np.sqrt(want_var / n), want_var * np.sqrt(2 / n)
    assert abs(mean - want_mean) < 5 * se_mean + 1e-7
    assert abs(var - want_var) < 5 * se_var + 1e-9
    closed = q_sample(x0, t, draw_noise((n,), 12), NOTES)
    assert abs(closed.mean().item() - mean) < 7 * se_mean + 1e-7


def test_chain_is_path_independent():
    x0 = torch.randn(4, 4, 3)
    states = list(markov_chain(x0, NOTES, seed=5, t_end=20))
    resumed = q_step(states[9], 10, chain_noise(x0.shape, 5, 10), NOTES)
    assert torch.allclose(resumed, states[10])


def test_posterior_is_bayes_rule_of_two_gaussians():
    """q(x_{t−1}|x_t,x_0) ∝ q(x_t|x_{t−1}) q(x_{t−1}|x_0): product of N(√α_t x_{t−1}, β_t) and N(√ᾱ_{t−1} x_0, 1−ᾱ_{t−1})."""
    rng = np.random.default_rng(0)
    x0, xt = rng.normal(size=50), rng.normal(size=50)
    for t in (1, 10, 60, 99):
        a_t, beta = NOTES.alphas[t], NOTES.betas[t]
        ab_prev = NOTES.alphas_cumprod[t - 1]
        precision = a_t / beta + 1 / (1 - ab_prev)
        want_mean = (np.sqrt(a_t) * xt / beta + np.sqrt(ab_prev) * x0 / (1 - ab_prev)) / precision
        mean, var = q_posterior(x0, xt, t, NOTES)
        np.testing.assert_allclose(mean, want_mean, rtol=1e-9)
        assert var == pytest.approx(1 / precision, rel=1e-9)


def test_preview_equals_closed_form_display():
    rng = np.random.default_rng(1)
    x0 = rng.uniform(-1, 1, (64, 80, 3)).astype(np.float32)
    eps = draw_noise(x0.shape, 2).numpy()
    prev = ForwardPreview(x0, eps)
    out = np.empty(x0.shape, np.uint8)
    s = NoiseSchedule.preset("cosine", T=1000)
    for t in (0, 1, 250, 500, 999):
        got = prev.render(t, s, out=out)
        want = to_uint8(q_sample(x0, t, eps, s))
        diff = np.abs(got.astype(int) - want.astype(int))
        assert diff.max() <= 1 and (diff == 0).mean() > 0.999
    assert got is out


def test_to_uint8_rounds_half_up_and_clips():
    x = np.array([-2.0, -1.0, 0.0, 1.0, 3.0, 1 / 127.5 - 1])
    assert to_uint8(x).tolist() == [0, 0, 128, 255, 255, 1]
