"""The forward (noising) process of the DDPM notes.

- eq. 2  one Markov step   x_t = √(1−β_t)·x_{t−1} + √β_t·ε
- eq. 5  the closed form   q(x_t | x_0) = N(√ᾱ_t·x_0, (1−ᾱ_t)·I),  x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε
- eq. 14 the posterior     q(x_{t−1} | x_t, x_0) = N(μ̃_t, β̃_t·I),  μ̃_t = c1·x_0 + c2·x_t

Functions take numpy arrays or torch tensors (the result has the input's type) and caller-supplied noise, so a fixed
ε gives smooth scrubbing. ``t`` is an int, or for torch a 1-D tensor of per-sample timesteps (batch first).
Noise is drawn from a seeded CPU ``torch.Generator`` so a seed means the same pixels on every machine.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from core.schedule import NoiseSchedule


def draw_noise(shape, seed: int, dtype=torch.float32) -> torch.Tensor:
    """ε ~ N(0, I) of ``shape`` from a CPU generator seeded with ``seed`` (same on every device)."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.randn(tuple(shape), generator=g, dtype=dtype)


def _coef(values: np.ndarray, t, like):
    """values[t] shaped to broadcast against ``like`` (batch-first for tensors of timesteps)."""
    if isinstance(like, torch.Tensor):
        if isinstance(t, torch.Tensor) and t.ndim > 0:
            v = torch.from_numpy(np.array(values, dtype=np.float64))[t.long().cpu()].to(like.device, like.dtype)
            return v.reshape(-1, *([1] * (like.ndim - 1)))
        return float(values[int(t)])
    if isinstance(t, np.ndarray) and t.ndim > 0:
        return values[t].reshape(-1, *([1] * (np.ndim(like) - 1))).astype(np.result_type(like, np.float32))
    return values[int(t)]


def _same_kind(x):
    return x if isinstance(x, torch.Tensor) else np.asarray(x)


def q_sample(x0, t, noise, schedule: NoiseSchedule):
    """Eq. 5: x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε."""
    x0 = _same_kind(x0)
    out = _coef(schedule.sqrt_alphas_cumprod, t, x0) * x0 + _coef(schedule.sqrt_one_minus_alphas_cumprod, t, x0) * noise
    return out.astype(np.result_type(x0, np.float32), copy=False) if isinstance(out, np.ndarray) else out


def q_step(x_prev, t, noise, schedule: NoiseSchedule):
    """Eq. 2: one Markov step x_t = √(1−β_t)·x_{t−1} + √β_t·ε (x_prev is the state before step t: the clean image for t = 0)."""
    x_prev = _same_kind(x_prev)
    out = _coef(np.sqrt(schedule.alphas), t, x_prev) * x_prev + _coef(np.sqrt(schedule.betas), t, x_prev) * noise
    return out.astype(np.result_type(x_prev, np.float32), copy=False) if isinstance(out, np.ndarray) else out


def q_posterior(x0, xt, t, schedule: NoiseSchedule):
    """Eq. 14: mean μ̃_t(x_t, x_0) and variance β̃_t of q(x_{t−1} | x_t, x_0). Returns (mean, variance)."""
    mean = _coef(schedule.posterior_mean_coef1, t, xt) * x0 + _coef(schedule.posterior_mean_coef2, t, xt) * xt
    return mean, _coef(schedule.posterior_variance, t, xt)


def markov_chain(x0, schedule: NoiseSchedule, seed: int, t_end: int | None = None) -> Iterator:
    """Eq. 2 applied step by step from the clean image: yields the state after step t, for t = 0, 1, …, t_end
    (state t has the distribution of ``q_sample(x0, t, …)``).

    The noise of step t is ``draw_noise(shape, hash(seed, t))``, so any state can be recomputed from a cached
    earlier one (the GUI caches checkpoints) and the chain never depends on how it was walked.
    """
    t_end = schedule.T - 1 if t_end is None else schedule.check_t(t_end)
    x = torch.as_tensor(np.asarray(x0) if not isinstance(x0, torch.Tensor) else x0, dtype=torch.float32)
    for t in range(t_end + 1):
        x = q_step(x, t, chain_noise(x.shape, seed, t), schedule)
        yield x


