"""The Train tab's job without Qt: the updates a training run shows, the loss curve they build, and the run folder.

:func:`training_updates` is the generator the window's worker drives around :func:`core.train.train` (the loop
``ddpm train`` drives): every optimizer step is a cancel point (a bare ``yield`` when there is nothing to show), and
what reaches the UI is a :class:`TrainUpdate` at most every :data:`EMIT_INTERVAL_S` seconds (the losses of every
step since the last one, so the curve holds every step), plus one whenever the loop draws an EMA sample grid.
Closing the generator mid-run (what the worker does on Stop, on the worker thread) stops after the step in flight
and writes a resumable checkpoint (:meth:`core.train.Trainer.save`, atomic) into the :class:`TrainSession` before
the run reports that it stopped; Resume then continues bit for bit.

:class:`LossCurve` is the plot's data (every step's loss, core's exponential average, and the centred mean
:func:`centered_mean` the thick curve shows); a resumed run's earlier steps come from the checkpoint's history.

The run folder (the layout of ``ddpm train --out``): :func:`run_state` reads ``checkpoint/train_state.json``,
:func:`newest_model_folder` picks ``model/`` or ``checkpoint/``, :func:`check_start` / :func:`check_resume` are
what must hold before Start / Resume (one-line ``ValueError`` / ``OSError``), :func:`folder_summary` says what a
folder holds and :func:`new_run_folder` names a fresh one.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from core.atomic import resolve_dir
from core.messages import format_eta
from core.train import MODEL_SIZES, STATE_JSON, TrainConfig, check_outputs, train

EMIT_INTERVAL_S = 0.1   # at most 10 loss updates a second reach the UI
SMOOTH_HALF = 25        # the plot's smoothed loss: the mean over steps s−25 … s+25
MNIST = "builtin:mnist"
DEFAULTS = TrainConfig()  # ``ddpm train``'s defaults

# What the Train tab's choices mean, with their formulas (its tooltips, by objectName, and its menus' entries).
SIZE_TIPS = {name: f"{name}: base {s['base_channels']} channels, multipliers {s['channel_mults']}, "
                   + ("self-attention at the lowest resolution" if s["attention"] else "no attention in the res-blocks")
             for name, s in MODEL_SIZES.items()}
MNIST_TIP = ("builtin:mnist: 500 digits per class from MNIST (CC BY-SA 3.0, LeCun & Cortes); 4,500 training images "
             "with labels 0–9 (the model becomes class-conditional); the fixed 10% held out for evaluation is never "
             "trained on")
ADD_FOLDER_TIP = ("Any images the loader reads (searched recursively), centre-cropped and resized to the resolution; "
                  "sub-folders = classes; remembered")
TIPS = {
    "trainDatasetCombo": "What to learn: the built-in MNIST digits or a folder of images (centre-cropped and resized; "
                         "sub-folders = classes, which makes the model class-conditional)",
    "trainResumeButton": "Continue the run in the output folder exactly where its checkpoint left off (model, EMA, "
                         "optimizer, step, random state), up to Steps",
    "trainBatchSpin": "Images per optimizer step: each gets its own t ~ U{0…T−1} and ε ~ N(0, I)",
    "trainSampleEverySpin": f"Draw a grid of samples from the EMA weights every N steps (deterministic DDIM, "
                            f"{DEFAULTS.sample_steps} steps, the same seed each time, so you see the same digits "
                            "sharpen); 0 = only at the end",
    "trainStartButton": "Train a new model in the output folder on a worker thread: ε-prediction, L_simple = ‖ε − "
                        "ε_θ(√ᾱ_t·x_0 + √(1−ᾱ_t)·ε, t)‖², AdamW, EMA weights",
    "trainStatus": "The loss as `ddpm train` prints it (an exponential average over ~50 steps) and this step's, "
                   "steps per second of this session, time left, learning rate (linear warm-up, then constant)",
    "trainLossPlot": f"L_simple per step (thin; a resumed run's earlier steps as means of 10) and, thick, its mean "
                     f"over the {2 * SMOOTH_HALF + 1} steps around each step (centred, so it does not lag; at the live "
                     "end the mean of the last steps), on a log scale. Wheel: zoom, drag: pan, right-click: view "
                     "options",
}


# ----- what a run shows ----------------------------------------------------------------------------------------
@dataclass
class TrainUpdate:
    """What the training worker shows: the steps done since the previous update and the run's state.

    ``kind``: ``"started"`` (``info``: :func:`describe_run`; ``notes``: what the data loader reported, one line
    each; ``history_*``: a resumed run's loss history, [step, mean of ``loss_log_every`` steps]), ``"progress"``,
    or ``"done"`` (``model_path``: the final model folder)."""

    kind: str
    step: int
    total: int
    steps: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    losses: np.ndarray = field(default_factory=lambda: np.zeros(0))
    loss_avgs: np.ndarray = field(default_factory=lambda: np.zeros(0))
    it_per_s: float = 0.0
    elapsed_s: float = 0.0
    lr: float = 0.0
    grid: np.ndarray | None = None
    grid_step: int = 0
    checkpoint_step: int | None = None
    model_path: str | None = None
    info: str = ""
    notes: tuple[str, ...] = ()
    num_classes: int = 0
    history_steps: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    history_losses: np.ndarray = field(default_factory=lambda: np.zeros(0))


class TrainSession:
    """Filled by the worker when a run is stopped, read by the UI after ``cancelled`` (the worker has finished
    writing it by then): the checkpoint it saved and the steps that had not reached the UI yet. ``warnings``: the
    run's one-line warnings (filled on the UI thread, from the runner's ``warned`` signal)."""

    def __init__(self, out: str):
        self.out = out
        self.saved_step: int | None = None
        self.saved_path: str | None = None
        self.tail: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.warnings: list[str] = []


class StepBuffer:
    """The steps done since the last update: (step, loss, loss_avg) of each, taken as three arrays."""

    def __init__(self):
        self.steps, self.losses, self.avgs = [], [], []

    def add(self, ev) -> None:
        self.steps.append(ev.step)
        self.losses.append(ev.loss)
        self.avgs.append(ev.loss_avg)

    def take(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        out = (np.array(self.steps, np.int64), np.array(self.losses, np.float64), np.array(self.avgs, np.float64))
        self.steps, self.losses, self.avgs = [], [], []
        return out


def describe_run(trainer) -> str:
    """The run as ``ddpm train`` announces it: model size and parameters, data, device, precision."""
    n_params = sum(p.numel() for p in trainer.model.parameters())
    data, cfg = trainer.dataset, trainer.cfg
    classes = f", {data.num_classes} classes" if data.num_classes else ""
    return (f"{cfg.model_size} UNet ({n_params / 1e6:.2f} M parameters) on {cfg.data}: {len(data)} images "
            f"{data.channels}×{data.resolution}×{data.resolution}{classes}; {trainer.device}, {trainer.precision}")


def torchrun_command(cfg: TrainConfig, nproc: str | None = None, nnodes: int = 1,
                     endpoint: str = "HOST:29500") -> str:
    """The ``torchrun`` command line that trains ``cfg`` on a cluster machine (what the Train panel shows, to
    copy): ``ddpm train`` with the panel's options, one process per GPU (``nproc`` "gpu"; or a count), on one
    machine (``--standalone``) or ``nnodes`` machines meeting at ``endpoint`` (run the same line on each). The
    panel's batch is each process's: the global batch is processes × batch."""
    import shlex
    if nproc is None:  # every GPU of the machine; CPU training: two processes (gloo), set it to the node's sockets
        nproc = "2" if cfg.device == "cpu" else "gpu"
    launcher = ["torchrun"]
    if nnodes > 1:
        launcher += ["--nnodes", str(nnodes), "--nproc_per_node", str(nproc), "--rdzv-backend", "c10d",
                     "--rdzv-endpoint", endpoint]
    else:
        launcher += ["--standalone", "--nproc_per_node", str(nproc)]
    args = ["--data", cfg.data, "--out", cfg.out, "--steps", str(cfg.steps), "--batch", str(cfg.batch_size)]
    if cfg.resolution is not None:
        args += ["--resolution", str(cfg.resolution)]
    if cfg.channels is not None:
        args += ["--channels", str(cfg.channels)]
    for flag, name in (("--model-size", "model_size"), ("--prediction", "prediction_type"),
                       ("--schedule", "schedule"), ("--T", "T"), ("--lr", "lr"), ("--warmup", "warmup_steps"),
                       ("--ema", "ema_decay"), ("--label-dropout", "label_dropout"), ("--seed", "seed"),
                       ("--precision", "precision"), ("--checkpoint-every", "checkpoint_every"),
                       ("--sample-every", "sample_every"), ("--accumulate", "accumulate")):
        value = getattr(cfg, name)
        if name == "model_size" or value != getattr(DEFAULTS, name):
            args += [flag, str(value)]
    if cfg.min_snr_gamma is not None:
        args += ["--min-snr", str(cfg.min_snr_gamma)]
    for flag, on in (("--hflip", cfg.hflip), ("--no-clip", not cfg.clip_sample), ("--compile", cfg.compile)):
        if on:
            args.append(flag)
    if cfg.device not in ("auto",) and not str(cfg.device).startswith("cuda"):
        args += ["--device", cfg.device]  # cuda ranks pick cuda:LOCAL_RANK themselves
    return shlex.join([*launcher, "--no-python", "ddpm", "train", *args])


def data_notes(dataset) -> tuple[str, ...]:
    """What a run's data says about itself, one line each: the files it skipped. (The loader also warns, but a
    warning may never reach the window: Python shows one warning from one place once per process.)"""
    n = int(getattr(dataset, "skipped", 0))
    return (f"skipped {n} file{'s' * (n != 1)} that could not be read as images",) if n else ()


def warning_text(notes, warnings) -> str:
    """The run's notes and warnings as one line, each said once: a note that a warning already says (the warning
    contains it, in more words) is left out."""
    lines = [n for n in notes if not any(n in w for w in warnings)] + list(warnings)
    return " · ".join(lines)


def training_updates(config: TrainConfig, resume: bool, session: TrainSession, threads: int | None = None,
                     emit_interval: float = EMIT_INTERVAL_S):
    """Run :func:`core.train.train` and yield :class:`TrainUpdate` s (a bare ``yield`` after each step that is
    not shown, so every step is a cancel point). Closing the generator mid-run saves a resumable checkpoint."""
    if threads:
        torch.set_num_threads(int(threads))  # this worker thread's count (the app's, so runs match the CLI's)
    trainer = train(config, resume=resume)
    cfg = trainer.cfg
    hist = np.array(trainer.loss_history, np.float64).reshape(-1, 2)
    yield TrainUpdate("started", trainer.step, cfg.steps, info=describe_run(trainer),
                      notes=data_notes(trainer.dataset), num_classes=int(trainer.dataset.num_classes),
                      history_steps=hist[:, 0].astype(np.int64), history_losses=hist[:, 1])
    buf = StepBuffer()
    last = None
    grid, grid_step, ckpt_step, model_path = None, 0, None, None
    finished = False
    last_emit = 0.0
    try:
        for ev in trainer:
            if ev.kind == "step":
                buf.add(ev)
                last = ev
            elif ev.kind == "sample":
                grid, grid_step = ev.grid, ev.step
            elif ev.kind == "checkpoint":
                ckpt_step = ev.step
                continue
            elif ev.kind == "done":
                model_path = ev.path
                continue
            now = time.perf_counter()
            if grid is not None or now - last_emit >= emit_interval:
                last_emit = now
                yield _progress(last, buf, grid, grid_step, ckpt_step)
                grid = None
            else:
                yield  # a cancel point with nothing to show
        finished = True
        if model_path is None:  # nothing was left to do (a resume of a finished run): as ``ddpm train`` does
            model_path = str(trainer.save_model())
        final = _progress(last, buf, grid, grid_step, ckpt_step) if last is not None else \
            TrainUpdate("progress", trainer.step, cfg.steps)
        yield replace(final, kind="done", step=trainer.step, model_path=model_path,
                      checkpoint_step=trainer.step)
    except GeneratorExit:
        trainer.close()
        session.tail = buf.take()
        if not finished:
            session.saved_path = str(trainer.save())
        else:
            session.saved_path = str(trainer.out / "checkpoint")
        session.saved_step = trainer.step
        raise


def _progress(ev, buf: StepBuffer, grid, grid_step: int, ckpt_step) -> TrainUpdate:
    steps, losses, avgs = buf.take()
    return TrainUpdate("progress", ev.step, ev.total, steps, losses, avgs, ev.it_per_s, ev.elapsed_s, ev.lr,
                       grid, grid_step, ckpt_step)


def update_text(u: TrainUpdate, loss: str) -> str:
    """The status line of an update (``loss``: :meth:`LossCurve.loss_text`)."""
    if u.kind == "started":
        return f"step {u.step}/{u.total} · waiting for the first step…"
    if u.kind == "done":
        return (f"Done: {u.step} steps, loss {loss}. “Use this model” opens {Path(u.model_path).name}/ "
                "in Generate")
    eta = (u.total - u.step) / u.it_per_s if u.it_per_s > 0 else float("inf")
    return f"step {u.step}/{u.total} · loss {loss} · {u.it_per_s:.3g} it/s · ETA {format_eta(eta)} · lr {u.lr:.2g}"


def samples_title(step: int | None, num_classes: int = 0, every: int = 0) -> str:
    """The EMA sample view's title (rich text): the grid's step, or (``step`` None) when grids will appear."""
    if step is None:
        return f"<b>EMA samples</b> appear {f'every {every} steps and at the end' if every else 'at the end'}"
    by = f"; classes 0…{num_classes - 1} by column" if 0 < num_classes <= 10 else ""
    return f"<b>EMA samples</b> at step {step} (DDIM, {DEFAULTS.sample_steps} steps{by})"


def stopped_text(session: TrainSession | None, total: int) -> str:
    """The status line once a stopped run has saved (or had nothing to save)."""
    if session is not None and session.saved_path:
        step = session.saved_step if session.saved_step is not None else 0
        return f"Stopped at step {step}/{total}; resumable checkpoint in {session.saved_path} — Resume continues it"
    return "Stopped before the first step (nothing to save)"


# ----- the loss curve ------------------------------------------------------------------------------------------
def centered_mean(steps: np.ndarray, values: np.ndarray, weights: np.ndarray, half: int = SMOOTH_HALF) -> np.ndarray:
    """The smoothed loss of the plot: at each step s, the weighted mean of the values at steps s−half … s+half
    (fewer at the ends; weights: how many steps a value stands for). Centred, so it does not trail a falling loss
    the way an exponential average does; at the live end it is the mean of the last ``half`` steps."""
    steps = np.asarray(steps, np.float64)
    w = np.asarray(weights, np.float64)
    cw = np.concatenate([[0.0], np.cumsum(w)])
    cv = np.concatenate([[0.0], np.cumsum(w * np.asarray(values, np.float64))])
    lo = np.searchsorted(steps, steps - half, "left")
    hi = np.searchsorted(steps, steps + half, "right")
    return (cv[hi] - cv[lo]) / (cw[hi] - cw[lo])


class LossCurve:
    """The loss plot's data for the run in ``out``: ``steps``, ``raw`` (each step's loss), ``avgs`` (core's
    exponential average, what ``ddpm train`` prints; NaN for history), ``weights`` (steps each point stands for)
    and ``mean`` (:func:`centered_mean` of ``raw``, recomputed on every change)."""

    def __init__(self):
        self.clear()

    def clear(self, out: str | None = None) -> None:
        self.out = out
        self.steps: list[int] = []
        self.raw: list[float] = []
        self.avgs: list[float] = []
        self.weights: list[int] = []
        self.mean = np.zeros(0)

    def load_history(self, steps, losses) -> None:
        """A resumed run's history: means over ``loss_log_every`` steps (core keeps no per-step losses)."""
        steps = [int(s) for s in steps]
        self.steps, self.raw = steps, [float(v) for v in losses]
        self.weights = [b - a for a, b in zip([0] + steps[:-1], steps)]
        self.avgs = [float("nan")] * len(steps)
        self._smooth()

    def append(self, steps, losses, avgs) -> bool:
        """Add steps (as a :class:`TrainUpdate` carries them); False when there were none."""
        if len(steps) == 0:
            return False
        self.steps.extend(int(s) for s in steps)
        self.raw.extend(float(v) for v in losses)
        self.avgs.extend(float(v) for v in avgs)
        self.weights.extend([1] * len(steps))
        self._smooth()
        return True

    def _smooth(self) -> None:
        x = np.array(self.steps, np.float64)
        self.mean = centered_mean(x, np.array(self.raw, np.float64), np.array(self.weights)) if len(x) else \
            np.zeros(0)

    @property
    def last_step(self) -> int | None:
        return self.steps[-1] if self.steps else None

    def continues(self, out: str, step: int) -> bool:
        """True when the curve is the run in ``out`` up to ``step`` (a Resume appends to it)."""
        return self.out == out and self.last_step == int(step)

    def loss_text(self) -> str:
        """The loss as the status shows it: core's average and this step's (only this step's for history)."""
        if not self.raw:
            return "–"
        avg = self.avgs[-1]
        return f"{avg:.4f} (exponential average; this step {self.raw[-1]:.4f})" if avg == avg else \
            f"{self.raw[-1]:.4f}"


