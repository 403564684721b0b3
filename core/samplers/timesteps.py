"""Which timesteps a sampler visits: the spacings of diffusers' ``set_timesteps`` (names users already know).

For a chain of ``steps`` model calls over T training steps (descending):
- ``leading``   t = k·⌊T/steps⌋ + offset          (DDPM, DDIM default; Stable Diffusion uses offset 1)
- ``trailing``  t = round(T − k·T/steps) − 1       (starts at T−1; Lin et al. 2023, Table 2)
- ``linspace``  t = round(linspace(0, T−1, steps))  (DPM-Solver default)

DPM-Solver's variant (``solver=True``) spaces steps + 1 points and drops the last (t = 0), because its final
step goes to σ = 0 rather than to a timestep.
"""
from __future__ import annotations

import numpy as np

SPACINGS = ("leading", "trailing", "linspace")


def spaced_timesteps(T: int, steps: int, spacing: str = "leading", steps_offset: int = 0,
                     solver: bool = False) -> np.ndarray:
    """Descending int64 timesteps in 0…T−1, exactly as diffusers' schedulers compute them."""
    if spacing not in SPACINGS:
        raise ValueError(f"unknown timestep spacing {spacing!r}; choose one of {', '.join(SPACINGS)}")
    k = steps + 1 if solver else steps
    if spacing == "linspace":
        ts = np.linspace(0, T - 1, k).round()[::-1]
    elif spacing == "leading":
        ts = (np.arange(0, k) * (T // k)).round()[::-1] + steps_offset
    else:
        return _check((np.round(np.arange(T, 0, -T / steps)) - 1).astype(np.int64), T, steps, spacing)
    if solver:
        ts = ts[:-1]
    return _check(ts.astype(np.int64), T, steps, spacing)


def sdedit_timesteps(t_start: int, steps: int, solver: bool = False) -> np.ndarray:
    """Timesteps of a chain that starts at ``t_start`` (SDEdit, Meng et al. 2022): linspace over 0…t_start,
    so the first model call is at exactly t_start (``solver``: DPM-Solver's steps + 1 points, last dropped)."""
    k = steps + 1 if solver else steps
    ts = np.linspace(0, t_start, k).round()[::-1]
    if solver:
        ts = ts[:-1]
    return _check(ts.astype(np.int64), t_start + 1, steps, "linspace")


def _check(ts: np.ndarray, T: int, steps: int, spacing: str) -> np.ndarray:
    if len(ts) != steps or np.any(np.diff(ts) >= 0) or ts.min() < 0 or ts.max() > T - 1:
        raise ValueError(f"{steps} steps do not fit {T} timesteps with {spacing!r} spacing (repeated or "
                         "out-of-range timesteps); use fewer steps")
    return ts


def max_steps(T: int, solver: bool = False) -> int:
    return T - 1 if solver else T