def chain_noise(shape, seed: int, t: int) -> torch.Tensor:
    """The ε of Markov step t for a chain seeded with ``seed`` (independent of every other step)."""
    return draw_noise(shape, (int(seed) * 1_000_003 + int(t) + 1) % (2**63 - 1))


class ForwardPreview:
    """The slider's fast path: cached x_0 and ε → the uint8 display image of x_t, one fused pass per frame.

    Display mapping (:func:`core.images.to_uint8`): u = ⌊clip(127.5·x + 128, 0, 255)⌋ — i.e. [−1, 1] → [0, 255]
    rounded half up. Here x_t is never materialised: u = ⌊clip(a·X + b·E + 128)⌋ with X = 127.5·x_0,
    E = 127.5·ε precomputed, a = √ᾱ_t, b = √(1−ᾱ_t).
    """

    def __init__(self, x0: np.ndarray, noise: np.ndarray):
        x0 = np.asarray(x0, dtype=np.float32)
        noise = np.asarray(noise, dtype=np.float32)
        if x0.shape != noise.shape:
            raise ValueError(f"x0 {x0.shape} and noise {noise.shape} differ in shape")
        self.shape = x0.shape
        self._X = torch.from_numpy(x0 * np.float32(127.5))
        self._E = torch.from_numpy(noise * np.float32(127.5))
        self._buf = torch.empty_like(self._X)
        self._offset = torch.tensor(128.0)

    def render_coefficients(self, a: float, b: float, out: np.ndarray | None = None) -> np.ndarray:
        """⌊clip(a·X + b·E + 128, 0, 255)⌋ as uint8 (``out`` may be a preallocated H×W×3 uint8 array)."""
        if out is None:
            out = np.empty(self.shape, dtype=np.uint8)
        buf = self._buf
        torch.add(self._offset, self._X, alpha=float(a), out=buf)  # 128 + a·X in one pass
        buf.add_(self._E, alpha=float(b)).clamp_(0.0, 255.0)
        torch.from_numpy(out).copy_(buf)
        return out

    def render(self, t: int, schedule: NoiseSchedule, out: np.ndarray | None = None) -> np.ndarray:
        t = schedule.check_t(t)
        return self.render_coefficients(schedule.sqrt_alphas_cumprod[t], schedule.sqrt_one_minus_alphas_cumprod[t], out)


NOTES_TIMESTEPS = (19, 39, 59, 79, 99)   # the notes' strip, on their T = 100


def notes_timesteps(T: int) -> list[int]:
    """The notes' strip timesteps (19, 39, …, 99 of T = 100) placed at the same fractions of a schedule of ``T``."""
    from core.schedule import NOTES_T
    return [max(0, min(T - 1, round((t + 1) * T / NOTES_T) - 1)) for t in NOTES_TIMESTEPS]


def noise_strip(x0: np.ndarray, schedule: NoiseSchedule, timesteps: list[int], seed: int) -> np.ndarray:
    """x_t for each t with one shared ε (eq. 5), so the strip matches the window at the same seed: K×H×W×3 float32."""
    eps = draw_noise(x0.shape, seed).numpy()
    return np.stack([q_sample(x0, t, eps, schedule) for t in timesteps]).astype(np.float32)


def parse_timesteps(text: str, schedule: NoiseSchedule) -> list[int]:
    """``"19, 39, 99"`` → [19, 39, 99], each checked against ``schedule`` (one-line ``ValueError`` otherwise)."""
    try:
        ts = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"timesteps must be comma-separated integers, got {str(text)[:60]!r}") from None
    if not ts:
        raise ValueError("no timesteps listed")
    for t in ts:
        schedule.check_t(t)
    return ts