# ----- the run folder ------------------------------------------------------------------------------------------
def run_state(out) -> dict | None:
    """What ``out/checkpoint/train_state.json`` says (step, config), or None when there is no readable run."""
    folder = resolve_dir(Path(out) / "checkpoint")  # after a kill mid-swap: the complete one beside it
    if folder is None:
        return None
    try:
        state = json.loads((folder / STATE_JSON).read_text(encoding="utf-8"))
        return state if isinstance(state, dict) and "step" in state else None
    except (OSError, ValueError):
        return None


def saved_recipe(state: dict | None) -> dict:
    """The options a run was started with (its ``config``), or {} when the state holds none."""
    cfg = (state or {}).get("config")
    return cfg if isinstance(cfg, dict) else {}


def newest_model_folder(out) -> Path | None:
    """``out/model`` or ``out/checkpoint``, whichever holds more trained steps (both hold EMA weights)."""
    best, best_steps = None, -1
    for name in ("model", "checkpoint"):
        folder = resolve_dir(Path(out) / name)
        if folder is None:
            continue
        cfg = folder / "config.json"
        try:
            steps = int(json.loads(cfg.read_text(encoding="utf-8")).get("trained_steps", 0))
        except (OSError, ValueError, TypeError, AttributeError):
            continue
        if steps > best_steps:
            best, best_steps = cfg.parent, steps
    return best


