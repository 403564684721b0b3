"""The Train panel: train a DDPM on the built-in digits or a folder of images and watch it learn.

A thin view over :mod:`core.train`, the loop ``ddpm train`` drives: the widgets become a
:class:`core.train.TrainConfig` (the CLI's defaults for everything the panel does not show), and a
:class:`~ddpm_gui.worker.WorkerRunner` runs :func:`training_updates` — a generator around :func:`core.train.train`
— on its own thread. Every optimizer step is a cancel point; what reaches the UI is a :class:`TrainUpdate` at most
10 times a second (the losses of every step since the last one, so the curve holds every step), plus one whenever
the loop produces an EMA sample grid.

Stop and closing the window: the run stops after the step in flight (the worker only stops at a ``yield``, and
every yield comes after a whole step), and the generator's ``close()`` (run by the worker, on the worker thread)
writes a resumable checkpoint (:meth:`core.train.Trainer.save`, atomic) before the run reports that it stopped.
Closing the window waits for that save. Resume continues the run in the output folder exactly where the checkpoint
left it (model, EMA, optimizer, step, RNG), bit for bit as if it had not stopped; Steps may be raised to extend it.

Before anything starts, the output folder is checked (:func:`core.train.check_outputs`): a place that cannot be
written is one line in the status, and nothing runs. Warnings raised while training (a library's, or the data
loader's skipped files) reach the panel as one line each through the worker runner's ``warned`` signal (the
worker's thread-aware relay; ``warnings.catch_warnings`` — :func:`core.messages.relay_warnings` — swaps
process-wide state and is not safe on a worker thread while the UI thread enters and leaves it too, as pyqtgraph
does when it draws) and are shown after the status, never as Python's multi-line text on the console.

"Use this model" hands the newest model files of the run (``OUT/model`` at the end, else ``OUT/checkpoint``, which
holds the EMA weights too) to the Generate panel.

``TrainPanel.install(window, settings)`` adds it to a :class:`~ddpm_gui.main_window.MainWindow` as the "Train" tab.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pyqtgraph as pg
import torch
from PySide6.QtCore import QEvent, QObject, QSettings, QSignalBlocker, QStandardPaths, Qt, Signal
from PySide6.QtWidgets import (QComboBox, QFileDialog, QGridLayout, QHBoxLayout, QLabel, QLineEdit, QProgressBar,
                               QPushButton, QSizePolicy, QSpinBox, QSplitter, QToolButton, QVBoxLayout, QWidget)

from core.atomic import resolve_dir
from core.device import DEVICES, available_devices
from core.train import MODEL_SIZES, STATE_JSON, TrainConfig, check_outputs, train
from ddpm_gui import settings as settings_mod
from ddpm_gui.image_views import ImagePane, style_plot
from ddpm_gui.run_recording import format_eta
from ddpm_gui.worker import WorkerRunner, one_line

DEFAULTS = TrainConfig()             # the CLI's defaults (core.cli.cmd_train uses the same object's values)
BUILTIN, FOLDER, ADD_FOLDER = "builtin", "folder", "add-folder"
MNIST = "builtin:mnist"
RECENT_KEY = "train/recentFolders"
MAX_RECENT = 8
EMIT_INTERVAL_S = 0.1                # at most 10 loss updates a second reach the UI
CLOSE_WAIT_S = 300.0                 # closing waits this long for the step in flight and the checkpoint
SMOOTH_HALF = 25                     # the plot's smoothed loss: the mean over steps s−25 … s+25
RAW_PEN = pg.mkPen((120, 160, 220), width=1)
SMOOTH_PEN = pg.mkPen((214, 39, 40), width=2)
SIZE_TIPS = {name: (f"{name}: base {s['base_channels']} channels, multipliers {s['channel_mults']}, "
                    f"{'self-attention at the lowest resolution' if s['attention'] else 'no attention in the res-blocks'}")
             for name, s in MODEL_SIZES.items()}


# ----- the worker side ---------------------------------------------------------------------------------------------
@dataclass
class TrainUpdate:
    """What the training worker shows: the steps done since the previous update and the run's state.

    ``kind``: ``"started"`` (``info``; ``history_*`` hold a resumed run's loss history, [step, mean of
    ``loss_log_every`` steps]), ``"progress"``, or ``"done"`` (``model_path``: the final model folder)."""

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
    skipped: int = 0
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


class _StepBuffer:
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
    """The line ``ddpm train`` prints when it starts: model size and parameters, data, device, steps."""
    n_params = sum(p.numel() for p in trainer.model.parameters())
    data, cfg = trainer.dataset, trainer.cfg
    classes = f", {data.num_classes} classes" if data.num_classes else ""
    return (f"{cfg.model_size} UNet ({n_params / 1e6:.2f} M parameters) on {cfg.data}: {len(data)} images "
            f"{data.channels}×{data.resolution}×{data.resolution}{classes}; {trainer.device}, {trainer.precision}")


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
                      skipped=int(trainer.dataset.skipped), num_classes=int(trainer.dataset.num_classes),
                      history_steps=hist[:, 0].astype(np.int64), history_losses=hist[:, 1])
    buf = _StepBuffer()
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


def _progress(ev, buf: _StepBuffer, grid, grid_step: int, ckpt_step) -> TrainUpdate:
    steps, losses, avgs = buf.take()
    return TrainUpdate("progress", ev.step, ev.total, steps, losses, avgs, ev.it_per_s, ev.elapsed_s, ev.lr,
                       grid, grid_step, ckpt_step)


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


class _LogAxis(pg.AxisItem):
    """A log axis that labels only 1, 2 and 5 × 10ⁿ (pyqtgraph labels every minor tick, and they overlap)."""

    def logTickStrings(self, values, scale, spacing):  # noqa: N802 - pyqtgraph override
        out = []
        for v in values:
            x = 10 ** float(v) * scale
            mantissa = x / 10 ** math.floor(math.log10(x) + 1e-9) if x > 0 else 0
            out.append(f"{x:g}" if any(abs(mantissa - m) < 1e-6 for m in (1, 2, 5)) else "")
        return out


# ----- reading an output folder ------------------------------------------------------------------------------------
def run_state(out: Path) -> dict | None:
    """What ``out/checkpoint/train_state.json`` says (step, config), or None when there is no readable run."""
    folder = resolve_dir(Path(out) / "checkpoint")  # after a kill mid-swap: the complete one beside it
    if folder is None:
        return None
    path = folder / STATE_JSON
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        return state if isinstance(state, dict) and "step" in state else None
    except (OSError, ValueError):
        return None


def newest_model_folder(out: Path) -> Path | None:
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


def runs_root() -> Path:
    docs = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.DocumentsLocation) or str(Path.home())
    return Path(docs) / "DDPM Studio runs"


# ----- the panel ---------------------------------------------------------------------------------------------------
class TrainPanel(QWidget):
    """The Train tab. Build it with its main window (for the worker runner, the error box and the Generate panel);
    ``settings`` remembers the dataset, the folders chosen from disk and the last run's options."""

    runStarted = Signal()
    updateShown = Signal(int)        # a TrainUpdate up to this step was handed to the curve and labels
    samplesShown = Signal(int)       # an EMA sample grid of this step is on screen
    runStopped = Signal(int)         # stopped by the user (or the window closing): the checkpoint's step
    runFinished = Signal(str)        # all steps done: the final model folder
    runFailed = Signal(str)          # the one-line reason
    runEnded = Signal()              # after any of the three

    @classmethod
    def install(cls, window, settings: QSettings | None = None) -> "TrainPanel":
        panel = cls(window, settings=settings)
        window.add_panel("Train", panel)
        window.installEventFilter(panel)  # a close while training first saves a checkpoint (see eventFilter)
        return panel

    def __init__(self, window, settings: QSettings | None = None, parent=None):
        super().__init__(parent)
        self.setObjectName("trainPanel")
        self.window_ = window
        self._settings = settings
        self.runner: WorkerRunner = window.create_runner("train")
        warned = getattr(self.runner, "warned", None)  # the worker's one-line warnings of the current run
        if warned is not None:
            warned.connect(self._on_warned)
        self._running = False
        self._stopping = False
        self._started = False         # the run has built its model (so a stop saves a checkpoint)
        self._session: TrainSession | None = None
        self._out_auto = True         # the output folder was proposed by the panel (not typed or browsed)
        self._prev_data_index = 0
        self._curve_out: str | None = None
        self._steps: list[int] = []
        self._raw: list[float] = []
        self._smooth: list[float] = []   # core's loss_avg (what `ddpm train` prints)
        self._weights: list[int] = []    # steps each curve point stands for (a resumed run's history: 10)
        self._mean = np.zeros(0)         # the plot's smoothed curve (centered_mean of the raw losses)
        self._total = 0
        self._last_update: TrainUpdate | None = None
        self._num_classes = 0
        self._folder_resolution = 32  # the resolution for folders (MNIST is 28×28)
        self.status_text = ""
        self.warning_text = ""
        self._skipped = 0             # image files the current run's data loader could not read
        self._build_ui()
        self._fill_datasets()
        self._restore()
        self._on_data_changed(self.dataCombo.currentIndex(), propose=self._out_auto)
        self._set_running(False)

    # ----- public API ------------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._running

    def data_spec(self) -> str:
        kind, value = self.dataCombo.currentData() or (BUILTIN, MNIST)
        return value if kind in (BUILTIN, FOLDER) else MNIST

    def select_data(self, spec: str) -> None:
        """``builtin:mnist`` or a folder path (added to the remembered folders if new)."""
        spec = str(spec)
        kind = BUILTIN if spec.startswith("builtin:") else FOLDER
        i = self._find_data(kind, spec)
        if i < 0:
            i = self._add_recent(spec)
        self.dataCombo.setCurrentIndex(i)

    def set_out(self, path) -> None:
        """Use ``path`` as the output folder (as if typed)."""
        self.outEdit.setText(str(path))
        self._out_auto = False
        self._on_out_changed()

    def out_path(self) -> Path:
        return Path(self.outEdit.text().strip()).expanduser()

    def config(self) -> TrainConfig:
        """The :class:`TrainConfig` the widgets describe (everything else: ``ddpm train``'s defaults)."""
        out = self.outEdit.text().strip()
        if not out:
            raise ValueError("choose an output folder for the run")
        is_folder = self.dataCombo.currentData()[0] == FOLDER
        return replace(DEFAULTS, data=self.data_spec(), out=str(Path(out).expanduser()),
                       steps=self.stepsSpin.value(), batch_size=self.batchSpin.value(),
                       resolution=self.resolutionSpin.value() if is_folder else None,
                       model_size=self.sizeCombo.currentData(), device=self.deviceCombo.currentData(),
                       sample_every=self.sampleEverySpin.value())

    def start(self) -> bool:
        """Start a new run in the output folder; False (with a one-line reason) if it can't."""
        if self._running:
            return False
        try:
            cfg = self.config()
        except ValueError as e:
            self._fail(one_line(e))
            return False
        state = run_state(Path(cfg.out))
        if state is not None:
            self._fail(f"{cfg.out} already holds a run (step {state['step']}): Resume continues it, or choose "
                       "another output folder to start over")
            return False
        if not self._outputs_writable(cfg):
            return False
        self._remember()
        self._clear_curve(cfg.out)
        self._clear_samples(cfg.sample_every)
        return self._launch(cfg, resume=False)

    def resume(self) -> bool:
        """Continue the run in the output folder from its checkpoint, up to Steps."""
        if self._running:
            return False
        try:
            cfg = self.config()
        except ValueError as e:
            self._fail(one_line(e))
            return False
        state = run_state(Path(cfg.out))
        if state is None:
            self._fail(f"{cfg.out} holds no checkpoint to resume")
            return False
        if int(state["step"]) >= cfg.steps:
            self._fail(f"the run is at step {state['step']} of {cfg.steps}: raise Steps to continue it")
            return False
        if not self._outputs_writable(cfg):
            return False
        self._remember()
        if not (self._curve_out == cfg.out and self._steps and self._steps[-1] == int(state["step"])):
            self._clear_curve(cfg.out)  # the run's own history arrives with the first update
        return self._launch(cfg, resume=True)

    def stop(self) -> bool:
        """Stop after the step in flight; the worker then saves a resumable checkpoint. Answers at once."""
        if not self._running or self._stopping:
            return False
        self._stopping = True
        self.runner.cancel()
        self.stopButton.setEnabled(False)
        step = self._steps[-1] if self._steps else 0
        self._set_status(f"Stopping after step {step}… saving a resumable checkpoint")
        return True

    def use_model(self) -> bool:
        """Select the run's newest model folder in the Generate panel and show that panel."""
        folder = newest_model_folder(self.out_path())
        gp = getattr(self.window_, "generate_panel", None)
        if folder is None or gp is None:
            self._fail(f"{self.out_path()} holds no model yet: train (or stop a run) first")
            return False
        gp.cache.clear()  # the folder may hold newer weights than the Generate panel loaded before
        gp.select_model(str(folder))
        self.window_.show_panel(gp)
        self.window_.statusBar().showMessage(f"Generate uses {folder}", 8000)
        return True

    def curve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(steps, loss per step, smoothed loss) as handed to the loss plot."""
        return np.array(self._steps, np.int64), np.array(self._raw), self._mean.copy()

    def loss_averages(self) -> np.ndarray:
        """Core's exponential average of the loss (``TrainEvent.loss_avg``) at each step of the curve."""
        return np.array(self._smooth)

    def samples_image(self) -> np.ndarray | None:
        return self.sampleView.image

    def stop_for_close(self, timeout_s: float = CLOSE_WAIT_S) -> bool:
        """Closing: stop the run and wait (UI thread blocked, window closing) until the worker has saved the
        checkpoint. True when it did."""
        worker = self.runner.current
        if worker is None:
            return True
        if not self._started:  # still loading the data: nothing to save, and the window's shutdown waits for it
            worker.abort()
            return True
        self._set_status("Closing: saving a resumable checkpoint…")
        self.window_.statusBar().showMessage("Saving the training checkpoint before closing…")
        worker.abort()
        return worker.wait(int(timeout_s * 1000))

    def eventFilter(self, obj: QObject, ev: QEvent) -> bool:  # noqa: N802 - Qt override
        if obj is self.window_ and ev.type() == QEvent.Type.Close and self._running:
            self.stop_for_close()
        return False

    # ----- the run ---------------------------------------------------------------------------------------------
    def _outputs_writable(self, cfg: TrainConfig) -> bool:
        """Check every place the run writes before anything starts (not minutes later, at its first save)."""
        try:
            check_outputs(cfg.out)
        except (OSError, ValueError) as e:
            self._fail(one_line(e))
            return False
        return True

    def _on_warned(self, line: str) -> None:
        """A warning of the run: shown with the next update (at most 0.1 s away) and in the final status."""
        if self._session is not None and line not in self._session.warnings:
            self._session.warnings.append(line)
            self._show_warnings()

    def _show_warnings(self) -> None:
        """``warning_text``: the run's warnings, one line each; skipped image files are named even when the data
        loader's warning was not relayed (Python shows one warning from one place once per process)."""
        s = self._session
        lines = list(s.warnings) if s is not None else []
        if self._skipped and not any("could not be read" in line for line in lines):
            lines.insert(0, f"skipped {self._skipped} file{'s' * (self._skipped != 1)} that could not be read as "
                            "images")
        self.warning_text = " · ".join(lines)

    def _launch(self, cfg: TrainConfig, resume: bool) -> bool:
        self._session = TrainSession(cfg.out)
        self._started = False
        self._total = cfg.steps
        self._stopping = False
        self._set_running(True)
        self.warning_text = ""
        self._skipped = 0
        self.progressBar.setRange(0, cfg.steps)
        self._set_status(("Resuming" if resume else "Starting") + " (loading the data and building the model)…")
        try:
            self.runner.start(training_updates, cfg, resume, self._session, torch.get_num_threads(),
                              on_yield=self._on_update, on_cancelled=self._on_cancelled,
                              on_error=self._on_error, on_done=self._on_done)
        except RuntimeError:  # the window is closing
            self._set_running(False)
            return False
        self.runStarted.emit()
        return True

    def _on_update(self, u: TrainUpdate) -> None:
        if u.kind == "started":
            self._started = True
            self._skipped = u.skipped
            self._show_warnings()
            self.runInfo.setText(f"Training {u.info}; step {u.step} → {u.total}")
            self._num_classes = u.num_classes
            if not self._steps and len(u.history_steps):
                self._load_history(u.history_steps, u.history_losses)
            self.progressBar.setValue(u.step)
            self._set_status(self._with_warning(f"step {u.step}/{u.total} · waiting for the first step…"))
            return
        self._show_warnings()
        self._append(u.steps, u.losses, u.loss_avgs)
        if u.grid is not None:
            self._show_samples(u.grid, u.grid_step)
        self.progressBar.setValue(u.step)
        self._last_update = u
        if u.kind == "done":
            self._set_status(self._with_warning(
                f"Done: {u.step} steps, loss {self._loss_text()}. “Use this model” opens {Path(u.model_path).name}/ "
                "in Generate"))
            self.runFinished.emit(u.model_path or "")
        elif not self._stopping:
            eta = (u.total - u.step) / u.it_per_s if u.it_per_s > 0 else float("inf")
            self._set_status(self._with_warning(
                f"step {u.step}/{u.total} · loss {self._loss_text()} · {u.it_per_s:.3g} it/s · "
                f"ETA {format_eta(eta)} · lr {u.lr:.2g}"))
        self.updateShown.emit(u.step)

    def _on_cancelled(self, _n: int) -> None:
        s = self._session
        self._show_warnings()
        if s is not None and s.tail is not None:
            self._append(*s.tail)
        step = s.saved_step if s is not None and s.saved_step is not None else 0
        if s is not None and s.saved_path:
            self.progressBar.setValue(step)
            self._set_status(self._with_warning(f"Stopped at step {step}/{self._total}; resumable checkpoint in "
                                                f"{s.saved_path} — Resume continues it"))
        else:
            self._set_status("Stopped before the first step (nothing to save)")
        self.runStopped.emit(step)

    def _on_error(self, exc) -> None:
        self._fail(one_line(exc))

    def _on_done(self) -> None:
        self._session = None
        self._stopping = False
        self._set_running(False)
        self.runEnded.emit()

    def _fail(self, message: str) -> None:
        self._set_status(message, error=True)
        self.window_.show_error(message, title="Train")
        self.runFailed.emit(message)

    # ----- curve and samples -----------------------------------------------------------------------------------
    def _clear_curve(self, out: str) -> None:
        self._curve_out = out
        self._steps, self._raw, self._smooth, self._weights = [], [], [], []
        self._redraw_curve()

    def _load_history(self, steps: np.ndarray, losses: np.ndarray) -> None:
        """A resumed run's history: means over ``loss_log_every`` steps (core keeps no per-step losses)."""
        steps = [int(s) for s in steps]
        self._steps, self._raw = steps, [float(v) for v in losses]
        self._weights = [b - a for a, b in zip([0] + steps[:-1], steps)]
        self._smooth = [float("nan")] * len(steps)
        self._redraw_curve()

    def _append(self, steps, losses, avgs) -> None:
        if len(steps) == 0:
            return
        self._steps.extend(int(s) for s in steps)
        self._raw.extend(float(v) for v in losses)
        self._smooth.extend(float(v) for v in avgs)
        self._weights.extend([1] * len(steps))
        self._redraw_curve()

    def _redraw_curve(self) -> None:
        if not self._steps:  # an empty plot: the axes of a run to come instead of pyqtgraph's 0…1
            self.lossPlot.setXRange(0, max(1, self._total or self.stepsSpin.value()), padding=0.02)
            self.lossPlot.setYRange(-2, 0.3, padding=0)  # log10 of 0.01 … 2
            self.lossPlot.enableAutoRange()
        x = np.array(self._steps, np.float64)
        raw = np.array(self._raw, np.float64)
        self._mean = centered_mean(x, raw, np.array(self._weights)) if len(x) else np.zeros(0)
        self.rawCurve.setData(x, raw)
        self.smoothCurve.setData(x, self._mean)

    def _on_steps_changed(self, v: int) -> None:
        if self._running:
            return
        self.progressBar.setRange(0, v)
        self.progressBar.setValue(min(self._steps[-1], v) if self._steps else 0)
        if not self._steps:
            self._total = v
            self._redraw_curve()

    def _loss_text(self) -> str:
        if not self._raw:
            return "–"
        avg = self._smooth[-1]
        return f"{avg:.4f} (exponential average; this step {self._raw[-1]:.4f})" if avg == avg else \
            f"{self._raw[-1]:.4f}"

    def _show_samples(self, grid: np.ndarray, step: int) -> None:
        num_classes = self._num_classes
        self.sampleView.set_image(np.ascontiguousarray(grid))
        by = f"; classes 0…{num_classes - 1} by column" if 0 < num_classes <= 10 else ""
        self.sampleView.title.setText(f"<b>EMA samples</b> at step {step} (DDIM, {DEFAULTS.sample_steps} steps"
                                      f"{by})")
        self.samplesShown.emit(step)

    def _clear_samples(self, every: int) -> None:
        self.sampleView.item.clear()
        when = f"every {every} steps and at the end" if every else "at the end"
        self.sampleView.title.setText(f"<b>EMA samples</b> appear {when}")

    # ----- datasets and the output folder ----------------------------------------------------------------------
    def _fill_datasets(self) -> None:
        combo = self.dataCombo
        with QSignalBlocker(combo):
            combo.clear()
            combo.addItem("Built-in MNIST (4,500 digits, 28×28)", (BUILTIN, MNIST))
            combo.setItemData(0, "builtin:mnist: 500 digits per class from MNIST (CC BY-SA 3.0, LeCun & Cortes); "
                              "4,500 training images with labels 0–9 (the model becomes class-conditional); the fixed 10% held "
                              "out for evaluation is never trained on", Qt.ItemDataRole.ToolTipRole)
            for folder in self._recent():
                self._insert_recent_item(folder)
            combo.insertSeparator(combo.count())
            combo.addItem("Choose a folder of images…", (ADD_FOLDER, None))
            combo.setItemData(combo.count() - 1, "Any images the loader reads (searched recursively), centre-cropped "
                              "and resized to the resolution; sub-folders = classes; remembered",
                              Qt.ItemDataRole.ToolTipRole)
            combo.setCurrentIndex(0)

    def _find_data(self, kind: str, value) -> int:
        for i in range(self.dataCombo.count()):
            d = self.dataCombo.itemData(i)
            if d and d[0] == kind and d[1] == value:
                return i
        return -1

    def _insert_recent_item(self, folder: str) -> int:
        combo = self.dataCombo
        at = 1
        while at < combo.count() and (combo.itemData(at) or (None,))[0] == FOLDER:
            at += 1
        combo.insertItem(at, f"Folder — {Path(folder).name or folder}", (FOLDER, folder))
        combo.setItemData(at, folder, Qt.ItemDataRole.ToolTipRole)
        return at

    def _recent(self) -> list[str]:
        if self._settings is None:
            return []
        text = self._settings.value(RECENT_KEY)
        try:
            items = json.loads(text) if isinstance(text, str) and text else []
            return [v for v in items if isinstance(v, str) and v][:MAX_RECENT]
        except (ValueError, TypeError):
            return []

    def _add_recent(self, folder: str) -> int:
        with QSignalBlocker(self.dataCombo):
            i = self._insert_recent_item(folder)
        if self._settings is not None:
            items = [folder] + [v for v in self._recent() if v != folder]
            self._settings.setValue(RECENT_KEY, json.dumps(items[:MAX_RECENT]))
            self._settings.sync()
        return i

    def _on_data_changed(self, i: int, propose: bool = True) -> None:
        kind, _ = self.dataCombo.itemData(i) or (BUILTIN, MNIST)
        if kind == ADD_FOLDER:
            folder = QFileDialog.getExistingDirectory(self, "A folder of images to train on", "")
            with QSignalBlocker(self.dataCombo):
                self.dataCombo.setCurrentIndex(self._prev_data_index)
            if folder:
                self.select_data(folder)
            return
        self._prev_data_index = i
        is_folder = kind == FOLDER
        self.resolutionSpin.setEnabled(is_folder and not self._running)
        with QSignalBlocker(self.resolutionSpin):
            self.resolutionSpin.setValue(self._folder_resolution if is_folder else 28)
        if self._settings is not None and propose:
            self._settings.setValue("train/data", self.data_spec())  # the dataset is remembered when chosen
        if propose:
            self._propose_out()

    def _on_resolution_changed(self, v: int) -> None:
        if (self.dataCombo.currentData() or (None,))[0] == FOLDER:
            self._folder_resolution = v

    def _propose_out(self) -> None:
        """A fresh output folder named after the data and the model size (only while the user hasn't chosen one)."""
        if not self._out_auto:
            return
        spec = self.data_spec()
        name = "mnist" if spec == MNIST else (Path(spec).name or "images")
        base = runs_root() / f"{name}-{self.sizeCombo.currentData()}"
        path, k = base, 2
        while path.exists():
            path, k = base.with_name(f"{base.name}-{k}"), k + 1
        with QSignalBlocker(self.outEdit):
            self.outEdit.setText(str(path))
        self._on_out_changed()

    def _on_out_typed(self, _text: str) -> None:
        self._out_auto = False
        self._on_out_changed()

    def _on_out_changed(self) -> None:
        """Say what the output folder holds; Resume and "Use this model" follow."""
        if self._running:
            return
        out = self.out_path() if self.outEdit.text().strip() else None
        state = run_state(out) if out else None
        self.resumeButton.setEnabled(state is not None)
        self.useModelButton.setEnabled(out is not None and newest_model_folder(out) is not None)
        if state is None:
            self.runInfo.setText("A new run: it writes checkpoint/ (resumable), samples/ and, at the end, model/")
            return
        cfg = state.get("config", {}) if isinstance(state.get("config"), dict) else {}
        self._show_recipe(cfg)
        step, total = int(state["step"]), cfg.get("steps", "?")
        what = f"Holds a {cfg.get('model_size', '?')} run on {cfg.get('data', '?')}"
        if isinstance(total, int) and step >= total:
            self.runInfo.setText(f"{what}, finished at step {step}: raise Steps and Resume to train it further, or "
                                 "choose another output folder for a new run")
        else:
            self.runInfo.setText(f"{what} at step {step} of {total}: Resume continues it")

    def _show_recipe(self, cfg: dict) -> None:
        """A run keeps its recipe when resumed: show its data, size and batch instead of the widgets' last values
        (silently: this proposes no new output folder)."""
        size, batch, data = cfg.get("model_size"), cfg.get("batch_size"), cfg.get("data")
        if isinstance(size, str) and self.sizeCombo.findData(size) >= 0:
            with QSignalBlocker(self.sizeCombo):
                self.sizeCombo.setCurrentIndex(self.sizeCombo.findData(size))
        if isinstance(batch, int) and self.batchSpin.minimum() <= batch <= self.batchSpin.maximum():
            self.batchSpin.setValue(batch)
        if isinstance(data, str) and data:
            kind = BUILTIN if data.startswith("builtin:") else FOLDER
            i = self._find_data(kind, data)
            if i < 0 and kind == FOLDER:
                i = self._add_recent(data)
            if i >= 0:
                if kind == FOLDER and isinstance(cfg.get("resolution"), int):
                    self._folder_resolution = cfg["resolution"]
                with QSignalBlocker(self.dataCombo):
                    self.dataCombo.setCurrentIndex(i)
                self._on_data_changed(i, propose=False)

    def _browse_out(self) -> None:
        start = str(self.out_path().parent) if self.outEdit.text().strip() else str(runs_root())
        folder = QFileDialog.getExistingDirectory(self, "Output folder of the run", start)
        if folder:
            self.set_out(folder)

    # ----- settings --------------------------------------------------------------------------------------------
    def _restore(self) -> None:
        s = self._settings
        if s is None:
            return
        data = s.value("train/data")
        if isinstance(data, str) and data:
            if data == MNIST or self._find_data(FOLDER, data) >= 0:
                with QSignalBlocker(self.dataCombo):
                    self.dataCombo.setCurrentIndex(self._find_data(BUILTIN if data == MNIST else FOLDER, data))
        size = s.value("train/modelSize")
        if isinstance(size, str) and self.sizeCombo.findData(size) >= 0:
            self.sizeCombo.setCurrentIndex(self.sizeCombo.findData(size))
        for key, spin in (("train/steps", self.stepsSpin), ("train/batch", self.batchSpin),
                          ("train/sampleEvery", self.sampleEverySpin)):
            v = settings_mod.int_value(s, key)
            if v is not None and spin.minimum() <= v <= spin.maximum():
                spin.setValue(v)
        res = settings_mod.int_value(s, "train/resolution")
        if res is not None and 4 <= res <= 512:
            self._folder_resolution = res
        out = s.value("train/out")
        if isinstance(out, str) and out:
            with QSignalBlocker(self.outEdit):
                self.outEdit.setText(out)
            self._out_auto = run_state(Path(out)) is None  # keep the last run (to Resume it); else propose anew

    def _remember(self) -> None:
        s = self._settings
        if s is None:
            return
        s.setValue("train/data", self.data_spec())
        s.setValue("train/modelSize", self.sizeCombo.currentData())
        s.setValue("train/steps", self.stepsSpin.value())
        s.setValue("train/batch", self.batchSpin.value())
        s.setValue("train/sampleEvery", self.sampleEverySpin.value())
        if self.dataCombo.currentData()[0] == FOLDER:
            s.setValue("train/resolution", self._folder_resolution)
        s.setValue("train/out", self.outEdit.text().strip())
        s.sync()

    # ----- state -----------------------------------------------------------------------------------------------
    def _set_running(self, on: bool) -> None:
        self._running = on
        self.startButton.setEnabled(not on)
        self.stopButton.setEnabled(on)
        for w in (self.dataCombo, self.sizeCombo, self.stepsSpin, self.batchSpin, self.sampleEverySpin,
                  self.deviceCombo, self.outEdit, self.outBrowseButton):
            w.setEnabled(not on)
        self.resolutionSpin.setEnabled(not on and (self.dataCombo.currentData() or (None,))[0] == FOLDER)
        if on:
            self.resumeButton.setEnabled(False)
            self.useModelButton.setEnabled(newest_model_folder(self.out_path()) is not None)
        else:
            self._on_out_changed()

    def _with_warning(self, text: str) -> str:
        return f"{text} · {self.warning_text}" if self.warning_text else text

    def _set_status(self, text: str, error: bool = False) -> None:
        self.status_text = text
        self.statusLabel.setText(text)
        self.statusLabel.setStyleSheet("color: #b00020;" if error else "")

    # ----- UI --------------------------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        self.dataCombo = QComboBox()
        self.dataCombo.setObjectName("trainDatasetCombo")
        self.dataCombo.setToolTip("What to learn: the built-in MNIST digits or a folder of images (centre-cropped "
                                  "and resized; sub-folders = classes, which makes the model class-conditional)")
        self.dataCombo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.dataCombo.setMinimumContentsLength(20)
        self.dataCombo.currentIndexChanged.connect(self._on_data_changed)
        self.resolutionSpin = QSpinBox()
        self.resolutionSpin.setObjectName("trainResolutionSpin")
        self.resolutionSpin.setRange(4, 512)
        self.resolutionSpin.setValue(28)
        self.resolutionSpin.setSuffix(" px")
        self.resolutionSpin.valueChanged.connect(self._on_resolution_changed)
        self.resolutionSpin.setToolTip("Image size the model trains at (folders; MNIST is 28×28). Every image is "
                                       "centre-cropped to a square and resized to it")
        self.sizeCombo = QComboBox()
        self.sizeCombo.setObjectName("trainModelSizeCombo")
        for name in MODEL_SIZES:
            self.sizeCombo.addItem(name, name)
            self.sizeCombo.setItemData(self.sizeCombo.count() - 1, SIZE_TIPS[name], Qt.ItemDataRole.ToolTipRole)
        self.sizeCombo.setCurrentIndex(self.sizeCombo.findData(DEFAULTS.model_size))
        self.sizeCombo.setToolTip("UNet size: tiny and small train in minutes on a CPU (small is the built-in "
                                  "model's size); base and large need hours there, or a GPU")
        self.sizeCombo.currentIndexChanged.connect(lambda _i: self._propose_out())
        self.stepsSpin = QSpinBox()
        self.stepsSpin.setObjectName("trainStepsSpin")
        self.stepsSpin.setRange(1, 10_000_000)
        self.stepsSpin.setSingleStep(500)
        self.stepsSpin.setValue(DEFAULTS.steps)
        self.stepsSpin.setToolTip("Total optimizer steps of the run (Resume may raise it to extend a run)")
        self.batchSpin = QSpinBox()
        self.batchSpin.setObjectName("trainBatchSpin")
        self.batchSpin.setRange(1, 4096)
        self.batchSpin.setValue(DEFAULTS.batch_size)
        self.batchSpin.setToolTip("Images per optimizer step: each gets its own t ~ U{0…T−1} and ε ~ N(0, I)")
        self.sampleEverySpin = QSpinBox()
        self.sampleEverySpin.setObjectName("trainSampleEverySpin")
        self.sampleEverySpin.setRange(0, 1_000_000)
        self.sampleEverySpin.setSingleStep(100)
        self.sampleEverySpin.setValue(DEFAULTS.sample_every)
        self.sampleEverySpin.setSpecialValueText("at the end")
        self.sampleEverySpin.valueChanged.connect(
            lambda v: self.sampleView.image is None and not self._running and self._clear_samples(v))
        self.sampleEverySpin.setToolTip("Draw a grid of samples from the EMA weights every N steps (deterministic "
                                        f"DDIM, {DEFAULTS.sample_steps} steps, the same seed each time, so you see "
                                        "the same digits sharpen); 0 = only at the end")
        self.deviceCombo = QComboBox()
        self.deviceCombo.setObjectName("trainDeviceCombo")
        have = set(available_devices())
        for d in DEVICES:
            self.deviceCombo.addItem({"auto": f"auto ({available_devices()[0]})", "cpu": "CPU", "cuda": "CUDA",
                                      "mps": "MPS"}[d], d)
            if d != "auto" and d not in have:
                self.deviceCombo.model().item(self.deviceCombo.count() - 1).setEnabled(False)
        self.deviceCombo.setToolTip("Where training runs: auto = CUDA (bf16/fp16 autocast), then MPS, then CPU (fp32)")
        self.outEdit = QLineEdit()
        self.outEdit.setObjectName("trainOutEdit")
        self.outEdit.setToolTip("The run's folder: checkpoint/ (resumable), samples/step_N.png and, at the end, "
                                "model/ — the same layout as `ddpm train --out`")
        self.outEdit.textEdited.connect(self._on_out_typed)
        self.outBrowseButton = QToolButton()
        self.outBrowseButton.setObjectName("trainOutBrowseButton")
        self.outBrowseButton.setText("…")
        self.outBrowseButton.setToolTip("Choose the output folder (an existing run there can be resumed)")
        self.outBrowseButton.clicked.connect(self._browse_out)
        self.runInfo = QLabel()
        self.runInfo.setObjectName("trainRunInfo")
        self.runInfo.setWordWrap(True)
        self.runInfo.setStyleSheet("color: #555;")
        self.runInfo.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.startButton = QPushButton("Start")
        self.startButton.setObjectName("trainStartButton")
        self.startButton.setToolTip("Train a new model in the output folder on a worker thread: ε-prediction, "
                                    "L_simple = ‖ε − ε_θ(√ᾱ_t·x_0 + √(1−ᾱ_t)·ε, t)‖², AdamW, EMA weights")
        self.startButton.clicked.connect(self.start)
        self.stopButton = QPushButton("Stop")
        self.stopButton.setObjectName("trainStopButton")
        self.stopButton.setToolTip("Stop after the step in flight and save a resumable checkpoint")
        self.stopButton.clicked.connect(self.stop)
        self.resumeButton = QPushButton("Resume")
        self.resumeButton.setObjectName("trainResumeButton")
        self.resumeButton.setToolTip("Continue the run in the output folder exactly where its checkpoint left off "
                                     "(model, EMA, optimizer, step, random state), up to Steps")
        self.resumeButton.clicked.connect(self.resume)
        self.useModelButton = QPushButton("Use this model")
        self.useModelButton.setObjectName("trainUseModelButton")
        self.useModelButton.setToolTip("Open the run's newest EMA weights (model/, else the checkpoint) in the "
                                       "Generate panel")
        self.useModelButton.clicked.connect(self.use_model)
        self.progressBar = QProgressBar()
        self.progressBar.setObjectName("trainProgress")
        self.progressBar.setFormat("step %v / %m")
        self.progressBar.setToolTip("Optimizer steps done / total")
        self.statusLabel = QLabel()
        self.statusLabel.setObjectName("trainStatus")
        self.statusLabel.setWordWrap(True)
        self.statusLabel.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.statusLabel.setMinimumHeight(2 * self.statusLabel.fontMetrics().lineSpacing() + 4)
        self.statusLabel.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        self.statusLabel.setToolTip("The loss as `ddpm train` prints it (an exponential average over ~50 steps) "
                                    "and this step's, steps per second of this session, "
                                    "time left, learning rate (linear warm-up, then constant)")

        self.lossPlot = pg.PlotWidget(axisItems={"left": _LogAxis("left")})
        self.lossPlot.setObjectName("trainLossPlot")
        self.lossPlot.setToolTip("L_simple per step (thin; a resumed run's earlier steps as means of 10) and, thick, "
                                 f"its mean over the {2 * SMOOTH_HALF + 1} steps around each step (centred, so it "
                                 "does not lag; at the live end the mean of the last steps), on a log scale. "
                                 "Wheel: zoom, drag: pan, right-click: view options")
        self.lossPlot.setAcceptDrops(False)
        style_plot(self.lossPlot)
        self.lossPlot.setLogMode(False, True)
        self.lossPlot.setLabel("bottom", "step")
        self.lossPlot.setLabel("left", "loss (MSE)")
        self.lossPlot.addLegend(offset=(-8, 6), labelTextColor="#222", brush=pg.mkBrush(255, 255, 255, 220),
                                pen=pg.mkPen("#bbb"))
        self.rawCurve = self.lossPlot.plot([], [], pen=RAW_PEN, name="loss per step")
        self.smoothCurve = self.lossPlot.plot([], [], pen=SMOOTH_PEN, name=f"smoothed (mean of {2 * SMOOTH_HALF + 1} steps)")
        for c in (self.rawCurve, self.smoothCurve):
            c.setClipToView(True)
            c.setDownsampling(auto=True, method="peak")
        self.lossPlot.setMinimumHeight(150)
        self.sampleView = ImagePane("<b>EMA samples</b>", "trainSampleView",
                                    "A grid of samples from the EMA weights (what the saved model holds), drawn "
                                    "with the same seed each time. Wheel: zoom, drag: pan")

        form = QGridLayout()
        form.setHorizontalSpacing(8)
        form.addWidget(QLabel("Dataset"), 0, 0)
        form.addWidget(self.dataCombo, 0, 1, 1, 3)
        form.addWidget(QLabel("Resolution"), 0, 4)
        form.addWidget(self.resolutionSpin, 0, 5)
        form.addWidget(QLabel("Model size"), 1, 0)
        form.addWidget(self.sizeCombo, 1, 1)
        form.addWidget(QLabel("Steps"), 1, 2)
        form.addWidget(self.stepsSpin, 1, 3)
        form.addWidget(QLabel("Batch"), 1, 4)
        form.addWidget(self.batchSpin, 1, 5)
        form.addWidget(QLabel("Samples every"), 2, 0)
        form.addWidget(self.sampleEverySpin, 2, 1)
        form.addWidget(QLabel("Device"), 2, 2)
        form.addWidget(self.deviceCombo, 2, 3, 1, 3)
        form.addWidget(QLabel("Output"), 3, 0)
        out_row = QHBoxLayout()
        out_row.setSpacing(2)
        out_row.addWidget(self.outEdit, 1)
        out_row.addWidget(self.outBrowseButton)
        form.addLayout(out_row, 3, 1, 1, 5)
        form.addWidget(self.runInfo, 4, 1, 1, 5)
        form.setColumnStretch(1, 2)
        form.setColumnStretch(3, 1)
        form.setColumnStretch(5, 1)

        buttons = QHBoxLayout()
        buttons.addWidget(self.startButton, 2)
        buttons.addWidget(self.stopButton, 1)
        buttons.addWidget(self.resumeButton, 1)
        buttons.addWidget(self.useModelButton, 2)

        self.viewSplitter = QSplitter(Qt.Orientation.Vertical)
        self.viewSplitter.setObjectName("trainViewSplitter")
        self.viewSplitter.addWidget(self.lossPlot)
        self.viewSplitter.addWidget(self.sampleView)
        self.viewSplitter.setStretchFactor(0, 1)
        self.viewSplitter.setStretchFactor(1, 1)
        self.viewSplitter.setChildrenCollapsible(False)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progressBar)
        layout.addWidget(self.statusLabel)
        layout.addWidget(self.viewSplitter, 1)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)
        self._clear_samples(DEFAULTS.sample_every)
        self.stepsSpin.valueChanged.connect(self._on_steps_changed)
        self._on_steps_changed(self.stepsSpin.value())
        self._set_status("Choose the data and a model size, then Start. Stop saves a checkpoint; Resume continues.")
