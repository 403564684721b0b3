"""The Train panel: train a DDPM on the built-in digits or a folder of images and watch it learn.

Build widgets, connect them to :mod:`core.jobs.training`, show its events: the widgets become a
:class:`core.train.TrainConfig` (``ddpm train``'s defaults for the rest); the window's worker runner drives
:func:`~core.jobs.training.training_updates` on its own thread, and each :class:`~core.jobs.training.TrainUpdate`
goes to the loss curve, the EMA sample view and the status line (with the run's warnings, one line each, from the
runner's ``warned`` signal). The output folder is checked before anything starts. Stop, and closing the window,
stop after the step in flight and save a resumable checkpoint first; Resume continues bit for bit (Steps may be
raised to extend a run). "Use this model" hands the run's newest model files (``OUT/model``, else
``OUT/checkpoint``) to the Generate panel. ``TrainPanel.install(window, settings)`` adds the "Train" tab. A read-only
line shows the ``torchrun`` command that trains the same settings on a cluster machine
(:func:`core.jobs.training.torchrun_command`), with a Copy button: a cluster job is not run from the window.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pyqtgraph as pg
import torch
from PySide6.QtCore import QEvent, QObject, QSettings, QSignalBlocker, QStandardPaths, Qt, Signal
from PySide6.QtWidgets import (QApplication, QFileDialog, QGridLayout, QLabel, QLineEdit, QProgressBar, QSizePolicy, QSpinBox,
                               QSplitter, QToolButton, QVBoxLayout)

from core.jobs.training import (ADD_FOLDER_TIP, DEFAULTS, MNIST, MNIST_TIP, SIZE_TIPS, SMOOTH_HALF, TIPS, LossCurve,
                                TrainSession, TrainUpdate, check_resume, check_start, folder_summary, new_run_folder,
                                newest_model_folder, run_state, samples_title, saved_recipe, stopped_text,
                                torchrun_command, training_updates, update_text, warning_text)
from core.messages import one_line
from core.train import MODEL_SIZES, TrainConfig
from ddpm_gui import settings as settings_mod
from ddpm_gui.image_views import ImagePane, style_plot
from ddpm_gui.widgets import (FolderMenu, JobPanel, LogAxis, button, combo_box, device_combo, hbox, named, row,
                              spin_box)
from ddpm_gui.worker import WorkerRunner

BUILTIN, FOLDER, ADD_FOLDER = "builtin", "folder", "add-folder"
RECENT_KEY = "train/recentFolders"
CLOSE_WAIT_S = 300.0                 # closing waits this long for the step in flight and the checkpoint
RAW_PEN = pg.mkPen((120, 160, 220), width=1)
SMOOTH_PEN = pg.mkPen((214, 39, 40), width=2)


def _data_entry(spec: str) -> tuple[str, str]:
    """The dataset menu's item data for ``builtin:mnist`` or a folder."""
    return (BUILTIN if spec == MNIST else FOLDER, spec)


def runs_root() -> Path:
    docs = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.DocumentsLocation) or str(Path.home())
    return Path(docs) / "DDPM Studio runs"


