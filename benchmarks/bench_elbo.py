"""How long the full T = 1000 variational bound of one 28×28 digit takes (issue 7's goal: ≤ 10 s on a 2-core CPU).

    .venv/bin/python benchmarks/bench_elbo.py [--model builtin:mnist] [--sizes tiny,small,base] [--batch 125,250]

Times :func:`core.vlb.variational_bound` end to end (T forward passes in batches, the KL and decoder terms, the
noise) for the built-in model when it is installed, and for random UNets of the training presets' sizes (same
architecture and cost as trained weights). Each case: one warm-up run, then the median of --repeats runs.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from core.data import load_dataset
from core.models.unet import UNetDenoiser
from core.models.unet import UNet
from core.schedule import NoiseSchedule
from core.train import unet_config_for
from core.vlb import variational_bound


def time_bound(denoiser, x0, batch: int, repeats: int) -> tuple[float, float, float, float]:
    """(median wall s, fastest wall s, CPU s of the fastest run, bits/dim). The fastest run is the one least
    disturbed by other processes; CPU seconds / threads estimates the wall time on an otherwise idle machine."""
    variational_bound(denoiser, x0, batch_size=batch)  # warm-up (allocator, kernels)
    runs, bpd = [], 0.0
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        bpd = variational_bound(denoiser, x0, batch_size=batch).bits_per_dim
        runs.append((time.perf_counter() - wall, time.process_time() - cpu))
    fastest = min(runs)
    return statistics.median(r[0] for r in runs), fastest[0], fastest[1], bpd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="builtin:mnist", help="a model SPEC to time as well, if it loads")
    ap.add_argument("--sizes", default="tiny,small,base", help="random UNet presets to time (comma-separated)")
    ap.add_argument("--batch", default="125,250", help="(image, timestep) pairs per forward pass")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    x0 = load_dataset("builtin:mnist", split="heldout").images[:1]
    schedule = NoiseSchedule.preset("linear", T=1000)
    cases = []
    try:
        from core.models.load import load_model
        cases.append((args.model, load_model(args.model, device=args.device)))
    except (ValueError, FileNotFoundError) as e:
        print(f"(skipping {args.model}: {e})")
    for size in filter(None, args.sizes.split(",")):
        torch.manual_seed(0)
        net = UNet(unet_config_for(size, 28, 1, 10))
        cases.append((f"random {size} UNet", UNetDenoiser(net, schedule=schedule).to(args.device)))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{platform.machine()}, {os.cpu_count()} CPUs (load average {load:.1f} at start), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {args.device}; one 28×28 digit, T = 1000, "
          f"median and fastest of {args.repeats}")
    print(f"{'model':<24} {'params':>8} {'batch':>6} {'median s':>9} {'fastest s':>9} {'its CPU s':>9} "
          f"{'bits/dim':>9}")
    for name, den in cases:
        params = sum(p.numel() for p in den.net.parameters()) if hasattr(den, "net") else 0
        for batch in map(int, args.batch.split(",")):
            median, fastest, cpu, bpd = time_bound(den, x0, batch, args.repeats)
            print(f"{name:<24} {params / 1e6:7.2f}M {batch:>6} {median:9.2f} {fastest:9.2f} {cpu:9.2f} {bpd:9.3f}",
                  flush=True)


if __name__ == "__main__":
    main()
