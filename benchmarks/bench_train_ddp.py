"""Training throughput: ``ddpm train``'s loop (core.train.Trainer) against a bare hand-written PyTorch loop on the
same UNet and batch, one process; then the scaling of two CPU processes under torchrun (gloo); and, when a GPU is
present, samples/s at batch 64/256 in fp32 vs bf16, with and without torch.compile.

    python benchmarks/bench_train_ddp.py [--size small] [--batch 32] [--steps 12] [--rounds 3] [--threads 1]

The bare loop is the floor a DDPM trainer cannot beat: in-memory MNIST, x_0 by random index, t ~ U, ε ~ N(0, I),
x_t, one forward, MSE, backward, gradient clipping, AdamW, an EMA lerp — nothing else. Trainer and bare loop run
side by side in one process, their steps alternating one by one after warm-up steps (``--rounds`` rounds; the median
of the ratios), so the load of a shared machine hits both alike. Scaling: samples/s of 2 processes × batch B (global 2B) over 2 × (1 process × batch B), each
process with ``--threads`` threads; on a 2-core machine that is the most two processes can have.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402


def trainer_rate(size: str, batch: int, steps: int, warmup: int, out: str, device="cpu", precision="fp32",
                 compile_=False, data="builtin:mnist") -> float:
    """Samples/s of core.train.Trainer's step (global samples over all ranks)."""
    from core.train import train
    tr = train(data=data, out=out, steps=10 ** 6, batch_size=batch, model_size=size, sample_every=0,
               checkpoint_every=0, device=device, precision=precision, compile=compile_, warmup_steps=100)
    for _ in range(warmup):
        tr.train_step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        tr.train_step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return tr.global_batch * steps / (time.perf_counter() - t0)


def bare_step_fn(size: str, batch: int):
    """One step of the bare loop (see the module docstring), as a function."""
    from core.data import load_dataset
    from core.models.unet import UNet
    from core.schedule import NoiseSchedule
    from core.train import unet_config_for
    data = load_dataset("builtin:mnist")
    x = torch.from_numpy(data.images)
    y = torch.from_numpy(data.labels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = UNet(unet_config_for(size, 28, 1, 10))
    ema = UNet(unet_config_for(size, 28, 1, 10))
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4)
    ab = torch.tensor(NoiseSchedule.preset("linear", T=1000).alphas_cumprod, dtype=torch.float32)
    sa, s1 = ab.sqrt(), (1 - ab).sqrt()
    g = torch.Generator().manual_seed(0)
    model.train()

    def step():
        idx = torch.randint(len(x), (batch,), generator=g)
        t = torch.randint(1000, (batch,), generator=g)
        eps = torch.randn((batch, 1, 28, 28), generator=g)
        x0 = x[idx]
        xt = sa[t][:, None, None, None] * x0 + s1[t][:, None, None, None] * eps
        loss = ((model(xt, t, y[idx]) - eps) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 0.001)
        return float(loss.detach())
    return step


def side_by_side(size: str, batch: int, steps: int, warmup: int, out: str) -> tuple[float, float]:
    """(bare, ddpm train) samples/s, their steps alternating one by one in one process, so a shared machine's
    load falls on both alike."""
    from core.train import train
    bare = bare_step_fn(size, batch)
    tr = train(data="builtin:mnist", out=out, steps=10 ** 6, batch_size=batch, model_size=size, sample_every=0,
               checkpoint_every=0, device="cpu", precision="fp32", warmup_steps=100)
    for _ in range(warmup):
        bare()
        tr.train_step()
    spent = [0.0, 0.0]
    for i in range(steps):
        for k in ((0, 1) if i % 2 == 0 else (1, 0)):
            t0 = time.perf_counter()
            bare() if k == 0 else tr.train_step()
            spent[k] += time.perf_counter() - t0
    return batch * steps / spent[0], batch * steps / spent[1]


