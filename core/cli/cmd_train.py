"""``ddpm train --data builtin:mnist|DIR --out DIR [--steps N] … [--resume]``: train a DDPM with a progress bar.

Drives :func:`core.train.train`, the same loop as the GUI. Ctrl+C or SIGTERM stops the run after the step in flight
and saves a resumable checkpoint (so ``--resume`` continues exactly as if the run had not stopped), then exits 130;
a second one stops at once, leaving the last checkpoint on disk as it was. Every number is range-checked before
anything runs (one line, exit 2), the output folder is checked before the first step, and warnings from the
libraries during training are one line each (``ddpm train: warning: …``).

Under ``torchrun`` (``torchrun --nproc_per_node N [--nnodes M --rdzv-backend c10d --rdzv-endpoint HOST:PORT]
--no-python ddpm train …``) each process joins the group (:func:`core.distributed.init_from_env`: NCCL on CUDA,
gloo on CPUs) and trains its slice of every global batch; rank 0 alone prints, draws sample grids and saves. A signal
to any rank (torchrun forwards Ctrl+C and SIGTERM to all of them) stops every rank after the same step: the stop
flags are all-reduced each step, then rank 0 saves the checkpoint and every rank exits 130. Repeats of a signal in
the first :data:`REPEAT_GRACE_S` seconds are the launcher forwarding it, not a second Ctrl+C, and are ignored.
"""
from __future__ import annotations

import signal
import sys
import threading
import time

import torch

import core.distributed as D
from core.cli.options import BATCH, SEED, TIMESTEPS_T, float_in, int_in
from core.cli.progress import Progress
from core.jobs.training import describe_run
from core.messages import relay_warnings
from core.train import MODEL_SIZES, PRECISIONS, TrainConfig, train

DEFAULTS = TrainConfig()
EXIT_INTERRUPTED = 130
MAX_STEPS = 100_000_000
REPEAT_GRACE_S = 3.0