class TrainPanel(JobPanel):
    """The Train tab. Build it with its main window (for the worker runner, the error box and the Generate panel);
    ``settings`` remembers the dataset, the folders chosen from disk and the last run's options."""

    TITLE = "Train"
    runStarted = Signal()
    updateShown = Signal(int)        # a TrainUpdate up to this step was handed to the curve and labels
    samplesShown = Signal(int)       # an EMA sample grid of this step is on screen
    runStopped = Signal(int)         # stopped by the user (or the window closing): the checkpoint's step
    runFinished = Signal(str)        # all steps done: the final model folder
    runEnded = Signal()              # after any of these or runFailed (JobPanel's: the one-line reason)

    @classmethod
    def install(cls, window, settings: QSettings | None = None) -> "TrainPanel":
        panel = cls(window, settings=settings)
        window.add_panel("Train", panel)
        window.installEventFilter(panel)  # a close while training first saves a checkpoint (see eventFilter)
        return panel

    def __init__(self, window, settings: QSettings | None = None, parent=None):
        super().__init__(window, parent)
        self.setObjectName("trainPanel")
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
        self._curve = LossCurve()
        self._total = 0
        self._last_update: TrainUpdate | None = None
        self._num_classes = 0
        self._folder_resolution = 32  # the resolution for folders (MNIST is 28×28)
        self.warning_text = ""
        self._notes: tuple[str, ...] = ()   # the current run's own notes (skipped image files)
        self._build_ui()
        self._restore()
        self._on_data_changed(propose=self._out_auto)
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
        self.dataCombo.select(str(spec))

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
            check_start(cfg)
        except (OSError, ValueError) as e:
            self._fail(one_line(e))
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
            step = check_resume(cfg)
        except (OSError, ValueError) as e:
            self._fail(one_line(e))
            return False
        self._remember()
        if not self._curve.continues(cfg.out, step):
            self._clear_curve(cfg.out)  # the run's own history arrives with the first update
        return self._launch(cfg, resume=True)

    def stop(self) -> bool:
        """Stop after the step in flight; the worker then saves a resumable checkpoint. Answers at once."""
        if not self._running or self._stopping:
            return False
        self._stopping = True
        self.runner.cancel()
        self.stopButton.setEnabled(False)
        step = self._curve.last_step or 0
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
        return np.array(self._curve.steps, np.int64), np.array(self._curve.raw), self._curve.mean.copy()

    def loss_averages(self) -> np.ndarray:
        """Core's exponential average of the loss (``TrainEvent.loss_avg``) at each step of the curve."""
        return np.array(self._curve.avgs)

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
    def _on_warned(self, line: str) -> None:
        """A warning of the run: shown with the next update (at most 0.1 s away) and in the final status."""
        if self._session is not None and line not in self._session.warnings:
            self._session.warnings.append(line)
            self._show_warnings()

    def _show_warnings(self) -> None:
        self.warning_text = warning_text(self._notes, self._session.warnings if self._session is not None else [])

    def _with_warning(self, text: str) -> str:
        return f"{text} · {self.warning_text}" if self.warning_text else text

    def _launch(self, cfg: TrainConfig, resume: bool) -> bool:
        self._session = TrainSession(cfg.out)
        self._started = False
        self._total = cfg.steps
        self._stopping = False
        self._set_running(True)
        self.warning_text = ""
        self._notes = ()
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
            self._notes = tuple(u.notes)
            self._show_warnings()
            self.runInfo.setText(f"Training {u.info}; step {u.step} → {u.total}")
            self._num_classes = u.num_classes
            if not self._curve.steps and len(u.history_steps):
                self._curve.load_history(u.history_steps, u.history_losses)
                self._redraw_curve()
            self.progressBar.setValue(u.step)
            self._set_status(self._with_warning(update_text(u, "")))
            return
        self._show_warnings()
        if self._curve.append(u.steps, u.losses, u.loss_avgs):
            self._redraw_curve()
        if u.grid is not None:
            self._show_samples(u.grid, u.grid_step)
        self.progressBar.setValue(u.step)
        self._last_update = u
        if u.kind == "done" or not self._stopping:
            self._set_status(self._with_warning(update_text(u, self._curve.loss_text())))
        if u.kind == "done":
            self.runFinished.emit(u.model_path or "")
        self.updateShown.emit(u.step)

    def _on_cancelled(self, _n: int) -> None:
        s = self._session
        self._show_warnings()
        if s is not None and s.tail is not None and self._curve.append(*s.tail):
            self._redraw_curve()
        step = s.saved_step if s is not None and s.saved_step is not None else 0
        if s is not None and s.saved_path:
            self.progressBar.setValue(step)
            self._set_status(self._with_warning(stopped_text(s, self._total)))
        else:
            self._set_status(stopped_text(None, self._total))
        self.runStopped.emit(step)

    def _on_error(self, exc) -> None:
        self._fail(one_line(exc))

    def _on_done(self) -> None:
        self._session = None
        self._stopping = False
        self._set_running(False)
        self.runEnded.emit()

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

    # ----- curve and samples -----------------------------------------------------------------------------------
    def _clear_curve(self, out: str) -> None:
        self._curve.clear(out)
        self._redraw_curve()

    def _redraw_curve(self) -> None:
        c = self._curve
        if not c.steps:  # an empty plot: the axes of a run to come instead of pyqtgraph's 0…1
            self.lossPlot.setXRange(0, max(1, self._total or self.stepsSpin.value()), padding=0.02)
            self.lossPlot.setYRange(-2, 0.3, padding=0)  # log10 of 0.01 … 2
            self.lossPlot.enableAutoRange()
        x = np.array(c.steps, np.float64)
        self.rawCurve.setData(x, np.array(c.raw, np.float64))
        self.smoothCurve.setData(x, c.mean)

    def _on_steps_changed(self, v: int) -> None:
        if self._running:
            return
        self.progressBar.setRange(0, v)
        last = self._curve.last_step
        self.progressBar.setValue(min(last, v) if last is not None else 0)
        if last is None:
            self._total = v
            self._redraw_curve()

    def _show_samples(self, grid: np.ndarray, step: int) -> None:
        self.sampleView.set_image(np.ascontiguousarray(grid))
        self.sampleView.title.setText(samples_title(step, self._num_classes))
        self.samplesShown.emit(step)

    def _clear_samples(self, every: int) -> None:
        self.sampleView.item.clear()
        self.sampleView.title.setText(samples_title(None, every=every))

    # ----- datasets and the output folder ----------------------------------------------------------------------
    def _on_data_changed(self, _data=None, propose: bool = True) -> None:
        is_folder = (self.dataCombo.currentData() or (BUILTIN,))[0] == FOLDER
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
        with QSignalBlocker(self.outEdit):
            self.outEdit.setText(str(new_run_folder(runs_root(), self.data_spec(), self.sizeCombo.currentData())))
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
        if state is not None:
            self._show_recipe(saved_recipe(state))
        self.runInfo.setText(folder_summary(state))

    def _show_recipe(self, cfg: dict) -> None:
        """A run keeps its recipe when resumed: show its data, size and batch instead of the widgets' last values
        (silently: this proposes no new output folder)."""
        size, batch, data = cfg.get("model_size"), cfg.get("batch_size"), cfg.get("data")
        if isinstance(size, str) and self.sizeCombo.findData(size) >= 0:
            with QSignalBlocker(self.sizeCombo):
                self.sizeCombo.setCurrentIndex(self.sizeCombo.findData(size))
        if isinstance(batch, int) and self.batchSpin.minimum() <= batch <= self.batchSpin.maximum():
            self.batchSpin.setValue(batch)
        if isinstance(data, str) and data and (data == MNIST or not data.startswith("builtin:")):
            if data != MNIST and isinstance(cfg.get("resolution"), int):
                self._folder_resolution = cfg["resolution"]
            self.dataCombo.set_quietly(self.dataCombo.add(data))
            self._on_data_changed(propose=False)

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
        if isinstance(data, str) and data and self.dataCombo.find(_data_entry(data)) >= 0:
            self.dataCombo.set_quietly(self.dataCombo.find(_data_entry(data)))
        size = s.value("train/modelSize")
        if isinstance(size, str) and self.sizeCombo.findData(size) >= 0:
            self.sizeCombo.setCurrentIndex(self.sizeCombo.findData(size))
        for key, spin in self._remembered_spins():
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
        for key, spin in self._remembered_spins():
            s.setValue(key, spin.value())
        if self.dataCombo.currentData()[0] == FOLDER:
            s.setValue("train/resolution", self._folder_resolution)
        s.setValue("train/out", self.outEdit.text().strip())
        s.sync()

    def torchrun_command(self) -> str:
        """The ``torchrun`` line of the current settings ("" while they do not make a run, e.g. no output)."""
        try:
            return torchrun_command(self.config())
        except (ValueError, TypeError):
            return ""

    def copy_torchrun_command(self) -> bool:
        self._update_torchrun()
        text = self.torchrunEdit.text()
        if text:
            QApplication.clipboard().setText(text)
        return bool(text)

    def _update_torchrun(self) -> None:
        if hasattr(self, "torchrunEdit"):
            self.torchrunEdit.setText(self.torchrun_command())
            self.torchrunEdit.setCursorPosition(0)

    def _remembered_spins(self) -> tuple[tuple[str, QSpinBox], ...]:
        return (("train/steps", self.stepsSpin), ("train/batch", self.batchSpin),
                ("train/sampleEvery", self.sampleEverySpin))

    # ----- UI --------------------------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        self.dataCombo = FolderMenu("trainDatasetCombo", TIPS["trainDatasetCombo"],
                                    [("Built-in MNIST (4,500 digits, 28×28)", (BUILTIN, MNIST), MNIST_TIP)],
                                    [("Choose a folder of images…", (ADD_FOLDER, None), ADD_FOLDER_TIP,
                                      "A folder of images to train on", str)],
                                    self._settings, RECENT_KEY, data=_data_entry)
        self.dataCombo.chosen.connect(self._on_data_changed)
        self.resolutionSpin = spin_box("trainResolutionSpin", "Image size the model trains at (folders; MNIST is "
                                       "28×28). Every image is centre-cropped to a square and resized to it",
                                       4, 512, 28)
        self.resolutionSpin.setSuffix(" px")
        self.resolutionSpin.valueChanged.connect(self._on_resolution_changed)
        self.sizeCombo = combo_box("trainModelSizeCombo", "UNet size: tiny and small train in minutes on a CPU (small "
                                   "is the built-in model's size); base and large need hours there, or a GPU",
                                   [(name, name, SIZE_TIPS[name]) for name in MODEL_SIZES])
        self.sizeCombo.setCurrentIndex(self.sizeCombo.findData(DEFAULTS.model_size))
        self.sizeCombo.currentIndexChanged.connect(lambda _i: self._propose_out())
        self.stepsSpin = spin_box("trainStepsSpin", "Total optimizer steps of the run (Resume may raise it to extend "
                                  "a run)", 1, 10_000_000, DEFAULTS.steps, step=500)
        self.batchSpin = spin_box("trainBatchSpin", TIPS["trainBatchSpin"], 1, 4096, DEFAULTS.batch_size)
        self.sampleEverySpin = spin_box("trainSampleEverySpin", TIPS["trainSampleEverySpin"], 0, 1_000_000,
                                        DEFAULTS.sample_every, step=100)
        self.sampleEverySpin.setSpecialValueText("at the end")
        self.sampleEverySpin.valueChanged.connect(
            lambda v: self.sampleView.image is None and not self._running and self._clear_samples(v))
        self.deviceCombo = device_combo("trainDeviceCombo")
        self.deviceCombo.setToolTip("Where training runs: auto = CUDA (bf16/fp16 autocast), then MPS, then CPU (fp32)")
        self.outEdit = named(QLineEdit(), "trainOutEdit", "The run's folder: checkpoint/ (resumable), "
                             "samples/step_N.png and, at the end, model/ — the same layout as `ddpm train --out`")
        self.outEdit.textEdited.connect(self._on_out_typed)
        self.outBrowseButton = button("…", "trainOutBrowseButton", "Choose the output folder (an existing run there "
                                      "can be resumed)", self._browse_out, QToolButton)
        self.runInfo = named(QLabel(), "trainRunInfo")
        self.runInfo.setWordWrap(True)
        self.runInfo.setStyleSheet("color: #555;")
        self.runInfo.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.startButton = button("Start", "trainStartButton", TIPS["trainStartButton"], self.start)
        self.stopButton = button("Stop", "trainStopButton", "Stop after the step in flight and save a resumable "
                                 "checkpoint", self.stop)
        self.resumeButton = button("Resume", "trainResumeButton", TIPS["trainResumeButton"], self.resume)
        self.useModelButton = button("Use this model", "trainUseModelButton", "Open the run's newest EMA weights "
                                     "(model/, else the checkpoint) in the Generate panel", self.use_model)
        self.torchrunEdit = named(QLineEdit(), "torchrunCommandEdit", "The same run on a cluster machine: one "
                                  "process per GPU (torchrun --nproc_per_node gpu), each with this batch, so the "
                                  "global batch is GPUs × batch (scale the learning rate with it). For several "
                                  "machines: --nnodes N --rdzv-backend c10d --rdzv-endpoint HOST:PORT instead of "
                                  "--standalone, the same line on each")
        self.torchrunEdit.setReadOnly(True)
        self.torchrunCopyButton = button("Copy", "torchrunCopyButton", "Copy the torchrun command to the clipboard",
                                         self.copy_torchrun_command, QToolButton)
        for sig in (self.dataCombo.chosen, self.resolutionSpin.valueChanged, self.sizeCombo.currentIndexChanged,
                    self.stepsSpin.valueChanged, self.batchSpin.valueChanged, self.sampleEverySpin.valueChanged,
                    self.deviceCombo.currentIndexChanged, self.outEdit.textChanged):
            sig.connect(lambda *_a: self._update_torchrun())
        self.progressBar = named(QProgressBar(), "trainProgress", "Optimizer steps done / total")
        self.progressBar.setFormat("step %v / %m")
        self.statusLabel = named(QLabel(), "trainStatus", TIPS["trainStatus"])
        self.statusLabel.setWordWrap(True)
        self.statusLabel.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.statusLabel.setMinimumHeight(2 * self.statusLabel.fontMetrics().lineSpacing() + 4)
        self.statusLabel.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)

        self.lossPlot = named(pg.PlotWidget(axisItems={"left": LogAxis("left")}), "trainLossPlot",
                              TIPS["trainLossPlot"])
        self.lossPlot.setAcceptDrops(False)
        style_plot(self.lossPlot)
        self.lossPlot.setLogMode(False, True)
        self.lossPlot.setLabel("bottom", "step")
        self.lossPlot.setLabel("left", "loss (MSE)")
        self.lossPlot.addLegend(offset=(-8, 6), labelTextColor="#222", brush=pg.mkBrush(255, 255, 255, 220),
                                pen=pg.mkPen("#bbb"))
        self.rawCurve = self.lossPlot.plot([], [], pen=RAW_PEN, name="loss per step")
        self.smoothCurve = self.lossPlot.plot([], [], pen=SMOOTH_PEN,
                                              name=f"smoothed (mean of {2 * SMOOTH_HALF + 1} steps)")
        for c in (self.rawCurve, self.smoothCurve):
            c.setClipToView(True)
            c.setDownsampling(auto=True, method="peak")
        self.lossPlot.setMinimumHeight(150)
        self.sampleView = ImagePane("<b>EMA samples</b>", "trainSampleView",
                                    "A grid of samples from the EMA weights (what the saved model holds), drawn "
                                    "with the same seed each time. Wheel: zoom, drag: pan")

        form = QGridLayout()
        form.setHorizontalSpacing(8)
        for r, c, w, span in ((0, 0, "Dataset", 1), (0, 1, self.dataCombo, 3), (0, 4, "Resolution", 1),
                              (0, 5, self.resolutionSpin, 1), (1, 0, "Model size", 1), (1, 1, self.sizeCombo, 1),
                              (1, 2, "Steps", 1), (1, 3, self.stepsSpin, 1), (1, 4, "Batch", 1),
                              (1, 5, self.batchSpin, 1), (2, 0, "Samples every", 1), (2, 1, self.sampleEverySpin, 1),
                              (2, 2, "Device", 1), (2, 3, self.deviceCombo, 3), (3, 0, "Output", 1)):
            form.addWidget(QLabel(w) if isinstance(w, str) else w, r, c, 1, span)
        form.addWidget(row(self.outEdit, self.outBrowseButton, spacing=2), 3, 1, 1, 5)
        form.addWidget(self.runInfo, 4, 1, 1, 5)
        form.addWidget(QLabel("torchrun"), 5, 0)
        form.addWidget(row(self.torchrunEdit, self.torchrunCopyButton, spacing=2), 5, 1, 1, 5)
        for col, stretch in ((1, 2), (3, 1), (5, 1)):
            form.setColumnStretch(col, stretch)

        self.viewSplitter = named(QSplitter(Qt.Orientation.Vertical), "trainViewSplitter")
        self.viewSplitter.addWidget(self.lossPlot)
        self.viewSplitter.addWidget(self.sampleView)
        self.viewSplitter.setStretchFactor(0, 1)
        self.viewSplitter.setStretchFactor(1, 1)
        self.viewSplitter.setChildrenCollapsible(False)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(form)
        layout.addLayout(hbox((self.startButton, 2), (self.stopButton, 1), (self.resumeButton, 1),
                              (self.useModelButton, 2)))
        layout.addWidget(self.progressBar)
        layout.addWidget(self.statusLabel)
        layout.addWidget(self.viewSplitter, 1)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)
        self._clear_samples(DEFAULTS.sample_every)
        self.stepsSpin.valueChanged.connect(self._on_steps_changed)
        self._on_steps_changed(self.stepsSpin.value())
        self._update_torchrun()
        self._set_status("Choose the data and a model size, then Start. Stop saves a checkpoint; Resume continues.")
