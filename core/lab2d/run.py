"""Sampling point clouds with :func:`core.samplers.sample`, and the quality figure per sampler and step count.

N particles travel as one "image" of shape 1×2×1×N (``n=1, size=(1, N)``): the sampler's first draw is
``randn(1, 2, 1, N)`` from a CPU generator seeded with ``seed``, so DDPM, DDIM and DPM-Solver++ with the same seed
start from the same x_T, and the CLI and the 2D tab, calling :func:`final_particles` / :func:`sweep` with the same
arguments, get the same particles and the same figures. x̂_0 is never clipped (2D data are not images in [−1, 1]).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from core.lab2d.quality import energy_distance
from core.samplers import SAMPLER_NAMES, SAMPLERS, SamplerError, sample
from core.samplers.timesteps import max_steps

MAX_PARTICLES = 10_000
DEFAULT_PARTICLES = 2000
DEFAULT_STEPS = (5, 10, 20, 50)
SHORT_NAMES = {"ddpm": "DDPM", "ddim": "DDIM", "dpmpp2m": "DPM-Solver++"}


@dataclass
class Frame:
    """After step ``index`` of ``total`` (at timestep ``t``): the particles (N×2 float32) and, when asked, the
    states so far of the first ``keep`` particles (steps+1 × keep × 2: x_T first)."""

    index: int
    total: int
    t: int
    particles: np.ndarray
    trail: np.ndarray | None = None


def check_run(schedule, sampler: str, steps: int, n: int) -> None:
    """One-line errors before any work: the sampler, its step count on this schedule, the particle count."""
    if sampler not in SAMPLERS:
        raise SamplerError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    top = max_steps(schedule.T, sampler == "dpmpp2m")
    if not 1 <= int(steps) <= top:
        raise SamplerError(f"{SAMPLER_NAMES[sampler]} takes 1…{top} steps on T = {schedule.T}, got {steps}")
    if not 1 <= int(n) <= MAX_PARTICLES:
        raise SamplerError(f"particles must be 1…{MAX_PARTICLES:,}, got {n}")


def _xy(x) -> np.ndarray:
    return x[0, :, 0, :].T.float().numpy()


def particle_frames(denoiser, schedule, sampler: str, steps: int, n: int, seed: int, keep: int = 0,
                    trail_rows: int = 100) -> Iterator[Frame]:
    """The reverse chain of ``n`` particles as :class:`Frame` s, one per model call (frame 0: x_T). With ``keep``,
    each frame's ``trail`` holds the first ``keep`` particles' states at every ⌈steps/trail_rows⌉-th step so far and
    at the current one (a polyline of at most ``trail_rows`` + 1 points each)."""
    check_run(schedule, sampler, steps, n)
    gen = sample(denoiser, schedule, sampler, int(steps), seed=int(seed), n=1, size=(1, int(n)),
                 clip_sample=False)
    keep = min(int(keep), int(n))
    rows: list[np.ndarray] = []
    stride = 1
    first = True
    for step in gen:
        if first:
            # the start x_T: the sampler's first draw, recomputed as it does (randn of the whole batch first)
            x_T = torch.randn((1, 2, 1, int(n)), generator=torch.Generator().manual_seed(int(seed)))
            start = _xy(x_T)
            stride = max(1, -(-step.total // max(1, int(trail_rows))))
            if keep:
                rows.append(start[:keep])
            yield Frame(0, step.total, int(step.t), start, np.stack(rows) if keep else None)
            first = False
        xy = _xy(step.x_t)
        trail = None
        if keep:
            if step.index % stride == 0 or step.index == step.total:
                rows.append(xy[:keep].copy())
                trail = np.stack(rows)
            else:
                trail = np.stack(rows + [xy[:keep]])
        yield Frame(step.index, step.total, step.t, xy, trail)


def lockstep(denoiser, schedule, samplers, steps: int, n: int, seed: int, data, keep: int = 0, name: str = "exact"):
    """Several samplers from the same x_T, advanced one model call each per round: yields {sampler: Frame}; returns
    {sampler: :class:`Row`} with each final figure (what :func:`sweep` gives for the same arguments)."""
    gens = {s: particle_frames(denoiser, schedule, s, steps, n, seed, keep) for s in samplers}
    last: dict = {}
    while gens:
        for s in list(gens):
            try:
                last[s] = next(gens[s])
            except StopIteration:
                del gens[s]
        if gens:
            yield dict(last)
    return {s: Row(name, s, int(steps), energy_distance(f.particles, data), f.particles) for s, f in last.items()}


def final_particles(denoiser, schedule, sampler: str, steps: int, n: int, seed: int) -> np.ndarray:
    """The samples (N×2 float32) after the whole chain."""
    last = None
    for last in particle_frames(denoiser, schedule, sampler, steps, n, seed):
        pass
    return last.particles


@dataclass
class Row:
    """One figure: ``denoiser`` ("exact" | "learned"), sampler, steps, the energy distance to the data, and the
    particles it was measured on."""

    denoiser: str
    sampler: str
    steps: int
    energy: float
    particles: np.ndarray

    def as_json(self) -> dict:
        return {"denoiser": self.denoiser, "sampler": self.sampler, "steps": self.steps,
                "energy_distance": self.energy}


def sweep(data, denoisers: dict, samplers, steps_list, n: int, seed: int, schedules: dict) -> Iterator[Row]:
    """For each denoiser (name → Denoiser), sampler and step count (in that order): the particles and their
    energy distance to ``data``. ``schedules`` maps each denoiser's name to the schedule it samples on."""
    for name, den in denoisers.items():
        for sampler in samplers:
            for steps in steps_list:
                check_run(schedules[name], sampler, steps, n)
    for name, den in denoisers.items():
        for sampler in samplers:
            for steps in steps_list:
                p = final_particles(den, schedules[name], sampler, int(steps), n, seed)
                yield Row(name, sampler, int(steps), energy_distance(p, data), p)


def nearest_distance(particles, data) -> np.ndarray:
    """Each particle's distance to its nearest data point (N,), float64."""
    x = torch.as_tensor(np.asarray(particles, np.float64))
    y = torch.as_tensor(np.asarray(data, np.float64))
    return np.concatenate([torch.cdist(x[s:s + 2048], y).min(1).values.numpy() for s in range(0, len(x), 2048)])
