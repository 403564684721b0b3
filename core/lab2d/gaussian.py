"""Gaussian data in closed form: every sampler step is affine-Gaussian (Pierret & Galerne, ICML 2025).

For p(x_0) = N(μ, Σ) the marginal is q(x_t) = N(a·μ, a²Σ + s²I) (a = √ᾱ_t, s = √(1−ᾱ_t), eq. 5) and the exact
denoiser is linear:

    E[x_0 | x_t] = μ + a·Σ·(a²Σ + s²I)⁻¹·(x_t − a·μ)  =: A_t·x_t + b_t.

DDPM (eq. 14 with fresh noise), DDIM (Song et al. eq. 12) and DPM-Solver++(2M) (Lu et al. Alg. 2) each combine
x_t, x̂_0, ε̂ = (x_t − a·x̂_0)/s, the previous x̂_0 and fresh noise linearly, so after k steps
x = m_k + L_k·ξ with ξ = (z_0, z_1, …) all the standard normal draws (z_0 the start x_T). :func:`propagate` runs
the sampler's own step (:mod:`core.samplers`' solver objects, the same coefficients ``sample`` uses) once on the
mean and once on the columns of L — no coefficient is restated here — and the law after the run is N(m, L·Lᵀ).
:func:`w2_gaussian` is the Wasserstein-2 distance between Gaussians,
W2² = ‖m₁ − m₂‖² + tr(Σ₁ + Σ₂ − 2(Σ₂^½ Σ₁ Σ₂^½)^½).
"""
from __future__ import annotations

import numpy as np
import torch

from core.lab2d.data import gaussian_params
from core.lab2d.exact import ab_at, from_points, to_points
from core.models.denoiser import Denoiser
from core.samplers import MIN_ALPHA_CUMPROD, plan_timesteps
from core.samplers.ddim import DDIMSolver
from core.samplers.ddpm import DDPMSolver
from core.samplers.dpm_solver import DPMSolverPP2M


def linear_denoiser(mean, cov, ab: float) -> tuple[np.ndarray, np.ndarray]:
    """(A, b) with E[x_0 | x_t] = A·x_t + b for N(mean, cov) data at ᾱ = ``ab`` (float64)."""
    mean, cov = np.asarray(mean, np.float64), np.asarray(cov, np.float64)
    a, s2 = np.sqrt(ab), 1.0 - ab
    A = a * cov @ np.linalg.inv(a * a * cov + s2 * np.eye(len(mean)))
    return A, mean - a * A @ mean


class GaussianDenoiser(Denoiser):
    """The exact (linear) denoiser of N(μ, Σ) 2D data, prediction type ``sample``, any schedule, no clipping."""

    def __init__(self, mean, cov, name: str = "exact Gaussian"):
        super().__init__(resolution=1, channels=2, prediction_type="sample", schedule=None, clip_sample=False,
                         name=name)
        self.mean, self.cov = gaussian_params(mean, cov)

    def model_output(self, x_t, t, class_labels=None, schedule=None) -> torch.Tensor:
        if schedule is None:
            raise ValueError("the Gaussian denoiser works on any schedule but needs one: pass schedule=…")
        t = torch.as_tensor(t).reshape(-1)
        if len(torch.unique(t)) != 1:
            raise ValueError("the Gaussian denoiser takes one timestep per call")
        A, b = linear_denoiser(self.mean, self.cov, ab_at(schedule, int(t[0])))
        p = to_points(x_t).double()
        out = p @ torch.from_numpy(A.T) + torch.from_numpy(b)
        return from_points(out.to(x_t.dtype), x_t).contiguous()


def _solver(sampler: str, ab: np.ndarray, timesteps: np.ndarray):
    if sampler == "ddpm":
        return DDPMSolver(ab, timesteps, "fixed_small")
    if sampler == "ddim":
        return DDIMSolver(ab, timesteps, 0.0, final_alpha_cumprod=1.0)
    if sampler == "dpmpp2m":
        return DPMSolverPP2M(ab, timesteps)
    raise ValueError(f"unknown sampler {sampler!r}")


def propagate(mean, cov, schedule, sampler: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """The exact law N(m, S) of ``sample(GaussianDenoiser(mean, cov), schedule, sampler, steps)``'s output
    (the samplers' default spacing, DDPM's fixed-small variance, DDIM with η = 0), as float64 (m, S)."""
    mean, cov = gaussian_params(mean, cov)
    ab_raw = np.asarray(schedule.alphas_cumprod, dtype=np.float64)
    ab = np.maximum(ab_raw, MIN_ALPHA_CUMPROD)
    ts = plan_timesteps(schedule.T, sampler, steps)
    d, k = len(mean), len(ts)
    width = d * (k + 1)                                  # ξ = (z_0, z_1, …, z_k), each d-dimensional
    on_mean, on_lin = _solver(sampler, ab, ts), _solver(sampler, ab, ts)
    m = torch.zeros(d, 1, dtype=torch.float64)
    L = torch.zeros(d, width, dtype=torch.float64)
    L[:, :d] = torch.eye(d)
    zero = torch.zeros_like(m)
    for i, t in enumerate(ts.tolist()):
        A, b = linear_denoiser(mean, cov, ab_raw[t])     # the denoiser sees the raw ᾱ; the solver the floored one
        A, b = torch.from_numpy(A), torch.from_numpy(b)[:, None]
        a, s = float(np.sqrt(ab[t])), float(np.sqrt(1.0 - ab[t]))
        x0_m, x0_L = A @ m + b, A @ L
        eps_m, eps_L = (m - a * x0_m) / s, (L - a * x0_L) / s
        noisy = on_mean.draws_noise(i)
        z = torch.zeros(d, width, dtype=torch.float64)
        if noisy:
            z[:, d * (i + 1):d * (i + 2)] = torch.eye(d)
        m = on_mean.step(i, m.clone(), x0_m, eps_m, zero if noisy else None)
        L = on_lin.step(i, L.clone(), x0_L, eps_L, z if noisy else None)
    S = (L @ L.T).numpy()
    return m[:, 0].numpy(), (S + S.T) / 2


def _sqrtm_psd(S: np.ndarray) -> np.ndarray:
    w, V = np.linalg.eigh((S + S.T) / 2)
    return (V * np.sqrt(np.clip(w, 0.0, None))) @ V.T


def w2_gaussian(m1, S1, m2, S2) -> float:
    """W2(N(m1, S1), N(m2, S2)), the closed form above."""
    r2 = _sqrtm_psd(S2)
    cross = _sqrtm_psd(r2 @ S1 @ r2)
    val = float(np.sum((np.asarray(m1) - np.asarray(m2)) ** 2) + np.trace(S1 + S2 - 2 * cross))
    return float(np.sqrt(max(val, 0.0)))


def w2_table(mean, cov, schedule, steps_list, samplers=("ddpm", "ddim", "dpmpp2m")) -> dict:
    """{sampler: {steps: W2 of the sampler's output law to N(mean, cov)}} (steps beyond what a sampler allows,
    e.g. DPM-Solver++ at T, are left out)."""
    from core.samplers.timesteps import max_steps
    mean, cov = gaussian_params(mean, cov)
    out = {}
    for sampler in samplers:
        top = max_steps(schedule.T, sampler == "dpmpp2m")
        out[sampler] = {n: w2_gaussian(*propagate(mean, cov, schedule, sampler, n), mean, cov)
                        for n in steps_list if n <= top}
    return out
