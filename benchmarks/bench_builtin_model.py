"""Sampling speed of the built-in model against issue 6's goals: 1000 DDPM steps at batch 1 in ≤ 10 s and
50 DDIM steps in ≤ 1 s on a 2-core CPU. Also with classifier-free guidance (which doubles the batch).

    python benchmarks/bench_builtin_model.py [--model builtin:mnist] [--repeats 3] [--threads N]
        [--autoguidance W] [--sequential-guide]     # an autoguided model: its weight; guide after, not beside

Prints the best of ``repeats`` runs of each (the least disturbed by other processes) and the median.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from core.models.load import load_model
from core.samplers import sample


def run_once(den, sampler, steps, label, guidance) -> float:
    start = time.perf_counter()
    for _ in sample(den, sampler=sampler, steps=steps, seed=0, n=1,
                    class_labels=None if label is None else [label], guidance=guidance):
        pass
    return time.perf_counter() - start


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="builtin:mnist")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--autoguidance", type=float, help="override the autoguidance weight (1 = the model alone)")
    p.add_argument("--sequential-guide", action="store_true",
                   help="run an autoguided model's guide after the model instead of beside it")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from core.models.autoguidance import set_weight
    den = set_weight(load_model(args.model), args.autoguidance)
    n_params = sum(q.numel() for q in den.net.parameters())
    guide = getattr(den, "guide", None)
    if guide is not None:
        den.parallel = not args.sequential_guide
    how = "" if guide is None else ("; autoguidance off (w = 1: the model alone)" if den.weight == 1 else
                                    f"; {den.describe()}, guide run {'beside' if den.parallel else 'after'} "
                                    "the model")
    print(f"{args.model}: {n_params / 1e6:.2f} M parameters, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads{how}")
    cases = [("DDPM 1000 steps, unconditional", "ddpm", 1000, None, 1.0, 10.0),
             ("DDPM 1000 steps, class 3, guidance 3", "ddpm", 1000, 3, 3.0, None),
             ("DDIM 50 steps, unconditional", "ddim", 50, None, 1.0, 1.0),
             ("DDIM 50 steps, class 3, guidance 3", "ddim", 50, 3, 3.0, 1.0)]
    run_once(den, "ddim", 10, None, 1.0)  # warm-up
    for name, sampler, steps, label, guidance, goal in cases:
        times = [run_once(den, sampler, steps, label, guidance) for _ in range(args.repeats)]
        best, med = min(times), statistics.median(times)
        verdict = "" if goal is None else (f"  goal ≤ {goal:g} s: {'met' if best <= goal else 'MISSED'}")
        print(f"{name:40s} best {best:6.2f} s  median {med:6.2f} s  ({1e3 * best / steps:.1f} ms/step){verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
