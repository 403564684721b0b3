"""Slider fast path vs the notes' `forward_process_ddpms`: x_0 → uint8 display image of x_t, side by side.

The notes' code (as used in their noising figure) draws fresh noise every call, computes x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε,
then clips and converts to uint8. Ours (core.forward.ForwardPreview) reuses a cached ε and fuses scale, add, clip and
conversion into one pass over preallocated buffers. Run: `python benchmarks/bench_forward.py` (prints a Markdown table).
"""
from __future__ import annotations

import statistics
import time

import numpy as np
import torch

from core.forward import ForwardPreview, draw_noise
from core.schedule import NoiseSchedule


def forward_process_ddpms(img_t: torch.Tensor, betas: torch.Tensor, t: int) -> torch.Tensor:
    """The notes' forward process: ᾱ from the βs, fresh ε each call, x_t by eq. 5."""
    alphas = 1.0 - betas
    alpha_bar = torch.cumprod(alphas, dim=0)
    eps = torch.randn_like(img_t)
    return torch.sqrt(alpha_bar[t]) * img_t + torch.sqrt(1.0 - alpha_bar[t]) * eps


def notes_display(img_t, betas, t) -> np.ndarray:
    x_t = forward_process_ddpms(img_t, betas, t)
    return ((x_t.clamp(-1, 1) + 1) / 2 * 255).to(torch.uint8).numpy()


def median_ms(fn, ts, repeat: int) -> float:
    fn(ts[0])
    times = []
    for i in range(repeat):
        t = ts[i % len(ts)]
        start = time.perf_counter()
        fn(t)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main(repeat: int = 100) -> None:
    schedule = NoiseSchedule.preset("linear", T=1000)
    betas = torch.from_numpy(schedule.betas.astype(np.float32))
    ts = list(range(0, 1000, 37))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| image | notes' forward_process_ddpms + uint8 | ours (ForwardPreview.render) | speed-up |")
    print("|---|---|---|---|")
    for side in (512, 1024, 2048):
        x0 = np.random.default_rng(0).uniform(-1, 1, (side, side, 3)).astype(np.float32)
        x0_t = torch.from_numpy(x0)
        preview = ForwardPreview(x0, draw_noise(x0.shape, 0).numpy())
        out = np.empty(x0.shape, np.uint8)
        theirs = median_ms(lambda t: notes_display(x0_t, betas, t), ts, repeat)
        ours = median_ms(lambda t: preview.render(t, schedule, out=out), ts, repeat)
        print(f"| {side}² RGB | {theirs:.2f} ms | {ours:.2f} ms | {theirs / ours:.0f}× |")


if __name__ == "__main__":
    main()
