"""``ddpm train-sd vae|unet --out DIR [--steps N] … [--resume]``: train the Stable Diffusion parts of
``builtin:mnist-sd`` on the built-in digits (:mod:`core.latent.train`), with a progress bar.

``vae`` trains the AutoencoderKL and writes ``OUT/vae/`` (with its measured scaling factor); ``unet`` then trains
the CLIP text encoder and the cross-attention UNet jointly over that VAE's latents and writes the whole pipeline
to ``OUT/model/`` (diffusers' layout, safetensors: ``ddpm sample --model OUT/model --prompt "a bold 3"``).
Ctrl+C or SIGTERM stops after the step in flight and saves a resumable checkpoint (exit 130); ``--resume``
continues it exactly, and may extend ``--steps`` or change ``--lr``, ``--ema``, ``--caption-dropout``.
"""
from __future__ import annotations

import sys

import numpy as np
import torch

from core.cli.cmd_train import _RunProgress, _StopAtStepBoundary
from core.cli.options import SEED, float_in, int_in
from core.messages import relay_warnings

EXIT_INTERRUPTED = 130
MAX_STEPS = 100_000_000


def _channels(text: str) -> list[int]:
    try:
        values = [int(v) for v in str(text).split(",")]
    except ValueError:
        raise ValueError(f"channels must be integers separated by commas, got {text!r}") from None
    if not values or len(values) > 5 or any(not 4 <= v <= 1024 for v in values):
        raise ValueError(f"channels must be 1–5 widths of 4…1024, got {text!r}")
    return values


def register(sub) -> None:
    from core.latent.train import UNetConfig, VAEConfig
    vd, ud = VAEConfig(), UNetConfig()
    p = sub.add_parser("train-sd", help="train the built-in Stable Diffusion pipeline's parts on the digits",
                       description="Train builtin:mnist-sd's parts on the built-in digits: first 'vae' (an "
                       "AutoencoderKL, 3×32×32 → 4×8×8), then 'unet' (a CLIP text encoder and a cross-attention "
                       "UNet, jointly, over the VAE's latents, captions from each digit's label and measured "
                       "attributes). Writes OUT/vae, then OUT/model (a diffusers pipeline folder).")
    p.add_argument("stage", choices=("vae", "unet", "evaluate"),
                   help="which part to train (vae first, then unet), or evaluate a trained pipeline")
    p.add_argument("--out", help="the run's folder (both stages use the same one)")
    p.add_argument("--model", help="evaluate: the pipeline (default OUT/model, or builtin:mnist-sd)")
    p.add_argument("--n", type=int_in(1, 100_000), default=100, help="evaluate: samples per digit (default 100)")
    p.add_argument("--guidance", type=float_in(0.0, 100.0), default=5.0, help="evaluate: guidance (default 5)")
    p.add_argument("--sample-steps", type=int_in(1, 1000), default=30, help="evaluate: DDIM steps (default 30)")
    p.add_argument("--json", action="store_true", help="evaluate: print the figures as JSON")
    p.add_argument("--grid", help="evaluate: also write a PNG of samples (rows: each digit, thin, bold, empty)")
    p.add_argument("--steps", type=int_in(1, MAX_STEPS),
                   help=f"total optimizer steps (default: vae {vd.steps}, unet {ud.steps})")
    p.add_argument("--batch", type=int_in(1, 4096), help=f"batch size (default {ud.batch_size})")
    p.add_argument("--lr", type=float_in(0.0, 1.0, lo_open=True),
                   help=f"peak learning rate (default {vd.lr}; with --resume: change it from this step on)")
    p.add_argument("--warmup", type=int_in(0, MAX_STEPS), help=f"linear warm-up steps (default: vae "
                   f"{vd.warmup_steps}, unet {ud.warmup_steps})")
    p.add_argument("--kl-weight", type=float_in(0.0, 1.0), help=f"vae: the KL term's weight (default {vd.kl_weight})")
    p.add_argument("--ema", type=float_in(0.0, 1.0, hi_open=True), help=f"unet: EMA decay (default {ud.ema_decay}; "
                   "with --resume: change it)")
    p.add_argument("--caption-dropout", type=float_in(0.0, 1.0, hi_open=True),
                   help=f"unet: probability of training on the empty caption, for guidance (default "
                   f"{ud.caption_dropout}; with --resume: change it)")
    p.add_argument("--channels", help="widths per level, e.g. 16,32,64 (default: vae "
                   f"{','.join(map(str, vd.channels))}, unet {','.join(map(str, ud.channels))})")
    p.add_argument("--limit", type=int_in(1, 10_000_000), help="train on the first N training digits only (tests)")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (default cpu)")
    p.add_argument("--checkpoint-every", type=int_in(0, MAX_STEPS),
                   help=f"resumable checkpoint every N steps (default: vae {vd.checkpoint_every}, unet "
                   f"{ud.checkpoint_every})")
    p.add_argument("--sample-every", type=int_in(0, MAX_STEPS),
                   help=f"unet: a sample grid every N steps (default {ud.sample_every})")
    p.add_argument("--threads", type=int_in(1, 1024), help="CPU threads for torch (1 is often faster on a busy "
                   "machine)")
    p.add_argument("--resume", action="store_true", help="continue this stage's run in --out")
    p.set_defaults(func=run)


