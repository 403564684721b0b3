"""Keeping x̂_0 in the data range: clipping to [−1, 1] (Ho et al. 2020's sampler) and dynamic thresholding
(Saharia et al. 2022, "Imagen", §2.3): per sample, s = max(1, the p-quantile of |x̂_0|), capped at ``max_value``;
x̂_0 ← clip(x̂_0, −s, s) / s. With ``max_value`` = 1 it is plain clipping (diffusers' default cap)."""
from __future__ import annotations

import math

import torch


def parse_threshold(spec) -> tuple[float, float] | None:
    """None, a quantile p ∈ (0, 1] (no cap, as in the paper), or (p, max_value) as diffusers configures it."""
    if spec is None or spec is False:
        return None
    p, cap = (spec, math.inf) if not isinstance(spec, (tuple, list)) else tuple(spec)
    p, cap = float(p), float(cap)
    if not 0.0 < p <= 1.0:
        raise ValueError(f"dynamic threshold quantile must be in (0, 1], got {p}")
    if not cap >= 1.0:
        raise ValueError(f"dynamic threshold cap must be ≥ 1, got {cap}")
    return p, cap


def dynamic_threshold(x0: torch.Tensor, p: float, max_value: float = math.inf) -> torch.Tensor:
    """Imagen's dynamic thresholding of a batch x̂_0 (B×…), computed in float32 at least."""
    b = x0.shape[0]
    flat = x0.reshape(b, -1)
    work = flat if flat.dtype in (torch.float32, torch.float64) else flat.float()
    s = torch.quantile(work.abs(), p, dim=1).clamp(min=1.0, max=max_value)[:, None]
    return (torch.clamp(work, -s, s) / s).to(x0.dtype).reshape(x0.shape)


def process_x0(x0: torch.Tensor, clip: bool, threshold: tuple[float, float] | None) -> torch.Tensor:
    """Thresholding if asked (it takes precedence, as in diffusers), else clipping to [−1, 1] in place."""
    if threshold is not None:
        return dynamic_threshold(x0, *threshold)
    if clip:
        return x0.clamp_(-1.0, 1.0)
    return x0
