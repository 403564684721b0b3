"""DDPM ancestral sampling (Ho et al. 2020, Alg. 2; the notes' eq. 6–8 and 14).

Each step draws x_{t'} ~ N(μ̃(x_t, x̂_0), σ²·I) for the next visited timestep t' (t' = t − 1 for the full chain;
a strided chain uses β = 1 − ᾱ_t/ᾱ_{t'}, as diffusers' DDPMScheduler does):

    μ̃ = √ᾱ_{t'}·β/(1−ᾱ_t) · x̂_0 + √(ᾱ_t/ᾱ_{t'})·(1−ᾱ_{t'})/(1−ᾱ_t) · x_t              (eq. 14)
    σ² = β̃ = (1−ᾱ_{t'})/(1−ᾱ_t)·β  ("fixed small", clamped at 1e-20)   or   σ² = β  ("fixed large")

Noise is added when t > 0. All coefficients are precomputed in float64.
"""
from __future__ import annotations

import numpy as np
import torch

from core.models.denoiser import VARIANCE_TYPES


class DDPMSolver:
    needs_eps = False

    def __init__(self, alphas_cumprod: np.ndarray, timesteps: np.ndarray, variance_type: str = "fixed_small"):
        if variance_type not in VARIANCE_TYPES:
            raise ValueError(f"unknown variance type {variance_type!r}; choose one of {', '.join(VARIANCE_TYPES)}")
        ab = alphas_cumprod[timesteps]
        ab_prev = np.append(alphas_cumprod[timesteps[1:]], 1.0)
        beta = 1.0 - ab / ab_prev
        self.c_x0 = (np.sqrt(ab_prev) * beta / (1.0 - ab)).tolist()
        self.c_xt = (np.sqrt(ab / ab_prev) * (1.0 - ab_prev) / (1.0 - ab)).tolist()
        var = np.maximum((1.0 - ab_prev) / (1.0 - ab) * beta, 1e-20) if variance_type == "fixed_small" else beta
        self.sigma = np.sqrt(var).tolist()
        self.noisy = (timesteps > 0).tolist()

    def draws_noise(self, i: int) -> bool:
        return self.noisy[i]

    def step(self, i: int, x: torch.Tensor, x0: torch.Tensor, eps, noise) -> torch.Tensor:
        out = torch.mul(x, self.c_xt[i]).add_(x0, alpha=self.c_x0[i])
        return out.add_(noise, alpha=self.sigma[i]) if noise is not None else out