def register(sub) -> None:
    p = sub.add_parser("train", help="train a DDPM on the built-in digits or a folder of images",
                       description="Train a UNet on builtin:mnist or a folder of images (ε-prediction, L_simple, "
                       "AdamW, EMA). Writes OUT/checkpoint (resumable), OUT/samples/*.png and, at the end, "
                       "OUT/model (inference files for --model OUT/model).")
    p.add_argument("--data", required=True, help="builtin:mnist or a folder of images (sub-folders = classes)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--steps", type=int_in(1, MAX_STEPS), default=DEFAULTS.steps,
                   help=f"total optimizer steps, 1…{MAX_STEPS} (default {DEFAULTS.steps})")
    p.add_argument("--batch", type=BATCH, default=DEFAULTS.batch_size,
                   help=f"batch size, 1…4096 (default {DEFAULTS.batch_size})")
    p.add_argument("--resolution", type=int_in(4, 512),
                   help="image size, 4…512 (default: 28 for MNIST, 32 for a folder)")
    p.add_argument("--channels", type=int, choices=(1, 3), help="1 = grey, 3 = RGB (default: from the data)")
    p.add_argument("--model-size", default=DEFAULTS.model_size, choices=list(MODEL_SIZES),
                   help=f"UNet size (default {DEFAULTS.model_size})")
    p.add_argument("--prediction", default=DEFAULTS.prediction_type, choices=("epsilon", "sample", "v_prediction"),
                   help="what the network predicts (default epsilon)")
    p.add_argument("--schedule", default=DEFAULTS.schedule, help="noise schedule preset (default linear)")
    p.add_argument("--T", type=TIMESTEPS_T, default=DEFAULTS.T,
                   help=f"diffusion steps, 2…100000 (default {DEFAULTS.T})")
    p.add_argument("--lr", type=float_in(0.0, 1.0, lo_open=True),
                   help=f"peak learning rate in (0, 1] (default {DEFAULTS.lr}; with --resume: change it from this "
                   "step on)")
    p.add_argument("--warmup", type=int_in(0, MAX_STEPS), default=DEFAULTS.warmup_steps,
                   help=f"linear warm-up steps (default {DEFAULTS.warmup_steps})")
    p.add_argument("--ema", type=float_in(0.0, 1.0, hi_open=True),
                   help=f"EMA decay in [0, 1) (default {DEFAULTS.ema_decay}; with --resume: change it from this "
                   "step on)")
    p.add_argument("--label-dropout", type=float_in(0.0, 1.0, hi_open=True),
                   help="probability in [0, 1) of training a sample unconditionally, for guidance (default "
                        f"{DEFAULTS.label_dropout}; with --resume: change it from this step on)")
    p.add_argument("--teacher", metavar="SPEC",
                   help="distil this model (e.g. an autoguided folder from ddpm autoguide): the student starts from "
                        "its network and learns its prediction, so one network call does what the teacher's took; "
                        "--model-size, --prediction, --schedule and --T come from it")
    p.add_argument("--min-snr", type=float_in(0.0, 1000.0, lo_open=True),
                   help="min-SNR-γ loss weighting, γ in (0, 1000] (e.g. 5; default off)")
    p.add_argument("--hflip", action="store_true", help="random horizontal flips (not for digits)")
    p.add_argument("--no-clip", action="store_true", help="save the model with clip_sample = false (samplers then "
                   "do not clip x̂0 to [-1, 1] unless asked)")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="autocast precision (auto: bf16/fp16 on CUDA, fp32 on the CPU)")
    p.add_argument("--checkpoint-every", type=int_in(0, MAX_STEPS), default=DEFAULTS.checkpoint_every,
                   help=f"save a resumable checkpoint every N steps, 0 = only at the end and on Ctrl+C (default "
                   f"{DEFAULTS.checkpoint_every})")
    p.add_argument("--sample-every", type=int_in(0, MAX_STEPS), default=DEFAULTS.sample_every,
                   help=f"save an EMA sample grid every N steps, 0 = only at the end (default {DEFAULTS.sample_every})")
    p.add_argument("--threads", type=int_in(1, 1024), help="CPU threads for torch, 1…1024 (default: torch's "
                   "choice; 1 is often faster on a busy machine)")
    p.add_argument("--accumulate", type=int_in(1, 4096),
                   help="micro-batches per optimizer step (gradient accumulation): the global batch is processes × "
                   "--batch × this (default 1; with --resume: change it from this step on)")
    p.add_argument("--compile", action="store_true", help="torch.compile the network (faster steps on a GPU after a "
                   "minute of compiling)")
    p.add_argument("--workers", type=int_in(0, 64), help="DataLoader worker processes per process decoding a folder "
                   "(default: one per spare core, at most 8; 0 = decode in the training process)")
    p.add_argument("--dist-timeout", type=float_in(1.0, 86400.0), default=D.DEFAULT_TIMEOUT_S,
                   help="under torchrun: seconds a process waits for the others in a collective before it gives up "
                   f"(a dead rank never leaves the rest hung longer; default {D.DEFAULT_TIMEOUT_S:g})")
    p.add_argument("--pack-to", metavar="DIR", help="decode the --data folder once at --resolution into uint8 "
                   "shards in DIR and exit; train on them later with --data DIR (no decoding per epoch)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out (its recipe is kept; --steps "
                   "may extend it, --label-dropout, --lr and --ema may change it from here on)")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.pack_to:
        return _pack(args)
    D.init_from_env(args.device, args.dist_timeout)
    code = _run(args)
    D.shutdown()
    return code


def _pack(args) -> int:
    from core.data import DEFAULT_FOLDER_RESOLUTION
    from core.data_stream import open_folder, pack_folder
    if str(args.data).startswith("builtin:"):
        raise ValueError("--pack-to packs a folder of images; builtin:mnist is already in memory")
    res = int(args.resolution or DEFAULT_FOLDER_RESOLUTION)
    with relay_warnings(lambda line: print(f"ddpm train: warning: {line}", file=sys.stderr, flush=True)):
        out = pack_folder(args.data, args.pack_to, res, args.channels, args.workers)
    data = open_folder(out, res, args.channels)
    print(f"packed {len(data)} images {data.channels}×{res}×{res} into {out} (train with --data {out} "
          f"--resolution {res})")
    return 0


