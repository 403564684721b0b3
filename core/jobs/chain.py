"""The forward Markov chain walk x_0 → x_t by eq. 2, step by step, with cached checkpoints: the main view's
"Markov chain" mode (no Qt here).

Walking the chain to step t costs t+1 draws of image-sized noise (about 1 s per 100 steps for a 1024² photo on a
2-core CPU), so the window runs :func:`chain_frames` on a worker thread and keeps checkpoints of the state every
``stride`` steps within a memory budget: after the first walk, any t is at most ``stride`` steps from a cached
state. The noise of step s is :func:`core.forward.chain_noise` (seeded by the photo's seed and s), so a state
does not depend on the path that reached it and equals ``core.forward.markov_chain`` exactly.

The chain and the closed form (eq. 5) agree in distribution, not pixel for pixel: the chain draws a fresh ε at
every step, the closed form one ε for all t.

A large photo walks on every s-th pixel (:func:`chain_stride`): never more than :data:`CHAIN_MAX_PIXELS` per step.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch

from core.forward import chain_noise, q_step
from core.images import to_uint8
from core.jobs.threads import one_torch_thread
from core.schedule import NoiseSchedule

DEFAULT_BUDGET_BYTES = 256 * 2**20
CHAIN_MAX_PIXELS = 1024 * 1024     # the chain walks at most this many pixels per step


@dataclass
class ChainFrame:
    """One picture from the chain: the state after step ``t`` as display uint8, on the way to ``target``."""

    t: int
    target: int
    image: np.ndarray  # H×W×3 uint8
    final: bool
    mse: float = float("nan")            # mean((x_t − x_0)²) of the state itself (before display clipping)
    sample: np.ndarray | None = None     # the state's values at ``sample_index`` (for a histogram)


class ChainCache:
    """Checkpoints of one chain: (photo, schedule, seed). Thread-safe; states are never modified after caching."""

    def __init__(self, x0: np.ndarray, schedule: NoiseSchedule, seed: int,
                 budget_bytes: int = DEFAULT_BUDGET_BYTES):
        self.x0 = torch.from_numpy(np.ascontiguousarray(x0, dtype=np.float32))
        self.schedule = schedule
        self.seed = int(seed)
        state_bytes = self.x0.numel() * 4
        max_states = max(1, budget_bytes // max(1, state_bytes))
        self.stride = max(1, math.ceil(schedule.T / max_states))
        self._states: dict[int, torch.Tensor] = {}
        self._lock = threading.Lock()

    def nearest(self, t: int) -> tuple[int, torch.Tensor]:
        """The latest cached step ≤ t and its state (step −1 is the photo itself)."""
        with self._lock:
            best = max((s for s in self._states if s <= t), default=-1)
            return best, (self._states[best] if best >= 0 else self.x0)

    def store(self, t: int, state: torch.Tensor) -> None:
        if t % self.stride == 0:
            with self._lock:
                self._states.setdefault(t, state.clone())

    @property
    def cached_steps(self) -> list[int]:
        with self._lock:
            return sorted(self._states)

    def state(self, t: int) -> torch.Tensor:
        """The state after step t, computed synchronously (for tests and scripts)."""
        x = None
        for _, x in walk(self, t):
            pass
        return x


def walk(cache: ChainCache, target: int):
    """Generator: step from the nearest checkpoint to ``target``, yielding (step, state after it) for each step
    taken (just the cached one when ``target`` itself is cached). Checkpoints are stored on the way."""
    target = cache.schedule.check_t(target)
    start, x = cache.nearest(target)
    if start == target:
        yield target, x
        return
    for s in range(start + 1, target + 1):
        x = q_step(x, s, chain_noise(x.shape, cache.seed, s), cache.schedule)
        cache.store(s, x)
        yield s, x


def chain_frames(cache: ChainCache, target: int, frame_interval_s: float = 0.1,
                 sample_index: np.ndarray | None = None):
    """Generator for a worker: a :class:`ChainFrame` of the walk every ``frame_interval_s`` (so the user sees the
    chain move), ``None`` after the other steps (each a cancel point), and the final frame at ``target``."""
    def frame(s, x, final):
        mse = float(torch.mean((x - cache.x0) ** 2))
        sample = x.reshape(-1)[torch.from_numpy(sample_index)].numpy() if sample_index is not None else None
        return ChainFrame(s, target, to_uint8(x), final, mse, sample)

    with one_torch_thread():  # this worker thread's own thread count (see core.jobs.threads)
        last_frame = time.perf_counter()
        x = None
        for s, x in walk(cache, target):
            if s == target:
                break
            if time.perf_counter() - last_frame >= frame_interval_s:
                last_frame = time.perf_counter()
                yield frame(s, x, False)
            else:
                yield None
        yield frame(target, x, True)


def chain_stride(shape, display_stride: int = 1, max_pixels: int | None = None) -> int:
    """The chain runs on every s-th pixel of an H×W(×C) photo: the view's level of detail ``display_stride``, and
    never on more than ``max_pixels`` (default :data:`CHAIN_MAX_PIXELS`, ~1 megapixel; each step draws fresh noise
    for every pixel it walks). s = 1 for ordinary photos."""
    h, w = shape[:2]
    cap = max(1, math.ceil(math.sqrt(h * w / (CHAIN_MAX_PIXELS if max_pixels is None else max_pixels))))
    return max(int(display_stride), cap)
