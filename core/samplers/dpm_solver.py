"""DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Alg. 2), the data-prediction multistep solver of the
diffusion ODE, in the form of diffusers' DPMSolverMultistepScheduler (midpoint, ``lower_order_final``).

With α_t = √ᾱ_t, σ_t = √(1−ᾱ_t), λ_t = log(α_t/σ_t) and h = λ_{t'} − λ_t, a step from t to t' is

    first order:   x_{t'} = (σ_{t'}/σ_t)·x_t + α_{t'}·(1 − e^{−h})·D0
    second order:  the same with D0 + ½·D1,  D1 = (x̂_0(t) − x̂_0(t_prev)) / r,  r = h_prev / h

using D0 = x̂_0(t). The first step (no history) and the last step (to σ = 0, which returns x̂_0 itself) are first
order. Coefficients of x_t, x̂_0(t) and x̂_0(t_prev) are precomputed in float64. ᾱ is floored at 2⁻²⁴ so that a
zero-terminal-SNR schedule has a finite λ (as diffusers does).
"""
from __future__ import annotations

import numpy as np
import torch


class DPMSolverPP2M:
    needs_eps = False

    def __init__(self, alphas_cumprod: np.ndarray, timesteps: np.ndarray):
        ab = alphas_cumprod[timesteps]
        alpha, sigma = np.sqrt(ab), np.sqrt(1.0 - ab)
        lam = np.log(alpha) - np.log(sigma)
        n = len(timesteps)
        self.c_x, self.c_0, self.c_1 = [0.0] * n, [1.0] * n, [0.0] * n
        for i in range(n - 1):  # the last step goes to σ = 0: x = x̂_0 exactly
            h = lam[i + 1] - lam[i]
            a = alpha[i + 1] * -np.expm1(-h)  # α_{t'}·(1 − e^{−h})
            self.c_x[i] = float(sigma[i + 1] / sigma[i])
            if i == 0:
                self.c_0[i] = float(a)
            else:
                r = (lam[i] - lam[i - 1]) / h
                self.c_0[i] = float(a * (1.0 + 0.5 / r))
                self.c_1[i] = float(-a * 0.5 / r)
        self.last = n - 1
        self._prev_x0 = None

    def draws_noise(self, i: int) -> bool:
        return False

    def step(self, i: int, x: torch.Tensor, x0: torch.Tensor, eps, noise) -> torch.Tensor:
        prev, self._prev_x0 = self._prev_x0, x0
        if i == self.last:
            return x0
        out = torch.mul(x, self.c_x[i]).add_(x0, alpha=self.c_0[i])
        return out.add_(prev, alpha=self.c_1[i]) if self.c_1[i] else out
