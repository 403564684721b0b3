"""Steps per second of our UNet at the sizes the app ships, batch 1 and 64, on this CPU.

    .venv/bin/python benchmarks/bench_unet_cpu.py [--batch 1,64] [--seconds 3]

"net calls/s" is one forward pass under ``torch.inference_mode()``; "DDPM steps/s" is the whole sampler step
(network + x̂_0, clipping, posterior mean, noise) through :func:`core.samplers.sample`, so the gap between the two
columns is the sampler's own overhead; "CPU ms/step" is this process's CPU time per sampler step (with --threads 1,
the work per step whatever else the machine runs). Random weights: the cost does not depend on training. The last rows time
the exact oracle over the built-in digits' training split (4,500 images), when core.data is present.
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from core.models.unet import UNetDenoiser
from core.models.unet import UNet, UNetConfig
from core.samplers import sample
from core.schedule import NoiseSchedule


def configs() -> dict[str, UNetConfig]:
    cases = {"UNetConfig() 28×28×1 (default)": UNetConfig()}
    try:
        from core.train import unet_config_for
        cases["MNIST 'small' 28×28×1, 10 classes (built-in model)"] = unet_config_for("small", 28, 1, 10)
        cases["'small' 32×32×3"] = unet_config_for("small", 32, 3, 0)
        cases["'base' 32×32×3"] = unet_config_for("base", 32, 3, 0)
    except ImportError:  # the trainer is not in this checkout
        cases["32×32×3"] = UNetConfig(resolution=32, in_channels=3, attention_resolutions=(8,))
    return cases


def rate(fn, seconds: float) -> tuple[float, float]:
    """(calls per wall second, calls per CPU second of this process)."""
    fn()  # warm-up
    n, start, cpu = 0, time.perf_counter(), time.process_time()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and n >= 3:
            return n / elapsed, n / (time.process_time() - cpu)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", default="1,64")
    ap.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    ap.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), load average {os.getloadavg()[0]:.1f}")
    print("| model | params | batch | net calls/s | ms/call | DDPM steps/s | images·steps/s | CPU ms/step |")
    print("|---|---|---|---|---|---|---|---|")
    sched = NoiseSchedule.preset("linear", T=1000)
    cases = []
    for name, cfg in configs().items():
        torch.manual_seed(0)
        den = UNetDenoiser(UNet(cfg).eval(), schedule=sched)
        cases.append((name, den, f"{sum(p.numel() for p in den.net.parameters()) / 1e6:.2f} M"))
    try:
        from core.models.load import load_model
        oracle = load_model("oracle:builtin:mnist")
        cases.append((f"oracle over builtin:mnist ({len(oracle)} images)", oracle, "—"))
    except (ImportError, ValueError, OSError) as e:
        print(f"# oracle skipped: {e}")
    for name, den, params in cases:
        for batch in [int(b) for b in args.batch.split(",")]:
            x = torch.randn(batch, den.channels, den.resolution, den.resolution)
            t = torch.full((batch,), 500)

            def call():
                with torch.inference_mode():
                    den.model_output(x, t, schedule=sched)

            calls, _ = rate(call, args.seconds)
            steps = max(3, int(calls * args.seconds))
            gen = sample(den, schedule=sched, sampler="ddpm", steps=min(steps, 1000), n=batch)
            next(gen)  # warm-up
            start, cpu, k = time.perf_counter(), time.process_time(), 0
            for _ in gen:
                k += 1
            sampler_rate = k / (time.perf_counter() - start)
            cpu_ms = (time.process_time() - cpu) / k * 1000
            print(f"| {name} | {params} | {batch} | {calls:.1f} | {1000 / calls:.1f} | "
                  f"{sampler_rate:.1f} | {sampler_rate * batch:.0f} | {cpu_ms:.1f} |", flush=True)


if __name__ == "__main__":
    main()
