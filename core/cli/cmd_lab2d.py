"""``ddpm lab2d --data moons|…|FILE.csv [--n N] [--denoiser exact|learned] [--train-steps K] [--sampler …]
[--steps 5,10,20,50] [--seed S] [--json] [-o OUT.gif|.png|.npz]``: a 2D point cloud sampled back from noise.

For each sampler and step count: the energy distance between the N generated particles and the data
(:mod:`core.lab2d.quality`), printed as a table or, with ``--json``, one JSON object per line. ``-o`` writes the last
sampler and step count's run: an animation of the particles with the trajectories of 200 of them (.gif), the final
scatter (.png), or ``data`` (M×2) and ``particles`` (N×2) (.npz). The same ``--seed`` draws the preset's points,
the network's training and the sampling noise, so the 2D tab with the same settings shows the same figures.
The schedule is Ho et al.'s linear one, T = 1000 (the window's default).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from core.cli import CliError
from core.cli.options import SEED, int_in
from core.messages import json_text, printable

TRAIL = 200         # trajectories drawn in the animation
MAX_FRAMES = 60


def _csv(kind, parse):
    def inner(text: str):
        items = [v.strip() for v in text.split(",") if v.strip()]
        if not items:
            raise CliError(f"empty {kind} list")
        return [parse(v) for v in items]
    return inner


def register(sub) -> None:
    from core.lab2d.data import DEFAULT_POINTS, MAX_POINTS, PRESETS
    from core.lab2d.run import DEFAULT_PARTICLES, DEFAULT_STEPS, MAX_PARTICLES
    from core.samplers import SAMPLERS
    p = sub.add_parser("lab2d", help="sample a 2D point cloud back from noise (exact or learned denoiser)",
                       description="Diffuse a 2D point set and sample it back; prints the energy distance between "
                       "the particles and the data for each sampler and step count.")
    p.add_argument("--data", default="moons", metavar="PRESET|FILE",
                   help=f"{', '.join(PRESETS)}, or a .csv/.npz of x,y points (default moons)")
    p.add_argument("--n", type=int_in(1, MAX_PARTICLES), default=DEFAULT_PARTICLES,
                   help=f"particles to generate (default {DEFAULT_PARTICLES})")
    p.add_argument("--points", type=int_in(1, MAX_POINTS), default=DEFAULT_POINTS,
                   help=f"points of a preset (default {DEFAULT_POINTS})")
    p.add_argument("--denoiser", choices=("exact", "learned"), default="exact",
                   help="exact: E[x_0|x_t] of the point set; learned: a small MLP trained first (default exact)")
    p.add_argument("--train-steps", type=int_in(1, 1_000_000), default=4000,
                   help="training steps of the learned denoiser (default 4000)")
    p.add_argument("--sampler", type=_csv("sampler", str), default=list(SAMPLERS),
                   help=f"comma-separated, of {', '.join(SAMPLERS)} (default all)")
    p.add_argument("--steps", type=_csv("steps", int_in(1, 100_000)), default=list(DEFAULT_STEPS),
                   help="comma-separated step counts (default 5,10,20,50)")
    p.add_argument("--seed", type=SEED, default=0, help="seed of the preset, the training and the noise (default 0)")
    p.add_argument("--json", action="store_true", help="one JSON object per sampler and step count")
    p.add_argument("-o", "--out", metavar="OUT.gif|.png|.npz", help="write the last run's animation, scatter or points")
    p.set_defaults(func=run)


def load_data(spec: str, points: int, seed: int) -> np.ndarray:
    """A preset's points, or a file's."""
    from core.lab2d.data import PRESETS, load_points, preset
    if spec in PRESETS:
        return preset(spec, points, seed)
    if Path(spec).suffix.lower() in (".csv", ".npz"):
        return load_points(spec)
    raise CliError(f"--data {printable(spec)!r}: not a preset ({', '.join(PRESETS)}) nor a .csv/.npz file")


def run(args) -> int:
    from core.lab2d.mlp import LearnConfig, Trainer2D
    from core.lab2d.exact import Exact2D
    from core.lab2d.run import SHORT_NAMES, check_run, sweep
    from core.outputs import check_output_file, refuse_overwriting_inputs
    from core.schedule import NoiseSchedule
    from core.cli.progress import Progress

    schedule = NoiseSchedule.preset("linear")
    for s in args.sampler:
        for k in args.steps:
            check_run(schedule, s, k, args.n)
    out = Path(args.out) if args.out else None
    if out is not None:
        if out.suffix.lower() not in (".gif", ".png", ".npz"):
            raise CliError(f"{printable(out)}: write a .gif, .png or .npz")
        check_output_file(out)
        refuse_overwriting_inputs([out], [args.data])
    data = load_data(args.data, args.points, args.seed)
    if args.denoiser == "exact":
        den = Exact2D(data)
    else:
        trainer = Trainer2D(data, schedule, LearnConfig(steps=args.train_steps, seed=args.seed))
        with Progress(args.train_steps, "training", unit="step") as bar:
            for ev in trainer.run():
                if ev.step % 50 == 0 or ev.step == ev.total:
                    bar.update(ev.step, loss=ev.loss_avg)
        den = trainer.denoiser()
    rows = []
    if not args.json:
        print(f"# {printable(args.data)}: {len(data)} points, {args.n} particles, {args.denoiser} denoiser, "
              f"seed {args.seed}; energy distance to the data")
        print(f"{'sampler':<14}{'steps':>7}{'energy':>12}")
    for row in sweep(data, {args.denoiser: den}, args.sampler, args.steps, args.n, args.seed,
                     {args.denoiser: schedule}):
        rows.append(row)
        if args.json:
            print(json_text({"data": args.data, "points": len(data), "n": args.n, "seed": args.seed,
                             **row.as_json()}))
        else:
            print(f"{SHORT_NAMES[row.sampler]:<14}{row.steps:>7}{row.energy:>12.6f}")
        sys.stdout.flush()
    if out is not None:
        _write(out, data, rows[-1], den, schedule, args)
        print(f"wrote {printable(out)}", file=sys.stderr)
    return 0


def _write(out: Path, data, last, den, schedule, args) -> None:
    from core.images import save_animation, save_image
    from core.lab2d.render import COLORS, scatter_image
    from core.lab2d.run import SHORT_NAMES, particle_frames
    if out.suffix.lower() == ".npz":
        from core.atomic import atomic_path
        with atomic_path(out) as tmp, open(tmp, "wb") as f:
            np.savez(f, data=np.asarray(data, np.float64), particles=np.asarray(last.particles, np.float32))
        return
    color = COLORS[last.sampler]
    name = f"{SHORT_NAMES[last.sampler]}, {last.steps} steps"
    if out.suffix.lower() == ".png":
        save_image(out, scatter_image(data, last.particles, color=color,
                                      caption=f"{name}: energy distance {last.energy:.4f}"))
        return
    from core.samplers import plan_timesteps
    total = len(plan_timesteps(schedule.T, last.sampler, last.steps))
    picks = set(np.linspace(0, total, min(MAX_FRAMES, total + 1)).round().astype(int).tolist())
    images = [scatter_image(data, f.particles, f.trail, color=color, caption=f"{name}: step {f.index}/{f.total}")
              for f in particle_frames(den, schedule, last.sampler, last.steps, args.n, args.seed, keep=TRAIL)
              if f.index in picks]
    images += [images[-1]] * 20   # hold the end
    save_animation(out, images, duration_ms=80)
