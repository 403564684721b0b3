"""``ddpm evaluate --model SPEC [--n N] [--class C|all --guidance W] [--json] [--grid PNG]``: score a digit model
with the built-in classifier (confident share, digit shares, Fréchet distance vs its real-vs-real floor, near-copy
share, on-label share). See :mod:`core.evaluate` for the definitions and the goals."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from core.cli.options import AUTOGUIDANCE, AUTOGUIDANCE_HELP, BATCH, GUIDANCE, SEED, STEPS, int_in
from core.cli.progress import Progress
from core.messages import json_text, printable
from core.outputs import check_output_file, refuse_overwriting_inputs, spec_paths


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="score a digit model with the built-in classifier",
                       description="Generate N digits (default: unconditional DDIM, 50 steps) and report the share "
                       "classified with confidence ≥ 0.9, the share of each digit, the Fréchet distance of "
                       "classifier features to held-out real digits (and the real-vs-real floor), the share of "
                       "near-copies of training images, and with --class the share on label.")
    p.add_argument("--model", default="builtin:mnist", help="model SPEC (default builtin:mnist)")
    p.add_argument("--n", type=int_in(1, 100_000), default=1000, help="number of samples (default 1000)")
    p.add_argument("--sampler", default="ddim", choices=("ddpm", "ddim", "dpmpp2m"), help="default ddim")
    p.add_argument("--steps", type=STEPS, default=50, help="sampling steps (default 50)")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--class", dest="class_label", help="guide towards a digit 0…9, or 'all' (every digit, n/10 each)")
    p.add_argument("--guidance", type=GUIDANCE, default=1.0, help="classifier-free guidance scale w (default 1)")
    p.add_argument("--autoguidance", type=AUTOGUIDANCE, metavar="W", help=AUTOGUIDANCE_HELP)
    p.add_argument("--device", default="cpu", help="where to sample: cpu (default), cuda, mps or auto (the same "
                   "noise everywhere; figures agree to sampling round-off)")
    p.add_argument("--batch", type=BATCH, default=250, help="samples per sampler call (default 250)")
    p.add_argument("--grid", help="also write a PNG grid of up to 100 of the samples")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from core.device import pick_device
    from core.evaluate import evaluate, parse_class
    parse_class(args.class_label)  # bad input fails before any work
    pick_device(args.device)
    if args.guidance != 1.0 and args.class_label is None:
        raise ValueError("--guidance needs --class (guidance steers towards a class)")
    grid_path = Path(args.grid) if args.grid else None
    if grid_path is not None:
        if grid_path.suffix.lower() != ".png":
            raise ValueError(f"--grid {grid_path}: give a .png path")
        check_output_file(grid_path)
        refuse_overwriting_inputs([grid_path], spec_paths(args.model))
    bar = Progress(args.n, "sampling", unit="img")
    samples: list = []
    ev = evaluate(args.model, n=args.n, sampler=args.sampler, steps=args.steps, seed=args.seed,
                  class_label=args.class_label, guidance=args.guidance, batch=args.batch,
                  on_batch=lambda done, total: bar.update(done), samples_out=samples, device=args.device,
                  autoguidance=args.autoguidance)
    bar.close()
    if grid_path is not None:
        from core.images import make_grid, save_image
        x, labels = samples
        if labels is not None and len(set(labels.tolist())) > 1:  # one row per class, up to 10 each
            picks = [np.flatnonzero(labels == c)[:10] for c in range(10)]
            x = np.concatenate([x[p] for p in picks])
        save_image(grid_path, make_grid(x[:100].transpose(0, 2, 3, 1), ncols=10, pad=2))
    if args.json:
        print(json_text(ev.to_dict(), indent=1))
    else:
        print(format_report(ev))
    if grid_path is not None:
        print(f"wrote {grid_path}", file=sys.stderr)
    return 0


def format_report(ev) -> str:
    what = "unconditional" if ev.class_label is None else f"class {ev.class_label}, guidance {ev.guidance:g}"
    if ev.autoguidance is not None:
        what += f", autoguidance {ev.autoguidance:g}"
    lines = [f"{printable(ev.model)}: {ev.n} samples, {ev.sampler} {ev.steps} steps, {what} (seed {ev.seed}; "
             f"{ev.sample_seconds:.1f} s sampling)",
             f"  confident (p ≥ 0.9)      {ev.confident_share:7.1%}  (held-out real digits: "
             f"{ev.confident_share_real:.1%})",
             "  digit shares             " + " ".join(f"{d}:{s:.1%}" for d, s in enumerate(ev.digit_shares)),
             f"  Fréchet distance         {ev.frechet:7.3f}  (real-vs-real floor {ev.frechet_floor:.3f}; "
             f"ratio {ev.frechet_ratio:.2f})",
             f"  near-copies              {ev.near_copy_share:7.1%}  (held-out real digits: "
             f"{ev.near_copy_share_real:.1%})"]
    if ev.on_label_share is not None:
        lines.append(f"  on label                 {ev.on_label_share:7.1%}")
    lines.append("  goals: " + ", ".join(f"{k} {'met' if g['met'] else 'MISSED'}" for k, g in ev.goals.items()))
    return "\n".join(lines)