def check_start(cfg: TrainConfig) -> None:
    """Raise a one-line ``ValueError``/``OSError`` unless a new run can start in ``cfg.out``: no run there yet,
    and every place it writes can be written (checked before anything starts, not minutes later at a save)."""
    state = run_state(Path(cfg.out))
    if state is not None:
        raise ValueError(f"{cfg.out} already holds a run (step {state['step']}): Resume continues it, or choose "
                         "another output folder to start over")
    check_outputs(cfg.out)


def check_resume(cfg: TrainConfig) -> int:
    """The step the run in ``cfg.out`` continues from; a one-line ``ValueError``/``OSError`` when it cannot: no
    checkpoint, already at ``cfg.steps``, or a place it writes that cannot be written."""
    state = run_state(Path(cfg.out))
    if state is None:
        raise ValueError(f"{cfg.out} holds no checkpoint to resume")
    if int(state["step"]) >= cfg.steps:
        raise ValueError(f"the run is at step {state['step']} of {cfg.steps}: raise Steps to continue it")
    check_outputs(cfg.out)
    return int(state["step"])


def folder_summary(state: dict | None) -> str:
    """What an output folder holds, for the line under it (``state``: :func:`run_state`)."""
    if state is None:
        return "A new run: it writes checkpoint/ (resumable), samples/ and, at the end, model/"
    cfg = saved_recipe(state)
    step, total = int(state["step"]), cfg.get("steps", "?")
    what = f"Holds a {cfg.get('model_size', '?')} run on {cfg.get('data', '?')}"
    if isinstance(total, int) and step >= total:
        return (f"{what}, finished at step {step}: raise Steps and Resume to train it further, or choose another "
                "output folder for a new run")
    return f"{what} at step {step} of {total}: Resume continues it"


def new_run_folder(root, data: str, model_size: str) -> Path:
    """A folder in ``root`` that does not exist yet, named after the data and the model size (``mnist-small``,
    ``photos-tiny-2``, …)."""
    name = "mnist" if data == MNIST else (Path(data).name or "images")
    base = Path(root) / f"{name}-{model_size}"
    path, k = base, 2
    while path.exists():
        path, k = base.with_name(f"{base.name}-{k}"), k + 1
    return path
