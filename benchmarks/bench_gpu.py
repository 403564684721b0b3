"""Steps per second on a CUDA GPU: batch 1 and 64, fp32 vs bf16 autocast, with and without torch.compile.

    .venv/bin/python benchmarks/bench_gpu.py [--batch 1,64] [--seconds 3] [--no-compile]

Without a CUDA device it says so and exits 0 (nothing else in the project needs a GPU). Each row times the whole
sampler step through :func:`core.samplers.sample` (DDPM, noise drawn on the CPU generator and copied over, as on
every device) and a bare network call; channels_last memory format is used throughout.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", default="1,64")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("bench_gpu: no CUDA GPU on this machine (torch "
              f"{torch.__version__}{', CPU-only build' if torch.version.cuda is None else ''}); nothing to measure")
        return 0

    from core.models.unet import UNetDenoiser
    from core.models.unet import UNet, UNetConfig
    from core.samplers import sample
    from core.schedule import NoiseSchedule

    dev = torch.device("cuda")
    print(f"# {torch.cuda.get_device_name(dev)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    cases = {"UNetConfig() 28×28×1": UNetConfig()}
    try:
        from core.train import unet_config_for
        cases["'small' 28×28×1, 10 classes"] = unet_config_for("small", 28, 1, 10)
        cases["'base' 32×32×3"] = unet_config_for("base", 32, 3, 0)
    except ImportError:
        cases["32×32×3"] = UNetConfig(resolution=32, in_channels=3, attention_resolutions=(8,))
    sched = NoiseSchedule.preset("linear", T=1000)
    print("| model | batch | precision | compile | net calls/s | DDPM steps/s |")
    print("|---|---|---|---|---|---|")
    for name, cfg in cases.items():
        for compiled in ([False] if args.no_compile else [False, True]):
            torch.manual_seed(0)
            net = UNet(cfg).to(dev).eval().to(memory_format=torch.channels_last)
            den = UNetDenoiser(net, schedule=sched)
            if compiled:
                den.net = torch.compile(net)
            for batch in [int(b) for b in args.batch.split(",")]:
                for precision in ("fp32", "bf16"):
                    x = torch.randn(batch, cfg.in_channels, cfg.resolution, cfg.resolution,
                                    device=dev).contiguous(memory_format=torch.channels_last)
                    t = torch.full((batch,), 500, device=dev)
                    dtype = torch.bfloat16 if precision == "bf16" else None

                    def call():
                        with torch.inference_mode(), torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
                            den.net(x, t)

                    for _ in range(5):  # warm-up (and compilation)
                        call()
                    torch.cuda.synchronize()
                    n, start = 0, time.perf_counter()
                    while time.perf_counter() - start < args.seconds or n < 10:
                        call()
                        n += 1
                    torch.cuda.synchronize()
                    calls = n / (time.perf_counter() - start)
                    gen = sample(den, sampler="ddpm", steps=1000, n=batch, precision=precision, channels_last=True)
                    for _ in range(5):
                        next(gen)
                    torch.cuda.synchronize()
                    k, start = 0, time.perf_counter()
                    for _ in gen:
                        k += 1
                        if time.perf_counter() - start > args.seconds:
                            break
                    torch.cuda.synchronize()
                    steps = k / (time.perf_counter() - start)
                    print(f"| {name} | {batch} | {precision} | {'yes' if compiled else 'no'} | {calls:.0f} | "
                          f"{steps:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