def run(args) -> int:
    from core.device import pick_device
    from core.latent.train import UNetConfig, VAEConfig, train_unet, train_vae
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.stage == "evaluate":
        return run_evaluate(args)
    if not args.out:
        raise ValueError(f"train-sd {args.stage} needs --out DIR")
    device = str(pick_device(args.device))
    common = dict(out=args.out, seed=args.seed, device=device, limit=args.limit)
    for key, flag in (("steps", "steps"), ("batch_size", "batch"), ("lr", "lr"), ("warmup_steps", "warmup"),
                      ("checkpoint_every", "checkpoint_every")):
        if getattr(args, flag) is not None:
            common[key] = getattr(args, flag)
    if args.channels is not None:
        common["channels"] = _channels(args.channels)
    if args.stage == "vae":
        if args.ema is not None or args.caption_dropout is not None or args.sample_every is not None:
            raise ValueError("--ema, --caption-dropout and --sample-every are options of the unet stage")
        if args.kl_weight is not None:
            common["kl_weight"] = args.kl_weight
        cfg, start = VAEConfig(**common), train_vae
        change = [n for n, f in (("lr", args.lr), ("kl_weight", args.kl_weight)) if f is not None]
    else:
        if args.kl_weight is not None:
            raise ValueError("--kl-weight is an option of the vae stage")
        for key, flag in (("ema_decay", "ema"), ("caption_dropout", "caption_dropout"),
                          ("sample_every", "sample_every")):
            if getattr(args, flag) is not None:
                common[key] = getattr(args, flag)
        if "channels" in common:
            common["attention"] = [i > 0 for i in range(len(common["channels"]))]
        cfg, start = UNetConfig(**common), train_unet
        change = [n for n, f in (("lr", args.lr), ("ema_decay", args.ema), ("caption_dropout", args.caption_dropout))
                  if f is not None]
    prog = f"ddpm train-sd {args.stage}"
    bar = None

    def warn(line: str) -> None:
        print(f"{chr(10) if bar is not None and bar.tty else ''}{prog}: warning: {line}", file=sys.stderr, flush=True)

    with relay_warnings(warn):
        trainer = start(cfg, resume=args.resume, change=tuple(change if args.resume else ()))
        with _StopAtStepBoundary() as stop:
            print(f"{'resuming' if args.resume else 'training'} the {args.stage} in {trainer.out} "
                  f"({_params(trainer)} parameters, {torch.get_num_threads()} threads); step {trainer.step} → "
                  f"{trainer.cfg.steps}", file=sys.stderr, flush=True)
            for c in trainer.recipe_changes:
                what = ", ".join(f"{k} {v[0]} → {v[1]}" for k, v in c.items() if k != "step")
                print(f"recipe changed at step {c['step']}: {what}", file=sys.stderr)
            bar = _RunProgress(trainer.cfg.steps, args.stage, unit="it")
            bar.first = bar.done = trainer.step
            final = None
            for ev in trainer:
                if ev.kind == "step":
                    bar.update(ev.step, loss=ev.loss_avg, lr=ev.lr)
                elif ev.kind == "done":
                    final = ev.path
                elif ev.kind in ("checkpoint", "sample"):  # a log line (the bar redraws in place on a TTY)
                    parts = "".join(f", {k} {v:.4g}" for k, v in getattr(trainer, "last_parts", {}).items())
                    print(f"{chr(10) if bar.tty else ''}step {ev.step}: loss {ev.loss_avg:.4f}{parts}, "
                          f"{ev.it_per_s:.2f} it/s, {ev.elapsed_s:.0f} s; {ev.kind} {ev.path}", file=sys.stderr,
                          flush=True)
                if stop.requested and trainer.between_steps:
                    break
            if stop.requested and trainer.step < trainer.cfg.steps:
                trainer.close()
                path = trainer.save()
                bar.close()
                print(f"{prog}: interrupted at step {trainer.step}; checkpoint in {path} (continue with --resume)",
                      file=sys.stderr, flush=True)
                return EXIT_INTERRUPTED
        bar.close()
        if final is None:
            final = trainer.finish()
    extra = ""
    if args.stage == "vae" and getattr(trainer, "stats", None):
        s = trainer.stats
        extra = (f"; scaling factor {s['scaling_factor']:.4f} (latent std {s['latent_std']:.3f}), reconstruction "
                 f"MSE {s['reconstruction_mse']:.4f}")
    print(f"done: step {trainer.step}, loss (EMA-smoothed) {trainer.loss_avg:.4f}{extra}; written to {final}")
    return 0


