"""What a network predicts, and the conversions between the three choices.

With x_t = α·x_0 + σ·ε, α = √ᾱ_t, σ = √(1−ᾱ_t) (eq. 5; α² + σ² = 1):

- ``epsilon``       ε̂ (Ho et al. 2020, eq. 11):          x̂_0 = (x_t − σ·ε̂) / α
- ``sample``        x̂_0 directly:                          ε̂ = (x_t − α·x̂_0) / σ
- ``v_prediction``  v̂ = α·ε − σ·x_0 (Salimans & Ho 2022): x̂_0 = α·x_t − σ·v̂,  ε̂ = σ·x_t + α·v̂

``alpha`` and ``sigma`` are floats or tensors that broadcast against x_t (B×1×1×1 for per-sample timesteps).
"""
from __future__ import annotations

import numpy as np
import torch

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")


def check_prediction_type(prediction_type: str) -> str:
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"unknown prediction type {prediction_type!r}; choose one of {', '.join(PREDICTION_TYPES)}")
    return prediction_type


def to_x0(output, x_t, alpha, sigma, prediction_type: str):
    """x̂_0 from a network output of ``prediction_type``."""
    if prediction_type == "epsilon":
        return (x_t - sigma * output) / alpha
    if prediction_type == "sample":
        return output
    if prediction_type == "v_prediction":
        return alpha * x_t - sigma * output
    check_prediction_type(prediction_type)


def to_eps(output, x_t, alpha, sigma, prediction_type: str):
    """ε̂ from a network output of ``prediction_type``."""
    if prediction_type == "epsilon":
        return output
    if prediction_type == "sample":
        return (x_t - alpha * output) / sigma
    if prediction_type == "v_prediction":
        return sigma * x_t + alpha * output
    check_prediction_type(prediction_type)


def to_v(output, x_t, alpha, sigma, prediction_type: str):
    """v̂ = α·ε̂ − σ·x̂_0 from a network output of ``prediction_type``."""
    if prediction_type == "v_prediction":
        return output
    return alpha * to_eps(output, x_t, alpha, sigma, prediction_type) - sigma * to_x0(output, x_t, alpha, sigma,
                                                                                        prediction_type)


def convert(output, x_t, alpha, sigma, from_type: str, to_type: str):
    """Re-express a prediction of ``from_type`` as ``to_type`` (the training target a loss compares against)."""
    fn = {"epsilon": to_eps, "sample": to_x0, "v_prediction": to_v}.get(check_prediction_type(to_type))
    return fn(output, x_t, alpha, sigma, from_type)


def target(x0, noise, alpha, sigma, prediction_type: str):
    """The regression target of ``prediction_type`` for x_t = α·x_0 + σ·ε: ε, x_0 or v = α·ε − σ·x_0."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "sample":
        return x0
    if prediction_type == "v_prediction":
        return alpha * noise - sigma * x0
    check_prediction_type(prediction_type)


def alpha_sigma(schedule, t, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """α = √ᾱ_t and σ = √(1−ᾱ_t) for timesteps ``t`` (int or (B,) tensor), shaped B×1×…×1 like ``like``."""
    t = torch.as_tensor(t).reshape(-1).long().cpu()
    ab = torch.tensor(np.asarray(schedule.alphas_cumprod), dtype=torch.float64)[t]
    shape = (-1,) + (1,) * (like.ndim - 1)
    return (ab.sqrt().to(like.device, like.dtype).reshape(shape),
            (1 - ab).sqrt().to(like.device, like.dtype).reshape(shape))


def predict(denoiser, x_t: torch.Tensor, t, schedule=None, class_labels=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(ε̂, x̂_0) of ``denoiser`` at (x_t, t) on ``schedule`` (default: the denoiser's own), unclipped."""
    schedule = schedule if schedule is not None else denoiser.schedule
    if schedule is None:
        raise ValueError(f"{denoiser.name} has no schedule of its own; pass one")
    t = torch.as_tensor(t, device=x_t.device).long().reshape(-1).expand(x_t.shape[0])
    out = denoiser.model_output(x_t, t, class_labels=class_labels, schedule=schedule)
    a, s = alpha_sigma(schedule, t, x_t)
    return (to_eps(out, x_t, a, s, denoiser.prediction_type), to_x0(out, x_t, a, s, denoiser.prediction_type))
