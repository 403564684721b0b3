"""``ddpm train --data builtin:mnist|DIR --out DIR [--steps N] … [--resume]``: train a DDPM with a progress bar.

Drives :func:`core.train.train`, the same loop as the GUI. Ctrl+C or SIGTERM saves a resumable checkpoint before
exiting (130).
"""
from __future__ import annotations

import signal
import sys
import warnings

import torch

from core.cli.progress import Progress
from core.train import MODEL_SIZES, PRECISIONS, TrainConfig, train

DEFAULTS = TrainConfig()


def register(sub) -> None:
    p = sub.add_parser("train", help="train a DDPM on the built-in digits or a folder of images",
                       description="Train a UNet on builtin:mnist or a folder of images (ε-prediction, L_simple, "
                       "AdamW, EMA). Writes OUT/checkpoint (resumable), OUT/samples/*.png and, at the end, "
                       "OUT/model (inference files for --model OUT/model).")
    p.add_argument("--data", required=True, help="builtin:mnist or a folder of images (sub-folders = classes)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--steps", type=int, default=DEFAULTS.steps, help=f"total optimizer steps (default {DEFAULTS.steps})")
    p.add_argument("--batch", type=int, default=DEFAULTS.batch_size, help=f"batch size (default {DEFAULTS.batch_size})")
    p.add_argument("--resolution", type=int, help="image size (default: 28 for MNIST, 32 for a folder)")
    p.add_argument("--channels", type=int, choices=(1, 3), help="1 = grey, 3 = RGB (default: from the data)")
    p.add_argument("--model-size", default=DEFAULTS.model_size, choices=list(MODEL_SIZES),
                   help=f"UNet size (default {DEFAULTS.model_size})")
    p.add_argument("--prediction", default=DEFAULTS.prediction_type, choices=("epsilon", "sample", "v_prediction"),
                   help="what the network predicts (default epsilon)")
    p.add_argument("--schedule", default=DEFAULTS.schedule, help="noise schedule preset (default linear)")
    p.add_argument("--T", type=int, default=DEFAULTS.T, help=f"diffusion steps (default {DEFAULTS.T})")
    p.add_argument("--lr", type=float, help=f"peak learning rate (default {DEFAULTS.lr}; with --resume: change it "
                   "from this step on)")
    p.add_argument("--warmup", type=int, default=DEFAULTS.warmup_steps, help="linear warm-up steps")
    p.add_argument("--ema", type=float, help=f"EMA decay (default {DEFAULTS.ema_decay}; with --resume: change it "
                   "from this step on)")
    p.add_argument("--label-dropout", type=float,
                   help="probability of training a sample unconditionally, for guidance (default "
                        f"{DEFAULTS.label_dropout}; with --resume: change it from this step on)")
    p.add_argument("--min-snr", type=float, help="min-SNR-γ loss weighting (e.g. 5; default off)")
    p.add_argument("--hflip", action="store_true", help="random horizontal flips (not for digits)")
    p.add_argument("--no-clip", action="store_true", help="save the model with clip_sample = false (samplers then "
                   "do not clip x̂0 to [-1, 1] unless asked)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="autocast precision (auto: bf16/fp16 on CUDA, fp32 on the CPU)")
    p.add_argument("--checkpoint-every", type=int, default=DEFAULTS.checkpoint_every)
    p.add_argument("--sample-every", type=int, default=DEFAULTS.sample_every)
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice; 1 is often faster "
                   "on a busy machine)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out (its recipe is kept; --steps "
                   "may extend it, --label-dropout, --lr and --ema may change it from here on)")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be ≥ 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    cfg = TrainConfig(data=args.data, out=args.out, steps=args.steps, batch_size=args.batch,
                      resolution=args.resolution, channels=args.channels, model_size=args.model_size,
                      prediction_type=args.prediction, schedule=args.schedule, T=args.T,
                      lr=DEFAULTS.lr if args.lr is None else args.lr,
                      warmup_steps=args.warmup,
                      ema_decay=DEFAULTS.ema_decay if args.ema is None else args.ema,
                      label_dropout=DEFAULTS.label_dropout if args.label_dropout is None else args.label_dropout,
                      min_snr_gamma=args.min_snr, hflip=args.hflip, clip_sample=not args.no_clip, seed=args.seed,
                      device=args.device, precision=args.precision, checkpoint_every=args.checkpoint_every,
                      sample_every=args.sample_every)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        change = [name for name, flag in (("label_dropout", args.label_dropout), ("lr", args.lr),
                                          ("ema_decay", args.ema))
                  if args.resume and flag is not None]
        trainer = train(cfg, resume=args.resume, change=tuple(change))
    for w in caught:
        print(f"ddpm train: warning: {w.message}", file=sys.stderr)
    n_params = sum(p.numel() for p in trainer.model.parameters())
    data = trainer.dataset
    print(f"{'resuming' if args.resume else 'training'} {trainer.cfg.model_size} UNet ({n_params / 1e6:.2f} M "
          f"parameters) on {trainer.cfg.data}: {len(data)} images {data.channels}×{data.resolution}×{data.resolution}"
          f"{f', {data.num_classes} classes' if data.num_classes else ''}; {trainer.device}, {trainer.precision}; "
          f"step {trainer.step} → {trainer.cfg.steps}", file=sys.stderr, flush=True)
    for c in trainer.recipe_changes:
        what = ", ".join(f"{k} {v[0]} → {v[1]}" for k, v in c.items() if k != "step")
        print(f"recipe changed at step {c['step']}: {what}", file=sys.stderr)
    bar = _RunProgress(trainer.cfg.steps, "train", unit="it")
    bar.first = bar.done = trainer.step
    final = None
    previous = signal.signal(signal.SIGTERM, _terminate)  # `kill PID` saves a checkpoint, like Ctrl+C
    try:
        for ev in trainer:
            if ev.kind == "step":
                bar.update(ev.step, loss=ev.loss_avg, lr=ev.lr)
            elif ev.kind == "done":
                final = ev.path
    except KeyboardInterrupt:
        trainer.close()
        path = trainer.save()
        bar.close()
        print(f"ddpm train: interrupted at step {trainer.step}; checkpoint in {path} (continue with --resume)",
              file=sys.stderr)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    bar.close()
    if final is None:  # nothing left to do (a resume of a finished run)
        final = trainer.save_model()
    print(f"done: step {trainer.step}, loss (EMA-smoothed) {trainer.loss_avg:.4f}; model in {final}, "
          f"resumable checkpoint in {trainer.out / 'checkpoint'}")
    return 0


def _terminate(signum, frame):
    raise KeyboardInterrupt


class _RunProgress(Progress):
    """The bar counts the run's steps; the rate (and so the ETA) only this session's, so a resume is not inflated."""

    first = 0

    def rate(self) -> float:
        import time
        elapsed = time.perf_counter() - self.start
        return (self.done - self.first) / elapsed if elapsed > 0 else 0.0
