"""Our DDPM loop vs diffusers' DDPMPipeline: the same UNet2DModel weights, steps, seed and device, side by side.

    .venv/bin/python benchmarks/bench_sampler_vs_diffusers.py [--steps 1000] [--batch 1,16] [--repeats 3]

Both drive the same network, so the difference is the per-step work around it: our sampler uses precomputed
coefficients and a handful of fused tensor ops; the pipeline's scheduler.step recomputes its coefficients from
0-d tensors and searches the timestep list every step. Runs alternate (and who goes first alternates) so that
other processes slow both alike. The CPU time this process used is the fair measure on a shared machine (with
--threads 1 it is the work done, whatever else runs); wall time is shown too, and the max |difference| of the images.
Goal (issue 4): ours ≤ 1.0× the pipeline's time.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time

import torch

from core.device import pick_device


def build_unet(resolution: int, channels: int):
    """A realistic small pixel-space UNet2DModel (MNIST-sized: 3 levels, attention at the 7×7/8×8 level)."""
    from diffusers import UNet2DModel
    torch.manual_seed(0)
    return UNet2DModel(sample_size=resolution, in_channels=channels, out_channels=channels, layers_per_block=1,
                       block_out_channels=(32, 64, 64), norm_num_groups=8,
                       down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", default="1,16", help="comma-separated batch sizes")
    ap.add_argument("--resolution", type=int, default=28)
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from diffusers import DDPMPipeline, DDPMScheduler

    from core.models.load import load_model
    from core.samplers import run_to_end, sample

    device = pick_device(args.device)
    unet = build_unet(args.resolution, args.channels)
    params = sum(p.numel() for p in unet.parameters())
    with tempfile.TemporaryDirectory() as tmp:
        DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=1000)).save_pretrained(tmp)
        ours = load_model(tmp, device=device)
        pipe = DDPMPipeline.from_pretrained(tmp).to(device)
    pipe.set_progress_bar_config(disable=True)
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), device {device}, load average {os.getloadavg()[0]:.1f}")
    print(f"# UNet2DModel {args.resolution}×{args.resolution}×{args.channels}, {params / 1e6:.2f} M parameters, "
          f"{args.steps} DDPM steps")
    print("| batch | ours CPU s (median) | DDPMPipeline CPU s (median) | ratio CPU | ours wall s | theirs wall s "
          "| ratio wall | max abs diff |")
    print("|---|---|---|---|---|---|---|---|")
    for batch in [int(b) for b in args.batch.split(",")]:
        def run_ours():
            return run_to_end(sample(ours, sampler="ddpm", steps=args.steps, n=batch, seed=1)).x_t

        def run_theirs():
            return pipe(batch_size=batch, generator=torch.Generator().manual_seed(1),
                        num_inference_steps=args.steps, output_type="pt").images

        run_ours(), run_theirs()  # warm-up
        times = {0: [], 1: []}  # (cpu, wall) per run
        diff, x, ref = 0.0, None, None
        for r in range(args.repeats):
            for who in ((0, 1) if r % 2 == 0 else (1, 0)):  # alternate who goes first
                wall, cpu = time.perf_counter(), time.process_time()
                if who == 0:
                    x = run_ours()
                else:
                    ref = run_theirs()
                times[who].append((time.process_time() - cpu, time.perf_counter() - wall))
            diff = max(diff, float(((x.float().cpu() / 2 + 0.5).clamp(0, 1) - ref.float().cpu()).abs().max()) * 2)
        co, wo = (statistics.median(v) for v in zip(*times[0]))
        ct, wt = (statistics.median(v) for v in zip(*times[1]))
        print(f"| {batch} | {co:.2f} | {ct:.2f} | {co / ct:.3f}× | {wo:.2f} | {wt:.2f} | {wo / wt:.3f}× | "
              f"{diff:.1e} |", flush=True)
    print("\n| batch | our loop, CPU µs/step | DDPMPipeline's loop, CPU µs/step | (network excluded: out = x/2) |")
    print("|---|---|---|---|")
    for batch in [int(b) for b in args.batch.split(",")]:
        o, t = loop_overhead(args.steps, batch, args.resolution, args.channels)
        print(f"| {batch} | {o:.1f} | {t:.1f} | |", flush=True)


def loop_overhead(steps: int, batch: int, resolution: int, channels: int, repeats: int = 5) -> tuple[float, float]:
    """CPU µs per step of each loop around a trivial network (out = x/2): the per-step work the goal is about."""
    from diffusers import DDPMScheduler

    from core.models.denoiser import Denoiser
    from core.samplers import run_to_end, sample
    from core.schedule import NoiseSchedule

    class Half(Denoiser):
        def model_output(self, x_t, t, class_labels=None, schedule=None):
            return x_t * 0.5

    den = Half(resolution=resolution, channels=channels, schedule=NoiseSchedule.preset("linear", T=1000))
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    shape = (batch, channels, resolution, resolution)

    def theirs():  # DDPMPipeline.__call__'s loop with the network replaced
        g = torch.Generator().manual_seed(1)
        x = torch.randn(shape, generator=g)
        scheduler.set_timesteps(steps)
        with torch.no_grad():
            for t in scheduler.timesteps:
                x = scheduler.step(x * 0.5, t, x, generator=g).prev_sample

    def ours():
        run_to_end(sample(den, sampler="ddpm", steps=steps, n=batch, seed=1))

    out = []
    for fn in (ours, theirs):
        fn()
        runs = []
        for _ in range(repeats):
            cpu = time.process_time()
            fn()
            runs.append((time.process_time() - cpu) / steps * 1e6)
        out.append(statistics.median(runs))
    return out[0], out[1]


if __name__ == "__main__":
    main()
