"""Comparison grids against the runs they replace (issue 19), side by side in one process, interleaved:

1. a 4×4 guidance × seed grid (w = 1, 3, 5, 7; seeds 0–3; one image per cell) with DDIM 50 on builtin:mnist against
   one batch-16 DDIM-50 run of ``core.samplers.sample`` (guided, w = 3, each class in turn; and unguided) — goal
   ≤ 1.3× the guided run;
2. a sampler × steps grid (ddpm, ddim, dpmpp2m × 10, 20, 50 steps; 4 images per cell) against the sum of its cells
   run alone with ``sample`` — goal ≤ 1×.

``python benchmarks/bench_compare.py [--repeats 3] [--threads 1]``; prints the medians and the ratios."""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from core.compare import GridRun, plan_grid, run_grid
from core.models.load import load_model
from core.samplers import run_to_end, sample
from core.samplers.guidance import labels_each_class


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def grid(axes, base, **kw):
    plan = plan_grid(axes, base)
    run = GridRun(plan)
    for _ in run_grid(plan, run, score=False, **kw):
        pass
    return run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    den = load_model("builtin:mnist")
    labels16 = labels_each_class(16, 10)

    one_guided = lambda: run_to_end(sample(den, sampler="ddim", steps=50, n=16, class_labels=labels16, guidance=3.0))
    one_plain = lambda: run_to_end(sample(den, sampler="ddim", steps=50, n=16))
    g44 = lambda: grid(["guidance=1,3,5,7", "seed=0..3"], {"n": 1, "sampler": "ddim", "steps": 50})
    cells = [(s, k) for s in ("ddpm", "ddim", "dpmpp2m") for k in (10, 20, 50)]
    alone = lambda: [run_to_end(sample(den, sampler=s, steps=k, n=4)) for s, k in cells]
    g33 = lambda: grid(["sampler=ddpm,ddim,dpmpp2m", "steps=10,20,50"], {"n": 4})
    g33_each = lambda: grid(["sampler=ddpm,ddim,dpmpp2m", "steps=10,20,50"], {"n": 4}, batch=False)

    times = {k: [] for k in ("guided16", "plain16", "grid4x4", "alone_sum", "grid3x3", "grid3x3_unbatched")}
    one_guided()   # warm-up
    for _ in range(args.repeats):
        times["guided16"].append(timed(one_guided))
        times["plain16"].append(timed(one_plain))
        times["grid4x4"].append(timed(g44))
        times["alone_sum"].append(timed(alone))
        times["grid3x3"].append(timed(g33))
        times["grid3x3_unbatched"].append(timed(g33_each))
    med = {k: statistics.median(v) for k, v in times.items()}
    calls44 = g44().calls
    calls33 = g33().calls
    print(f"torch threads {args.threads}, {args.repeats} interleaved repeats, medians:")
    print(f"  batch-16 DDIM-50, guided w=3 (32 rows/call):  {med['guided16']:.2f} s")
    print(f"  batch-16 DDIM-50, unguided (16 rows/call):    {med['plain16']:.2f} s")
    print(f"  4×4 guidance × seed grid, DDIM 50:            {med['grid4x4']:.2f} s  ({calls44} model calls, 28 rows "
          f"each) = {med['grid4x4'] / med['guided16']:.2f}× the guided run, {med['grid4x4'] / med['plain16']:.2f}× "
          "the unguided (goal ≤ 1.3×)")
    print(f"  3×3 sampler × steps, its 9 cells alone:       {med['alone_sum']:.2f} s  (170 model calls)")
    print(f"  3×3 sampler × steps grid, batched:            {med['grid3x3']:.2f} s  ({calls33} model calls) = "
          f"{med['grid3x3'] / med['alone_sum']:.2f}× the sum (goal ≤ 1×)")
    print(f"  3×3 grid, one call per cell (--no-batch):     {med['grid3x3_unbatched']:.2f} s = "
          f"{med['grid3x3_unbatched'] / med['alone_sum']:.2f}× the sum")


if __name__ == "__main__":
    main()
