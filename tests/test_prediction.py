"""ε / x_0 / v conversions (core.models.prediction) against the forward process they invert."""
import numpy as np
import pytest
import torch

from core.forward import q_sample
from core.models.prediction import (PREDICTION_TYPES, alpha_sigma, convert, predict, target, to_eps, to_v, to_x0)
from core.schedule import NoiseSchedule


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 3, 5, 5, generator=g, dtype=torch.float64) * 2 - 1
    eps = torch.randn(4, 3, 5, 5, generator=g, dtype=torch.float64)
    sched = NoiseSchedule.preset("cosine", T=1000)
    t = torch.tensor([0, 10, 500, 999])
    a, s = alpha_sigma(sched, t, x0)
    return x0, eps, q_sample(x0, t, eps, sched), a, s


def test_alpha_sigma_are_the_forward_process_scales(batch):
    x0, eps, xt, a, s = batch
    assert torch.allclose(a**2 + s**2, torch.ones_like(a))
    assert torch.allclose(a * x0 + s * eps, xt)  # eq. 5 with the same coefficients


@pytest.mark.parametrize("ptype", PREDICTION_TYPES)
def test_every_target_converts_back_to_the_truth(batch, ptype):
    x0, eps, xt, a, s = batch
    out = target(x0, eps, a, s, ptype)
    # x̂_0 from ε divides by α ≈ 0.0002 at t = 999, so compare it where α is not tiny
    assert torch.allclose(to_x0(out, xt, a, s, ptype)[:3], x0[:3], atol=1e-9, rtol=0)
    assert torch.allclose(to_eps(out, xt, a, s, ptype), eps, atol=1e-6, rtol=0)
    assert torch.allclose(to_v(out, xt, a, s, ptype), a * eps - s * x0, atol=1e-6, rtol=0)


@pytest.mark.parametrize("src", PREDICTION_TYPES)
@pytest.mark.parametrize("dst", PREDICTION_TYPES)
def test_convert_round_trips(batch, src, dst):
    x0, eps, xt, a, s = batch
    out = target(x0[:3], eps[:3], a[:3], s[:3], src)
    there = convert(out, xt[:3], a[:3], s[:3], src, dst)
    back = convert(there, xt[:3], a[:3], s[:3], dst, src)
    assert torch.allclose(back, out, atol=1e-8)


def test_v_is_the_rotation_of_x0_and_eps(batch):
    # Salimans & Ho 2022: (x_t, v) is (x_0, ε) rotated by φ with (cos φ, sin φ) = (α, σ)
    x0, eps, xt, a, s = batch
    v = a * eps - s * x0
    assert torch.allclose(xt**2 + v**2, x0**2 + eps**2, atol=1e-9)


def test_unknown_prediction_type_is_one_line():
    with pytest.raises(ValueError, match="unknown prediction type 'score'"):
        to_x0(torch.zeros(1), torch.zeros(1), 1.0, 0.0, "score")


def test_predict_uses_the_denoisers_type(batch):
    from core.models.denoiser import Denoiser

    x0, eps, xt, a, s = batch
    sched = NoiseSchedule.preset("cosine", T=1000)

    class Perfect(Denoiser):  # knows the true x0, answers in v
        def model_output(self, x_t, t, class_labels=None, schedule=None):
            return a * eps - s * x0

    den = Perfect(resolution=5, channels=3, prediction_type="v_prediction", schedule=sched)
    e, x = predict(den, xt, torch.tensor([0, 10, 500, 999]))
    assert torch.allclose(e, eps, atol=1e-6) and torch.allclose(x, x0, atol=1e-6)
    with pytest.raises(ValueError, match="no schedule"):
        predict(Perfect(resolution=5, channels=3), xt, 3)
    assert np.isfinite(e.numpy()).all()
