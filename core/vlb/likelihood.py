"""The two densities the variational bound is made of (DDPM notes, eq. 9–14; Ho et al. 2020, §3.3).

- :func:`normal_kl` — KL(N(μ₁, σ₁²) ‖ N(μ₂, σ₂²)) per dimension, closed form. Every L_{t−1} for t ≥ 2 and the prior
  term L_T are such KLs between diagonal Gaussians.
- :func:`discretized_gaussian_log_likelihood` — the decoder L_0 = −log p_θ(x_0 | x_1): a Gaussian integrated over
  the pixel's bin. Data x = u/127.5 − 1 (u = 0…255) sits on a grid of spacing 2/255; the bin of x is
  [x − 1/255, x + 1/255], except that the edge bins are open-ended: u = 0 takes (−∞, −1 + 1/255] and u = 255 takes
  [1 − 1/255, +∞). So the 256 bin probabilities sum to exactly 1 (Ho et al. 2020, eq. 13; Nichol & Dhariwal's
  ``discretized_gaussian_log_likelihood``).
- :func:`gaussian_log_likelihood` — the same decoder for continuous data (a latent diffusion model's latents
  z_0 = s·E(x)): the Gaussian's log-density at x itself, log N(x; μ, σ²). A density, not a probability, so
  −log p can be negative (whenever σ is small and the mean close); the bound is then of a differential entropy.

Both return nats, elementwise; callers average over dimensions and divide by ln 2 for bits/dim.

One deliberate difference from the reference code: it uses a tanh approximation of the normal CDF and clamps each bin
probability at 1e-12. Here Φ is exact (``torch.special.log_ndtr``) and a bin's log-probability is computed in log
space on the tail away from the mean, so a very unlikely pixel costs its true number of nats instead of at most
−log(1e-12) ≈ 27.6 — the bound stays a bound even for a bad model.
"""
from __future__ import annotations

import torch

import math

BIN_HALF_WIDTH = 1.0 / 255.0
LEVELS = 256


def normal_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, e^logvar1) ‖ N(mean2, e^logvar2)) in nats, elementwise (arguments broadcast):

    ½ · (logvar2 − logvar1 + e^(logvar1 − logvar2) + (mean1 − mean2)² · e^(−logvar2) − 1).
    """
    mean1, logvar1, mean2, logvar2 = (torch.as_tensor(v, dtype=torch.float64) for v in (mean1, logvar1, mean2, logvar2))
    return 0.5 * (logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2) - 1.0)


def gaussian_log_likelihood(x, means, log_scales):
    """log N(x; means, e^(2·log_scales)) in nats, elementwise: −½·log 2π − log σ − ½·((x − μ)/σ)²."""
    x, means, log_scales = (torch.as_tensor(v, dtype=torch.float64) for v in (x, means, log_scales))
    z = (x - means) * torch.exp(-log_scales)
    return -0.5 * math.log(2.0 * math.pi) - log_scales - 0.5 * z * z


def _log1mexp(z: torch.Tensor) -> torch.Tensor:
    """log(1 − e^z) for z ≤ 0, accurate at both ends (Mächler 2012)."""
    return torch.where(z > -0.6931471805599453, torch.log(-torch.expm1(z)), torch.log1p(-torch.exp(z)))


def log_normal_interval(lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """log(Φ(upper) − Φ(lower)) for lower < upper, without cancellation: when the interval lies right of 0 it is
    mirrored (Φ(u) − Φ(l) = Φ(−l) − Φ(−u)), so both CDF values are small and accurate in log space."""
    flip = lower > 0
    a = torch.where(flip, -upper, lower)
    b = torch.where(flip, -lower, upper)
    log_b = torch.special.log_ndtr(b)
    return log_b + _log1mexp(torch.special.log_ndtr(a) - log_b)


def discretized_gaussian_log_likelihood(x, means, log_scales):
    """log p(bin of x) in nats, elementwise, for a Gaussian N(means, e^(2·log_scales)) discretized to 8 bits.

    ``x`` must lie on the uint8 grid x = u/127.5 − 1 (the edge bins are recognised by u = 0 and u = 255).
    """
    x, means, log_scales = (torch.as_tensor(v, dtype=torch.float64) for v in (x, means, log_scales))
    x, means, log_scales = torch.broadcast_tensors(x, means, log_scales)
    u = torch.round((x + 1.0) * 127.5)
    inv_std = torch.exp(-log_scales)
    lower = (x - means - BIN_HALF_WIDTH) * inv_std
    upper = (x - means + BIN_HALF_WIDTH) * inv_std
    return torch.where(u <= 0, torch.special.log_ndtr(upper),            # (−∞, −1 + 1/255]
                       torch.where(u >= LEVELS - 1, torch.special.log_ndtr(-lower),  # [1 − 1/255, ∞)
                                   log_normal_interval(lower, upper)))