def _run(args) -> int:
    main_rank = D.is_main()
    cfg = TrainConfig(data=args.data, out=args.out, steps=args.steps, batch_size=args.batch,
                      resolution=args.resolution, channels=args.channels, model_size=args.model_size,
                      prediction_type=args.prediction, schedule=args.schedule, T=args.T,
                      lr=DEFAULTS.lr if args.lr is None else args.lr,
                      warmup_steps=args.warmup,
                      ema_decay=DEFAULTS.ema_decay if args.ema is None else args.ema,
                      label_dropout=DEFAULTS.label_dropout if args.label_dropout is None else args.label_dropout,
                      min_snr_gamma=args.min_snr, hflip=args.hflip, clip_sample=not args.no_clip, seed=args.seed,
                      device=args.device, precision=args.precision, checkpoint_every=args.checkpoint_every,
                      sample_every=args.sample_every, accumulate=args.accumulate or 1, compile=args.compile,
                      workers=args.workers, teacher=args.teacher)
    bar = None

    def warn(line: str) -> None:  # one line of ours, on a line of its own even while the bar is drawn
        if not main_rank:
            return
        print(f"{chr(10) if bar is not None and bar.tty else ''}ddpm train: warning: {line}", file=sys.stderr,
              flush=True)

    with relay_warnings(warn):
        change = [name for name, flag in (("label_dropout", args.label_dropout), ("lr", args.lr),
                                          ("ema_decay", args.ema), ("accumulate", args.accumulate))
                  if args.resume and flag is not None]
        trainer = train(cfg, resume=args.resume, change=tuple(change))
        distributed = trainer.world > 1
        with _StopAtStepBoundary(grace_s=REPEAT_GRACE_S if distributed else 0.0) as stop:
            # installed before the line below, which says the loop starts
            trainer.stop_check = lambda: stop.requested
            # one process: stop as soon as asked (after the step's events); several: when all ranks agreed
            stopping = (lambda: trainer.stopping) if distributed else (lambda: stop.requested)
            say = print if main_rank else (lambda *a, **k: None)
            say(f"{'resuming' if args.resume else 'training'} {describe_run(trainer)}; step {trainer.step} → "
                f"{trainer.cfg.steps}", file=sys.stderr, flush=True)
            say(f"{trainer.batch_text} (the learning rate is per optimizer step: scale --lr with the global batch "
                "if you change it)" if distributed or trainer.cfg.accumulate > 1 else trainer.batch_text,
                file=sys.stderr, flush=True)
            if trainer.resume_note:
                say(f"ddpm train: note: {trainer.resume_note}", file=sys.stderr, flush=True)
            for c in trainer.recipe_changes:
                what = ", ".join(f"{k} {v[0]} → {v[1]}" for k, v in c.items() if k != "step")
                say(f"recipe changed at step {c['step']}: {what}", file=sys.stderr)
            bar = _RunProgress(trainer.cfg.steps, "train", unit="it") if main_rank else None
            if bar is not None:
                bar.first = bar.done = trainer.step
            final = None
            for ev in trainer:
                if ev.kind == "step" and bar is not None:
                    bar.update(ev.step, loss=ev.loss_avg, lr=ev.lr)
                elif ev.kind == "done":
                    final = ev.path
                if stopping() and trainer.between_steps:
                    break
            if stopping() and trainer.step < trainer.cfg.steps:
                trainer.close()
                path = trainer.save()  # the state after a whole step: --resume continues bit for bit
                if bar is not None:
                    bar.close()
                say(f"ddpm train: interrupted at step {trainer.step}; checkpoint in {path} (continue with "
                    "--resume)", file=sys.stderr, flush=True)
                return EXIT_INTERRUPTED
        if bar is not None:
            bar.close()
        if final is None:  # nothing left to do (a resume of a finished run)
            final = trainer.save_model()
    if not main_rank:
        return 0
    print(f"done: step {trainer.step}, loss (EMA-smoothed) {trainer.loss_avg:.4f}; model in {final}, "
          f"resumable checkpoint in {trainer.out / 'checkpoint'}")
    return 0


class _StopAtStepBoundary:
    """SIGINT (Ctrl+C) and SIGTERM (``kill PID``) while training: the first only sets ``requested``, and the loop
    stops between two steps and saves (a checkpoint taken mid-step would hold an RNG state some draws into the
    step, and a resumed run would diverge from an uninterrupted one); a second raises ``KeyboardInterrupt`` at
    once, so a user who does not want to wait is never stuck (the checkpoint on disk then is the last complete
    one)."""

    SIGNALS = tuple(s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None)) if s is not None)

    def __init__(self, grace_s: float = 0.0):
        self.requested = False
        self._previous = {}
        self._grace_s, self._first = grace_s, 0.0

    def _handle(self, signum, frame):
        if self.requested:
            if time.monotonic() - self._first < self._grace_s:  # the launcher forwarding the same stop
                return
            raise KeyboardInterrupt
        self.requested = True
        self._first = time.monotonic()

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # signals reach only the main thread
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}


class _RunProgress(Progress):
    """The bar counts the run's steps; the rate (and so the ETA) only this session's, so a resume is not inflated."""

    first = 0

    def rate(self) -> float:
        import time
        elapsed = time.perf_counter() - self.start
        return (self.done - self.first) / elapsed if elapsed > 0 else 0.0