def _params(trainer) -> str:
    nets = [trainer.unet, trainer.text_encoder] if trainer.name == "unet" else [trainer.vae]
    return f"{sum(p.numel() for m in nets for p in m.parameters()) / 1e6:.2f} M"


def run_evaluate(args) -> int:
    """The issue's figures (:func:`core.latent.train.evaluate_pipeline`) and a timed 30-step guided sample."""
    import json
    import time

    from core.latent.generate import text_to_image
    from core.latent.train import evaluate_pipeline, sample_digits
    from core.models.load import load_latent
    from core.samplers import run_to_end
    spec = args.model or (str(__import__("pathlib").Path(args.out) / "model") if args.out else "builtin:mnist-sd")
    pipe = load_latent(spec, device=args.device)
    times = []
    for i in range(5):  # batch 1, 30 DDIM steps with guidance, the VAE decode included
        start = time.perf_counter()
        last = run_to_end(text_to_image(pipe, "a handwritten 7", guidance=args.guidance, steps=args.sample_steps,
                                        seed=i))
        pipe.decode(last.x_t)
        times.append(time.perf_counter() - start)
    res = evaluate_pipeline(pipe, n=args.n, guidance=args.guidance, steps=args.sample_steps, seed=args.seed,
                            on_progress=lambda p: print(f"  sampled {p!r}", file=sys.stderr, flush=True))
    res["model"] = spec
    res["seconds_batch1"] = {"median": float(sorted(times)[len(times) // 2]), "best": float(min(times))}
    if args.grid:
        from core.images import make_grid, save_image, to_uint8
        rows = [sample_digits(pipe, f"a handwritten {d}", 10, args.guidance, args.sample_steps, seed=d)
                for d in range(10)]
        rows.append(np.concatenate([sample_digits(pipe, f"a thin {d}", 1, args.guidance, args.sample_steps, seed=d)
                                    for d in range(10)]))
        rows.append(np.concatenate([sample_digits(pipe, f"a bold {d}", 1, args.guidance, args.sample_steps, seed=d)
                                    for d in range(10)]))
        rows.append(sample_digits(pipe, "", 10, args.guidance, args.sample_steps, seed=99))
        x = np.concatenate(rows)
        save_image(args.grid, make_grid(to_uint8(np.repeat(x, 3, 1).transpose(0, 2, 3, 1)), ncols=10, pad=2))
    if args.json:
        print(json.dumps(res, indent=1))
        return 0
    print(f"{spec}: {args.n} samples per digit, \"a handwritten D\", guidance {args.guidance}, DDIM "
          f"{args.sample_steps}")
    print("on label: " + ", ".join(f"{d} {v:.0%}" for d, v in res["on_label"].items())
          + f" (lowest {res['min_on_label']:.1%})")
    print(f"mean ink: thin {res['thin_ink']:.4f}, bold {res['bold_ink']:.4f} (on label {res['thin_on_label']:.1%} / "
          f"{res['bold_on_label']:.1%})")
    print(f"empty prompt: classes {res['empty_histogram']}, confident {res['empty_confident']:.1%}")
    print(f"{args.sample_steps} steps at batch 1 with guidance, VAE decode included: median {res['seconds_batch1']['median']:.3f} s")
    return 0
