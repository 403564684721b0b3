"""DDIM (Song et al. 2021, eq. 12): from x_t to the next visited timestep t',

    x_{t'} = √ᾱ_{t'}·x̂_0 + √(1 − ᾱ_{t'} − σ²)·ε̂ + σ·z,   σ = η·√((1−ᾱ_{t'})/(1−ᾱ_t)·(1 − ᾱ_t/ᾱ_{t'}))

η = 0 is deterministic (an ODE sampler); η = 1 is DDPM's "fixed small" variance. After the last step ᾱ = 1
(diffusers' ``set_alpha_to_one``; Stable Diffusion's configs say false: then ᾱ_0). ε̂ is the model's own, not recomputed from a clipped x̂_0 (diffusers' default
``use_clipped_model_output=False``); ``sample(…, use_clipped_model_output=True)`` recomputes it, which keeps guided
or out-of-range x̂_0 from saturating the image. A noise tensor is drawn at every step when η > 0, as diffusers does.
"""
from __future__ import annotations

import numpy as np
import torch


class DDIMSolver:
    needs_eps = True

    def __init__(self, alphas_cumprod: np.ndarray, timesteps: np.ndarray, eta: float = 0.0,
                 final_alpha_cumprod: float = 1.0):
        ab = alphas_cumprod[timesteps]
        ab_prev = np.append(alphas_cumprod[timesteps[1:]], final_alpha_cumprod)
        var = (1.0 - ab_prev) / (1.0 - ab) * (1.0 - ab / ab_prev)
        std = eta * np.sqrt(var)
        self.c_x0 = np.sqrt(ab_prev).tolist()
        self.c_eps = np.sqrt(np.maximum(1.0 - ab_prev - std**2, 0.0)).tolist()
        self.std = std.tolist()
        self.eta = float(eta)

    def draws_noise(self, i: int) -> bool:
        return self.eta > 0

    def step(self, i: int, x: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor, noise) -> torch.Tensor:
        out = torch.mul(x0, self.c_x0[i]).add_(eps, alpha=self.c_eps[i])
        return out.add_(noise, alpha=self.std[i]) if noise is not None else out