def worker(args) -> None:
    """Under torchrun: one Trainer per rank; rank 0 prints {"samples_per_s": …} (global)."""
    import core.distributed as D
    torch.set_num_threads(args.threads)
    D.init_from_env("cpu")
    out = args.out if D.world() == 1 else args.out  # rank 0 writes nothing in this timing (no saves)
    rate = trainer_rate(args.size, args.batch, args.steps, args.warmup, out)
    rates = D.all_reduce_mean([rate])
    if D.is_main():
        print(json.dumps({"world": D.world(), "samples_per_s": rates[0]}))
    D.shutdown()


def launch(world: int, args, tmp: str) -> float:
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", str(world), __file__, "--worker", "--size", args.size,
           "--batch", str(args.batch), "--steps", str(args.steps), "--warmup", str(args.warmup), "--threads",
           str(args.threads), "--out", os.path.join(tmp, f"w{world}-{time.monotonic_ns()}")]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(args.threads)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1]
    return float(json.loads(line)["samples_per_s"])


def gpu_table(size: str, steps: int, tmp: str) -> None:
    print("\nGPU (one process): samples/s")
    print(f"{'batch':>6} {'precision':>9} {'compile':>8} {'samples/s':>10}")
    for batch in (64, 256):
        for precision in ("fp32", "bf16"):
            for comp in (False, True):
                try:
                    r = trainer_rate(size, batch, steps, 10 if comp else 3, os.path.join(tmp, f"g{batch}{precision}"
                                     f"{comp}"), device="cuda", precision=precision, compile_=comp)
                    print(f"{batch:>6} {precision:>9} {str(comp):>8} {r:>10.0f}", flush=True)
                except Exception as e:  # noqa: BLE001 - e.g. no compiler for torch.compile
                    print(f"{batch:>6} {precision:>9} {str(comp):>8} failed: {str(e).splitlines()[0][:80]}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", default="small")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--skip-scaling", action="store_true")
    args = p.parse_args()
    if args.worker:
        return worker(args)
    torch.set_num_threads(args.threads)
    tmp = tempfile.mkdtemp(prefix="bench_train_ddp_")
    print(f"{args.size} UNet, MNIST 28×28, batch {args.batch}, {args.threads} thread(s), torch {torch.__version__}, "
          f"{os.cpu_count()} CPU cores; median of {args.rounds} interleaved rounds of {args.steps} steps")
    ours, bare = [], []
    for r in range(args.rounds):
        b, o = side_by_side(args.size, args.batch, args.steps, args.warmup, os.path.join(tmp, f"one{r}"))
        bare.append(b)
        ours.append(o)
        print(f"  round {r + 1}: bare {b:.1f} samples/s, ddpm train {o:.1f} samples/s ({o / b:.3f}×)", flush=True)
    mb, mo = statistics.median(bare), statistics.median(ours)
    ratio = statistics.median(o / b for o, b in zip(ours, bare))
    print(f"one process: bare loop {mb:.1f} samples/s, ddpm train {mo:.1f} samples/s → {ratio:.3f}× the floor "
          "(median of the rounds' ratios)")
    if not args.skip_scaling:
        one, two = [], []
        for r in range(args.rounds):
            one.append(launch(1, args, tmp))
            two.append(launch(2, args, tmp))
            print(f"  round {r + 1}: 1 process {one[-1]:.1f}, 2 processes {two[-1]:.1f} samples/s", flush=True)
        m1, m2 = statistics.median(one), statistics.median(two)
        print(f"torchrun, gloo, CPU: 1 process × batch {args.batch} {m1:.1f} samples/s; 2 processes × batch "
              f"{args.batch} {m2:.1f} samples/s → scaling efficiency {m2 / (2 * m1):.0%}")
    if torch.cuda.is_available():
        gpu_table(args.size, args.steps * 4, tmp)
    else:
        print("GPU: none on this machine (no fp32/bf16/compile figures)")


if __name__ == "__main__":
    main()
