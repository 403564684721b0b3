"""The Generate panel: run the reverse chain on a worker thread and watch x_t and x̂_0 emerge, step by step.

A thin view over ``core``: the click turns the widgets into a :class:`~ddpm_gui.run_recording.GenerateJob`; a
:class:`~ddpm_gui.worker.WorkerRunner` runs :func:`~ddpm_gui.run_recording.generate_frames` (which loads the model
and calls :func:`core.samplers.sample` exactly as ``ddpm sample`` does) on its own thread. Every step is recorded
in the worker; only the newest frame reaches the UI, at most 30 times a second. After the run a timeline replays
every recorded step and the run can be exported (GIF, APNG, a PNG grid, the final samples, numbered PNG frames).

``GeneratePanel.install(window)`` adds it to a :class:`~ddpm_gui.main_window.MainWindow` as the "Generate" tab.
"""
from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

from PySide6.QtCore import QSettings, QSignalBlocker, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QColor, QKeySequence, QPainter, QShortcut, QStandardItemModel
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QGridLayout,
                               QHBoxLayout, QLabel, QMenu, QProgressBar, QPushButton, QSizePolicy, QSlider, QSpinBox,
                               QToolButton, QVBoxLayout, QWidget)

from core.device import DEVICES, available_devices, pick_device
from core.messages import one_line
from core.outputs import check_output_file, refuse_overwriting_inputs
from core.models.load import builtin_models, load_model, oracle_for_array
from core.samplers import SAMPLER_NAMES, SAMPLERS, default_steps
from core.samplers.timesteps import max_steps
from ddpm_gui.image_views import ImagePane
from ddpm_gui.model_combo import ModelCombo
from ddpm_gui.run_recording import (GenerateJob, ModelCache, Recording, RunFrame, export_animation, export_final,
                                    export_frame_folder, export_grid, format_eta, generate_frames)
from ddpm_gui.worker import WorkerRunner

BUILTIN, PHOTO, ORACLE, FOLDER, ORACLE_FOLDER, ADD_MODEL, ADD_ORACLE = (
    "builtin", "photo", "oracle", "folder", "oracle-folder", "add-model", "add-oracle")
RECENT_KEY = "generate/recentModels"
MAX_RECENT = 8
MAX_BATCH = 64
REPLAY_FPS = 30
PAINT_BUDGET = 0.02    # the live view's UI-thread CPU time ≤ 2% of the sampler's CPU time (see _poll) …
PAINT_DUTY = 0.03      # … and ≤ 3% of the wall time
MAX_PAINT_INTERVAL = 0.5  # … but it is updated at least twice a second
FIRST_FRAME_POLL_MS = 4   # how often the live view looks for a run's first frame
FOLLOW_INTERVAL = 1.0     # during a run the window's slider (and its photo, histogram, schedule marker) follows t
                          # once a second: re-rendering the window's photo costs ~2× painting x_t and x̂_0
SAMPLER_TIPS = {
    "ddpm": "DDPM (Ho et al. 2020, eq. 11): x_{t−1} = 1/√α_t·(x_t − β_t/√(1−ᾱ_t)·ε̂) + σ_t·z, one call per visited "
            "timestep; fresh noise z every step",
    "ddim": "DDIM (Song et al. 2021, eq. 12): x_{t−1} = √ᾱ_{t−1}·x̂_0 + √(1−ᾱ_{t−1}−σ²)·ε̂ + σ·z, "
            "σ = η·√((1−ᾱ_{t−1})/(1−ᾱ_t)·(1−ᾱ_t/ᾱ_{t−1})); η = 0 is deterministic",
    "dpmpp2m": "DPM-Solver++(2M) (Lu et al. 2022): a second-order multistep solver of the probability-flow ODE "
               "in x̂_0; good images in 10–25 steps",
}
PURE_NOISE, FROM_HERE = "noise", "here"


class _TextLine(QWidget):
    """Text that changes often (status, step, start note) without asking for a new layout. ``QLabel.setText``
    always calls ``updateGeometry()``: on every live frame the panel was laid out again and every widget in it
    repainted (measured: ~30 paint events per frame), which cost more than the pictures themselves."""

    def __init__(self, lines: int = 1, align=Qt.AlignmentFlag.AlignLeft, color: str | None = None,
                 width: int | None = None):
        super().__init__()
        self._text, self._color, self._error = "", color, False
        self._align = align | Qt.AlignmentFlag.AlignVCenter | Qt.TextFlag.TextWordWrap
        self.setFixedHeight(self.fontMetrics().lineSpacing() * lines + 4)
        if width is not None:
            self.setFixedWidth(width)
        else:
            self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)

    def text(self) -> str:
        return self._text

    def setText(self, text: str, error: bool = False) -> None:  # noqa: N802 - QLabel's name
        if text != self._text or error != self._error:
            self._text, self._error = text, error
            self.setToolTip(text if self.objectName() == "generateStatus" else self.toolTip())
            self.update()

    def paintEvent(self, ev):  # noqa: N802 - Qt override
        p = QPainter(self)
        color = "#b00020" if self._error else self._color
        p.setPen(QColor(color) if color else self.palette().windowText().color())
        p.drawText(self.rect().adjusted(2, 0, -2, 0), int(self._align), self._text)
        p.end()


class GeneratePanel(QWidget):
    """The Generate tab. Build it with the main window it belongs to (for the photo, the slider, the schedule
    and its worker runners); ``settings`` remembers the model folders chosen from disk."""

    runStarted = Signal()
    framePainted = Signal(int)        # a frame of the live run (its step index) was handed to the views
    runFinished = Signal(object)      # the final samples, N×C×H×W float32
    runCancelled = Signal(int)        # the number of steps done
    runFailed = Signal(str)           # the one-line reason
    runEnded = Signal()               # after any of the three
    modelReady = Signal(str)          # a model was loaded (its name) and the class widgets are up to date

    @classmethod
    def install(cls, window, settings: QSettings | None = None) -> "GeneratePanel":
        panel = cls(window, settings=settings)
        window.add_panel("Generate", panel)
        return panel

    def __init__(self, window, settings: QSettings | None = None, parent=None):
        super().__init__(parent)
        self.setObjectName("generatePanel")
        self.window_ = window
        self._settings = settings
        self.cache = ModelCache()
        self.runner: WorkerRunner = window.create_runner("generate")
        self._load_runner: WorkerRunner = window.create_runner("generate-model")
        self.recording: Recording | None = None
        self._live: Recording | None = None
        self._running = False
        self._cancel_requested = False
        self._prev_model_index = 0
        self._loaded_key: tuple | None = None
        self._click_time = 0.0
        self.first_frame_latency: float | None = None
        self.frames_painted = 0
        self.status_text = ""
        self._photo_ref, self._photo_gen = None, 0
        self.paint_budget, self.paint_duty = PAINT_BUDGET, PAINT_DUTY
        self._cpu0 = self._ui_cpu0 = self._last_paint = 0.0
        self._shown: RunFrame | None = None
        self._last_follow = 0.0
        self._poll_timer = QTimer(self)
        self._poll_timer.setSingleShot(True)
        self._poll_timer.timeout.connect(self._poll)
        self._replay_timer = QTimer(self)
        self._replay_timer.setInterval(int(1000 / REPLAY_FPS))
        self._replay_timer.timeout.connect(self._replay_tick)
        self._build_ui()
        self._fill_models()
        self._on_sampler_changed()
        self._set_running(False)
        self._set_status("Choose a model and click Generate (Ctrl+G).")
        window.imageChanged.connect(self._on_photo_changed)
        window.scheduleChanged.connect(self._on_window_schedule_changed)
        QTimer.singleShot(0, self._preload)

    # ----- public API ------------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._running

    def current_model(self) -> tuple[str, str | None]:
        """(kind, value) of the selected model entry."""
        data = self.modelCombo.currentData()
        return (data[0], data[1]) if data else (ORACLE, "oracle:builtin:mnist")

    def select_model(self, spec: str) -> None:
        """Select a model by spec: ``builtin:NAME``, ``oracle:builtin:mnist``, ``photo`` (the oracle over the loaded
        photo), ``oracle:FOLDER`` or a model folder path (added to the list if new)."""
        if spec == PHOTO:
            kind, value = PHOTO, None
        elif spec.startswith("builtin:"):
            kind, value = BUILTIN, spec
        elif spec == "oracle:builtin:mnist":
            kind, value = ORACLE, spec
        elif spec.startswith("oracle:"):
            kind, value = ORACLE_FOLDER, spec[len("oracle:"):]
        else:
            kind, value = FOLDER, spec
        i = self._find_model(kind, value)
        if i < 0:
            i = self._add_recent(kind, value)
        self.modelCombo.setCurrentIndex(i)

    def set_start(self, mode: str) -> None:
        """``"noise"`` (pure noise x_T) or ``"here"`` (the photo noised to the slider's t)."""
        self.startCombo.setCurrentIndex(self.startCombo.findData(mode))

    def generate(self) -> bool:
        """Start a run with the current settings; False (with a one-line message) when the input is not usable."""
        if self._running:
            self._set_status("A run is in progress: Cancel it first (Esc).")
            return False
        try:
            job = self._make_job()
        except ValueError as e:
            self._fail(one_line(e))
            return False
        self._replay_timer.stop()
        self._live = Recording()
        self._job = job
        self._cancel_requested = False
        self.first_frame_latency = None
        self._shown, self._last_follow = None, 0.0
        self._set_running(True)
        self.progressBar.setRange(0, 0)  # busy until the first step (the model may still be loading)
        loaded = self.cache.peek(job.model_key) is not None
        self._set_status("Generating…" if loaded else "Loading the model…")
        self._click_time = time.perf_counter()
        self._cpu0, self._ui_cpu0 = time.process_time(), time.thread_time()
        try:
            self.runner.start(generate_frames, job, self.cache, self._live,
                              on_finished=self._on_finished, on_cancelled=self._on_cancelled,
                              on_error=self._on_error, on_done=self._on_done)
        except RuntimeError:  # the window is closing
            self._live = None
            self._set_running(False)
            return False
        self._poll_timer.start(0)
        self.runStarted.emit()
        return True

    def cancel(self) -> bool:
        """Ask the run in flight to stop; it stops after the model call it is in (the status says so at once)."""
        if not self._running:
            return False
        self._cancel_requested = True
        self.runner.cancel()
        self.cancelButton.setEnabled(False)
        latest = self._live.latest if self._live is not None else None
        self._set_status(f"Cancelling… (after step {latest.index}/{latest.total})" if latest else "Cancelling…")
        return True

    def show_frame(self, i: int) -> None:
        """Show recorded frame ``i`` of the last run (the timeline's position)."""
        self.timelineSlider.setValue(int(i))

    def export(self, kind: str, path) -> bool:
        """Write the last run: ``gif`` / ``apng`` (every recorded step), ``grid`` (a progression PNG), ``final``
        (the samples' PNG grid, as ``ddpm sample -o OUT.png``) or ``frames`` (a folder of numbered PNGs).

        Refused with one line, nothing written, when ``path`` is one of the run's inputs — the model's files, the
        photo, a loaded schedule file — through a symlink or a hard link too (:meth:`export_inputs`)."""
        writers = {"gif": export_animation, "apng": export_animation, "grid": export_grid, "final": export_final,
                   "frames": export_frame_folder}
        try:
            if kind not in writers:
                raise ValueError(f"unknown export {kind!r}")
            if self.recording is None or not len(self.recording):
                raise ValueError("nothing to export yet: run Generate first")
            if kind == "frames":
                refuse_overwriting_inputs([path], [*self.window_.input_paths(), *self.export_inputs()])
                if not Path(path).exists():
                    check_output_file(path)   # its parent folder exists and is writable
            else:
                self.window_.check_output_target(path, self.export_inputs())
            writers[kind](path, self.recording)
        except Exception as e:  # noqa: BLE001 - always one line
            msg = one_line(e)
            self._fail(msg if str(path) in msg else f"{path}: {msg}", title="Export")
            return False
        self.window_.statusBar().showMessage(f"Wrote {path}", 8000)
        return True

    def export_inputs(self) -> list[Path]:
        """The files of the models the last run and the current choice read (model folders, oracle photos and
        image folders): an export never replaces one of them."""
        from ddpm_gui.main_window import spec_input_files
        specs = set()
        job = getattr(self, "_job", None)
        if job is not None and job.model_key and isinstance(job.model_key[0], str):
            specs.add(job.model_key[0])
        kind, value = self.current_model()
        if kind in (BUILTIN, FOLDER):
            specs.add(value)
        elif kind == ORACLE_FOLDER:
            specs.add(f"oracle:{value}")
        out: list[Path] = []
        for spec in sorted(specs):
            out.extend(spec_input_files(spec))
        return out

    # ----- model list ------------------------------------------------------------------------------------------
    def _fill_models(self) -> None:
        combo = self.modelCombo
        with QSignalBlocker(combo):
            combo.clear()
            installed = builtin_models()
            for spec in sorted(set(installed) | {"builtin:mnist"}):
                name = spec.split(":", 1)[1]
                ok = spec in installed
                label = f"Built-in {name.upper() if name == 'mnist' else name} model"
                combo.addItem(label if ok else f"{label} — not installed yet", (BUILTIN, spec))
                i = combo.count() - 1
                combo.setItemData(i, (f"{spec}: the model that ships with DDPM Studio (resources/models/{name}/)"
                                      if ok else f"{spec} is not installed yet: it appears in resources/models/"
                                      f"{name}/ once trained (ddpm train … then install it). Until then, try an "
                                      "oracle or a model folder."), Qt.ItemDataRole.ToolTipRole)
                if not ok:
                    combo.model().item(i).setEnabled(False)
            combo.addItem("Oracle — the loaded photo", (PHOTO, None))
            combo.setItemData(combo.count() - 1, "The exact denoiser of one image: E[x_0 | x_t] is that image, so "
                              "every sample converges to the photo (32×32 unless the photo is square ≤ 256)",
                              Qt.ItemDataRole.ToolTipRole)
            combo.addItem("Oracle — built-in MNIST digits", (ORACLE, "oracle:builtin:mnist"))
            combo.setItemData(combo.count() - 1, "The exact denoiser of the 4,500 training digits: "
                              "E[x_0 | x_t] = Σ_i softmax_i(−‖x_t − √ᾱ_t·x_i‖² / 2(1−ᾱ_t))·x_i — it memorises",
                              Qt.ItemDataRole.ToolTipRole)
            for kind, value in self._recent():
                self._insert_recent_item(kind, value)
            combo.insertSeparator(combo.count())
            combo.addItem("Open a model folder…", (ADD_MODEL, None))
            combo.setItemData(combo.count() - 1, "A folder with config.json + model.safetensors (ours) or a "
                              "diffusers UNet2DModel / pipeline folder; remembered", Qt.ItemDataRole.ToolTipRole)
            combo.addItem("Oracle over a folder of images…", (ADD_ORACLE, None))
            combo.setItemData(combo.count() - 1, "The exact denoiser of every image in a folder (sub-folders are "
                              "classes); remembered", Qt.ItemDataRole.ToolTipRole)
            start = self._find_model(BUILTIN, "builtin:mnist")
            if start < 0 or not self._enabled(start):
                start = self._find_model(ORACLE, "oracle:builtin:mnist")
            combo.setCurrentIndex(start)
            self._prev_model_index = start

    def _refresh_builtins(self) -> None:
        """Enable built-in entries that were installed while the app was open."""
        installed = set(builtin_models())
        combo = self.modelCombo
        for i in range(combo.count()):
            data = combo.itemData(i)
            if data and data[0] == BUILTIN and data[1] in installed and not self._enabled(i):
                name = data[1].split(":", 1)[1]
                combo.setItemText(i, f"Built-in {name.upper() if name == 'mnist' else name} model")
                combo.setItemData(i, f"{data[1]}: the model that ships with DDPM Studio", Qt.ItemDataRole.ToolTipRole)
                combo.model().item(i).setEnabled(True)

    def _enabled(self, i: int) -> bool:
        model = self.modelCombo.model()
        return not isinstance(model, QStandardItemModel) or model.item(i).isEnabled()

    def _find_model(self, kind: str, value) -> int:
        for i in range(self.modelCombo.count()):
            data = self.modelCombo.itemData(i)
            if data and data[0] == kind and data[1] == value:
                return i
        return -1

    def _insert_recent_item(self, kind: str, value: str) -> int:
        combo = self.modelCombo
        at = self._find_model(ORACLE, "oracle:builtin:mnist") + 1
        while at < combo.count() and (combo.itemData(at) or (None,))[0] in (FOLDER, ORACLE_FOLDER):
            at += 1
        name = Path(value).name or value
        label = f"Model — {name}" if kind == FOLDER else f"Oracle — folder {name}"
        combo.insertItem(at, label, (kind, value))
        combo.setItemData(at, value, Qt.ItemDataRole.ToolTipRole)
        return at

    def _recent(self) -> list[tuple[str, str]]:
        if self._settings is None:
            return []
        text = self._settings.value(RECENT_KEY)
        try:
            items = json.loads(text) if isinstance(text, str) and text else []
            return [(k, v) for k, v in items if k in (FOLDER, ORACLE_FOLDER) and isinstance(v, str)][:MAX_RECENT]
        except Exception:  # noqa: BLE001 - a hand-edited settings file (nested too deeply, …) never breaks the panel
            return []

    def _add_recent(self, kind: str, value: str) -> int:
        with QSignalBlocker(self.modelCombo):
            i = self._insert_recent_item(kind, value)
        if self._settings is not None:
            items = [(kind, value)] + [(k, v) for k, v in self._recent() if (k, v) != (kind, value)]
            self._settings.setValue(RECENT_KEY, json.dumps(items[:MAX_RECENT]))
            self._settings.sync()
        return i

    def _on_model_changed(self, i: int) -> None:
        kind, _ = self.current_model()
        if kind in (ADD_MODEL, ADD_ORACLE):
            title = "Open a model folder" if kind == ADD_MODEL else "A folder of images for the oracle"
            folder = QFileDialog.getExistingDirectory(self, title, "")
            with QSignalBlocker(self.modelCombo):
                self.modelCombo.setCurrentIndex(self._prev_model_index)
            if folder:
                self.select_model(folder if kind == ADD_MODEL else f"oracle:{folder}")
            return
        self._prev_model_index = i
        self._update_class_widgets()
        self._on_model_T()
        self._preload()

    # ----- model loading --------------------------------------------------------------------------------------
    def _device(self) -> str:
        return str(pick_device(self.deviceCombo.currentData() or "auto"))

    def _model_request(self, device: str) -> tuple[tuple, object, str]:
        """(cache key, loader, description) for the selected entry on ``device``."""
        kind, value = self.current_model()
        if kind == PHOTO:
            path = self.window_.photo_path
            if path is not None:
                spec = f"oracle:{path}"
                return (spec, device), (lambda: load_model(spec, device=device)), spec
            x0 = self.window_.x0
            if x0 is None:
                raise ValueError("open a photo first (File ▸ Open image)")
            if x0 is not self._photo_ref:   # a new pasted/dropped photo (ids of freed arrays can be reused)
                self._photo_ref, self._photo_gen = x0, self._photo_gen + 1
            key = ("photo-array", self._photo_gen, device)
            return key, (lambda a=x0.copy(): oracle_for_array(a, device)), "oracle over the pasted photo"
        if kind == BUILTIN or kind == ORACLE:
            spec = value
        elif kind == ORACLE_FOLDER:
            spec = f"oracle:{value}"
        elif kind == FOLDER:
            spec = value
        else:
            raise ValueError("choose a model")
        return (spec, device), (lambda: load_model(spec, device=device)), spec

    def _preload(self) -> None:
        """Load the selected model in the background (so the first Generate starts at once and the class widgets
        know the model); failures only show in the model note."""
        try:
            key, loader, _ = self._model_request(self._device())
        except ValueError as e:
            self.modelNote.setText(one_line(e))
            return
        if self.cache.peek(key) is not None:
            self._loaded_key = key
            self._update_class_widgets()
            return
        try:
            self._load_runner.start(_preload_model, self.cache, key, loader,
                                    on_finished=lambda _m, k=key: self._on_preloaded(k),
                                    on_error=lambda e: self.modelNote.setText(f"Cannot load: {one_line(e)}"))
        except RuntimeError:  # the window is closing: its runners were shut down
            return
        self.modelNote.setText("Loading…")

    def _on_preloaded(self, key: tuple) -> None:
        self._loaded_key = key
        self._update_class_widgets()
        self._on_model_T()
        model = self.cache.peek(key)
        if model is not None:
            self.modelReady.emit(model.name)

    def _loaded_model(self):
        try:
            key, _, _ = self._model_request(self._device())
        except ValueError:
            return None
        return self.cache.peek(key)

    def _model_T(self) -> int:
        model = self._loaded_model()
        if model is not None and model.schedule is not None:
            return model.schedule.T
        return self.window_.schedule.T

    def _update_class_widgets(self) -> None:
        model = self._loaded_model()
        k = int(getattr(model, "num_classes", 0) or 0)
        if model is not None:
            res = f"{model.resolution}×{model.resolution}, {model.channels} channel{'s' * (model.channels > 1)}"
            sched = ("the window's schedule (T = %d)" % self.window_.schedule.T if model.schedule is None
                     else f"its own schedule (T = {model.schedule.T})")
            classes = f", {k} classes" if k else ""
            self.modelNote.setText(f"{model.name}: {res}{classes}; samples with {sched}")
        if k != self.classCombo.property("numClasses"):
            with QSignalBlocker(self.classCombo):
                self.classCombo.clear()
                self.classCombo.addItem("any (unconditional)", None)
                if k:
                    self.classCombo.addItem("each class in turn", "each")
                    for c in range(k):
                        self.classCombo.addItem(str(c), c)
            self.classCombo.setProperty("numClasses", k)
        for w in (self.classCombo, self.guidanceSpin, self.classLabel, self.guidanceLabel):
            w.setVisible(k > 0)
        self._on_class_changed()

    # ----- the job ---------------------------------------------------------------------------------------------
    def _class_labels(self):
        k = int(self.classCombo.property("numClasses") or 0)
        data = self.classCombo.currentData() if k > 0 else None
        if data is None:
            return None
        if data == "each":
            return [i % k for i in range(self.batchSpin.value())]
        return int(data)

    def _make_job(self) -> GenerateJob:
        device = self._device()
        key, loader, _ = self._model_request(device)
        labels = self._class_labels()
        guidance = self.guidanceSpin.value() if labels is not None else 1.0
        start_path = start_array = t_start = None
        if self.startCombo.currentData() == FROM_HERE:
            t_start = self.window_.timestep
            if self.window_.photo_path is not None:
                start_path = str(self.window_.photo_path)
            elif self.window_.x0 is not None:
                start_array = self.window_.x0.copy()
            else:
                raise ValueError("denoise from here needs a photo: open one first")
        sampler = self.samplerCombo.currentData()
        return GenerateJob(model_key=key, loader=loader, sampler=sampler, steps=self.stepsSpin.value(),
                           eta=self.etaSpin.value() if sampler == "ddim" else 0.0, seed=self.seedSpin.value(),
                           n=self.batchSpin.value(), class_labels=labels, guidance=guidance, device=device,
                           schedule=self.window_.schedule, start_path=start_path, start_array=start_array,
                           t_start=t_start)

    # ----- the live run ------------------------------------------------------------------------------------------
    def _poll(self) -> None:
        """Show the newest step of the live run, if there is a new one and the budget allows, and come back later.

        The worker writes each step into the run's :class:`Recording`; ``recording.latest`` is a one-slot mailbox
        (the newest frame replaces the old, nothing queues) that this timer reads, so the worker sends the UI
        thread no signal per step. Painting x_t, x̂_0, the progress and the window's slider, photo and schedule
        marker costs the UI thread milliseconds of CPU, and each of them is a millisecond the sampler may wait
        for the GIL (or, on a busy machine, for a core). So a frame is painted at most 30 times a second and only
        while the UI thread's CPU time since the click stays under ``paint_budget`` (2%) of the CPU time the rest
        of the process (the sampler) spent, and under ``paint_duty`` (3%) of the wall time — but at least every
        0.5 s, and the last frame as soon as the run ends. On a busy machine the sampler gets less CPU per
        second, so the view paints less often instead of slowing it down."""
        live = self._live
        if live is None:
            return
        frame = live.latest
        if frame is None or frame is self._shown:
            # until the first frame, look every 4 ms (the click → first frame latency); then at 30 Hz
            self._poll_timer.start(FIRST_FRAME_POLL_MS if self._shown is None else int(1000 / 30))
            return
        now = time.perf_counter()
        since = now - self._last_paint
        ui = time.thread_time() - self._ui_cpu0
        work = time.process_time() - self._cpu0 - ui
        over = ui > self.paint_budget * work or ui > self.paint_duty * (now - self._click_time)
        if self._shown is not None and over and since < MAX_PAINT_INTERVAL:
            self._poll_timer.start(max(1, int(min(0.1, MAX_PAINT_INTERVAL - since) * 1000)))
            return
        self._last_paint = now
        self._paint(frame)
        self._poll_timer.start(int(1000 / 30))

    def _paint_last(self) -> None:
        """The run ended: stop polling and show its newest step now."""
        self._poll_timer.stop()
        live = self._live
        if live is not None and live.latest is not None and live.latest is not self._shown:
            self._paint(live.latest)

    def _paint(self, frame: RunFrame) -> None:
        """Show a live frame. Its arrays are fresh ones the worker made for this step and never writes again
        (the same objects stay in the recording), so the views may hold them without a copy."""
        self._shown = frame
        if self.first_frame_latency is None:
            self.first_frame_latency = time.perf_counter() - self._click_time
            self.progressBar.setRange(0, frame.total)
        now = time.perf_counter()
        follow = frame.index == frame.total or now - self._last_follow >= FOLLOW_INTERVAL
        if follow:
            self._last_follow = now
        self._show(frame, follow=follow)
        if frame.index < frame.total and not self._cancel_requested:
            rate = frame.index / frame.elapsed if frame.elapsed > 0 else float("inf")
            eta = (frame.total - frame.index) / rate if rate > 0 else float("inf")
            self._set_status(f"step {frame.index}/{frame.total} · t = {frame.t} · {rate:.1f} it/s · "
                             f"ETA {format_eta(eta)}")
        _set_progress(self.progressBar, frame.index)
        self.frames_painted += 1
        self.framePainted.emit(frame.index)

    def _show(self, frame: RunFrame, follow: bool = True) -> None:
        self.xtPane.set_image(frame.xt)
        self.x0Pane.set_image(frame.x0)
        self.stepLabel.setText(f"step {frame.index}/{frame.total}   t = {frame.t}")
        w = self.window_
        rec = self._live if self._live is not None else self.recording
        if follow and self.followCheck.isChecked() and rec is not None and w.schedule.T == rec.schedule_T:
            w.set_timestep(frame.t)

    def _on_finished(self, final) -> None:
        self._paint_last()
        rec = self._live
        total = rec.total
        rate = total / rec.latest.elapsed if rec.latest and rec.latest.elapsed > 0 else float("inf")
        self._set_status(f"Done: {total} steps of {SAMPLER_NAMES[self._job.sampler]} with {rec.model_name}, "
                         f"seed {self._job.seed} ({rate:.1f} it/s)")
        self.runFinished.emit(final)

    def _on_cancelled(self, n: int) -> None:
        self._paint_last()
        total = self._live.total if self._live is not None and self._live.total else "?"
        self._set_status(f"cancelled at step {n}/{total}")
        self.runCancelled.emit(n)

    def _on_error(self, exc) -> None:
        self._paint_last()
        self._fail(one_line(exc))

    def _on_done(self) -> None:
        rec, self._live = self._live, None
        self._set_running(False)
        if rec is not None and len(rec):
            self.recording = rec
            self._fill_timeline()
        self.runEnded.emit()

    def _fail(self, message: str, title: str = "Generate") -> None:
        self._set_status(message, error=True)
        self.window_.show_error(message, title=title)
        self.runFailed.emit(message)

    def _set_running(self, on: bool) -> None:
        self._running = on
        self.generateButton.setEnabled(not on)
        self.cancelButton.setEnabled(on)
        self._esc.setEnabled(on)
        for w in (self.timelineSlider, self.replayButton, self.exportButton):
            w.setEnabled(not on and self.recording is not None and len(self.recording) > 0)
        if not on and self.progressBar.maximum() == 0:   # ended before its first step: no bar, no "0 / 1"
            self.progressBar.setRange(0, 1)
            self.progressBar.setValue(0)
            self.progressBar.setFormat("")
        elif on:
            self.progressBar.setFormat("%v / %m")

    def _set_status(self, text: str, error: bool = False) -> None:
        self.status_text = text
        self.statusLabel.setText(text, error=error)

    # ----- timeline and replay -----------------------------------------------------------------------------------
    def _fill_timeline(self) -> None:
        rec = self.recording
        with QSignalBlocker(self.timelineSlider):
            self.timelineSlider.setRange(0, len(rec) - 1)
            self.timelineSlider.setValue(len(rec) - 1)
        self._set_running(False)
        self._on_timeline(len(rec) - 1)

    def _on_timeline(self, i: int) -> None:
        rec = self.recording
        if rec is None or not len(rec) or self._running:
            return
        frame = rec.frames[min(max(i, 0), len(rec) - 1)]
        self._show(frame)
        every = f" (1 step in {rec.stride} kept)" if rec.stride > 1 else ""
        self.timelineLabel.setText(f"{i + 1}/{len(rec)}{every}")

    def _on_replay(self, on: bool) -> None:
        if on:
            if self.timelineSlider.value() >= self.timelineSlider.maximum():
                self.timelineSlider.setValue(0)
            self._replay_timer.start()
        else:
            self._replay_timer.stop()
        self.replayButton.setText("⏸" if on else "▶")

    def _replay_tick(self) -> None:
        s = self.timelineSlider
        step = max(1, round((s.maximum() + 1) / (4.0 * REPLAY_FPS)))  # a replay lasts about 4 s
        if s.value() >= s.maximum():
            self.replayButton.setChecked(False)
            return
        s.setValue(min(s.maximum(), s.value() + step))

    # ----- reactions ---------------------------------------------------------------------------------------------
    def _on_sampler_changed(self, *_args) -> None:
        """A new sampler: its default number of steps for the model's T."""
        sampler = self.samplerCombo.currentData()
        T = self._model_T()
        self._steps_T = T
        self.stepsSpin.setMaximum(max_steps(T, sampler == "dpmpp2m"))
        self.stepsSpin.setValue(default_steps(sampler, T))
        self.etaSpin.setEnabled(sampler == "ddim")
        self.samplerCombo.setToolTip(SAMPLER_TIPS[sampler])

    def _on_model_T(self) -> None:
        """A model was selected or loaded: keep the user's steps unless the number of timesteps T changed."""
        if self._model_T() != getattr(self, "_steps_T", None):
            self._on_sampler_changed()

    def _on_class_changed(self, *_args) -> None:
        self.guidanceSpin.setEnabled(self.classCombo.currentData() is not None)

    def _on_start_changed(self, *_args) -> None:
        here = self.startCombo.currentData() == FROM_HERE
        self.startNote.setText(f"from t = {self.window_.timestep}: the photo noised by eq. 5, then denoised"
                               if here else "x_T ~ N(0, I)")

    def _on_photo_changed(self) -> None:
        if self.current_model()[0] == PHOTO and not self._running:
            self._preload()

    def _on_window_schedule_changed(self, _schedule) -> None:
        self._update_class_widgets()

    def _on_device_changed(self, *_args) -> None:
        self._preload()

    def _roll_seed(self) -> None:
        self.seedSpin.setValue(secrets.randbelow(self.seedSpin.maximum() + 1))

    def _export_dialog(self, kind: str) -> None:
        rec = self.recording
        base = f"generate_{(rec.model_name if rec else 'run').replace(':', '_').replace('/', '_')}_seed{self.seedSpin.value()}"
        if kind == "frames":
            parent = QFileDialog.getExistingDirectory(self, "Export frames into a new folder", "")
            if not parent:
                return
            folder, k = Path(parent) / f"{base}_frames", 2
            while folder.exists():
                folder, k = Path(parent) / f"{base}_frames_{k}", k + 1
            self.export("frames", folder)
            return
        suffix, filt = {"gif": (".gif", "GIF (*.gif)"), "apng": (".png", "Animated PNG (*.png *.apng)"),
                        "grid": ("_grid.png", "PNG (*.png)"), "final": ("_final.png", "PNG (*.png)")}[kind]
        path, _ = QFileDialog.getSaveFileName(self, "Export the run", base + suffix, filt)
        if path:
            if not Path(path).suffix:
                path += Path(suffix).suffix
            self.export(kind, path)

    # ----- UI ----------------------------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        self.modelCombo = ModelCombo()
        self.modelCombo.setObjectName("modelCombo")
        self.modelCombo.setToolTip("The denoiser that runs the reverse chain p_θ(x_{t−1} | x_t): the built-in "
                                   "model, a model folder (ours or diffusers) or the exact oracle of a set of images")
        self.modelCombo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.modelCombo.setMinimumContentsLength(20)
        self.modelCombo.aboutToShowPopup.connect(self._refresh_builtins)
        self.modelCombo.currentIndexChanged.connect(self._on_model_changed)
        self.modelNote = QLabel("")
        self.modelNote.setObjectName("modelNote")
        self.modelNote.setWordWrap(True)
        self.modelNote.setStyleSheet("color: #555;")

        self.samplerCombo = QComboBox()
        self.samplerCombo.setObjectName("samplerCombo")
        for s in SAMPLERS:
            self.samplerCombo.addItem(SAMPLER_NAMES[s], s)
            self.samplerCombo.setItemData(self.samplerCombo.count() - 1, SAMPLER_TIPS[s], Qt.ItemDataRole.ToolTipRole)
        self.samplerCombo.setCurrentIndex(SAMPLERS.index("ddim"))
        self.samplerCombo.currentIndexChanged.connect(self._on_sampler_changed)
        self.stepsSpin = QSpinBox()
        self.stepsSpin.setObjectName("stepsSpin")
        self.stepsSpin.setRange(1, 1000)
        self.stepsSpin.setToolTip("Model calls N: the sampler visits N of the T timesteps (changing the sampler "
                                  "resets it to that sampler's default: DDPM T, DDIM 50, DPM-Solver++ 20)")
        self.etaSpin = QDoubleSpinBox()
        self.etaSpin.setObjectName("etaSpin")
        self.etaSpin.setRange(0.0, 1.0)
        self.etaSpin.setSingleStep(0.1)
        self.etaSpin.setDecimals(2)
        self.etaSpin.setToolTip("DDIM's η: σ_t = η·√((1−ᾱ_{t−1})/(1−ᾱ_t))·√(1−ᾱ_t/ᾱ_{t−1}); "
                                "0 = deterministic DDIM, 1 = DDPM-like noise")
        self.seedSpin = QSpinBox()
        self.seedSpin.setObjectName("seedSpin")
        self.seedSpin.setRange(0, 2**31 - 1)
        self.seedSpin.setToolTip("Sampling seed: all noise comes from a CPU torch.Generator seeded with it, so a "
                                 "seed gives the same images on every device and as `ddpm sample --seed`")
        self.diceButton = QToolButton()
        self.diceButton.setObjectName("diceButton")
        self.diceButton.setText("⚄")
        self.diceButton.setToolTip("A random seed")
        self.diceButton.clicked.connect(self._roll_seed)
        self.batchSpin = QSpinBox()
        self.batchSpin.setObjectName("batchSpin")
        self.batchSpin.setRange(1, MAX_BATCH)
        self.batchSpin.setValue(1)
        self.batchSpin.setToolTip("Batch size: how many images to generate at once, shown as a grid "
                                  "(one batch, one model call per step)")
        self.deviceCombo = QComboBox()
        self.deviceCombo.setObjectName("deviceCombo")
        have = set(available_devices())
        for d in DEVICES:
            self.deviceCombo.addItem({"auto": f"auto ({available_devices()[0]})", "cpu": "CPU", "cuda": "CUDA",
                                      "mps": "MPS"}[d], d)
            if d != "auto" and d not in have:
                self.deviceCombo.model().item(self.deviceCombo.count() - 1).setEnabled(False)
        self.deviceCombo.setToolTip("Where the model runs: auto = CUDA, then MPS, then CPU. Noise is drawn on the "
                                    "CPU, so a seed gives the same images on every device.")
        self.deviceCombo.currentIndexChanged.connect(self._on_device_changed)
        self.classLabel = QLabel("Class")
        self.classCombo = QComboBox()
        self.classCombo.setObjectName("classCombo")
        self.classCombo.setToolTip("The class to generate (class-conditional models): any = unconditional, "
                                   "each class in turn = image i gets class i mod K")
        self.classCombo.currentIndexChanged.connect(self._on_class_changed)
        self.guidanceLabel = QLabel("Guidance w")
        self.guidanceSpin = QDoubleSpinBox()
        self.guidanceSpin.setObjectName("guidanceSpin")
        self.guidanceSpin.setRange(0.0, 20.0)
        self.guidanceSpin.setSingleStep(0.5)
        self.guidanceSpin.setValue(1.0)
        self.guidanceSpin.setToolTip("Classifier-free guidance (Ho & Salimans 2022): ε̃ = ε(x_t, ∅) + w·(ε(x_t, c) − "
                                     "ε(x_t, ∅)); w = 1 is plain conditional sampling, w > 1 sharper classes")
        self.startCombo = QComboBox()
        self.startCombo.setObjectName("startCombo")
        self.startCombo.addItem("Pure noise", PURE_NOISE)
        self.startCombo.addItem("Denoise from here (the photo at the slider's t)", FROM_HERE)
        self.startCombo.setToolTip("Pure noise: x_T ~ N(0, I). Denoise from here (SDEdit): the photo, resized to "
                                   "the model's resolution, noised to the slider's t with x_t = √ᾱ_t·x_0 + "
                                   "√(1−ᾱ_t)·ε, then denoised — reconstruction at small t, hallucination at large t")
        self.startCombo.currentIndexChanged.connect(self._on_start_changed)
        self.startNote = _TextLine(color="#555")
        self.startNote.setObjectName("startNote")
        self.startNote.setText("x_T ~ N(0, I)")
        self.window_.timestepChanged.connect(lambda _t: self._on_start_changed())

        self.generateButton = QPushButton("Generate")
        self.generateButton.setObjectName("generateButton")
        self.generateButton.setToolTip("Run the reverse chain x_T → x_0 on a worker thread (Ctrl+G)")
        self.generateButton.setDefault(True)
        self.generateButton.clicked.connect(self.generate)
        self.cancelButton = QPushButton("Cancel")
        self.cancelButton.setObjectName("cancelButton")
        self.cancelButton.setToolTip("Stop the run after the model call in progress (Esc)")
        self.cancelButton.clicked.connect(self.cancel)
        self.followCheck = QCheckBox("slider follows t")
        self.followCheck.setObjectName("followTimestepCheck")
        self.followCheck.setChecked(True)
        self.followCheck.setToolTip("Move the window's timestep slider and the schedule plot's marker to the t of "
                                    "the frame shown (when the model's T equals the window schedule's T; once a "
                                    "second during a run, every frame when scrubbing)")
        self.progressBar = QProgressBar()
        self.progressBar.setObjectName("generateProgress")
        self.progressBar.setToolTip("Model calls done / N")
        self.progressBar.setFormat("%v / %m")
        self.statusLabel = _TextLine(lines=2)
        self.statusLabel.setObjectName("generateStatus")

        self.xtPane = ImagePane("<b>x<sub>t</sub></b>", "generateXtPane",
                                "The current state x_t of the reverse chain (the whole batch as a grid). "
                                "Wheel: zoom, drag: pan")
        self.x0Pane = ImagePane("<b>x̂<sub>0</sub></b> — the model's guess of the clean image", "generateX0Pane",
                                "x̂_0 = (x_t − √(1−ᾱ_t)·ε̂)/√ᾱ_t: the model's prediction of the final image at "
                                "this step (clipped to [−1, 1] as the sampler uses it)")
        self.x0Pane.link_to(self.xtPane)
        self.stepLabel = _TextLine(align=Qt.AlignmentFlag.AlignHCenter)
        self.stepLabel.setObjectName("generateStepLabel")
        self.stepLabel.setToolTip("The frame shown: model call k of N, at timestep t")

        self.replayButton = QPushButton("▶")
        self.replayButton.setObjectName("replayButton")
        self.replayButton.setCheckable(True)
        self.replayButton.setToolTip("Replay the last run's recorded steps (about 4 s)")
        self.replayButton.setFixedWidth(36)
        self.replayButton.toggled.connect(self._on_replay)
        self.timelineSlider = QSlider(Qt.Orientation.Horizontal)
        self.timelineSlider.setObjectName("timelineSlider")
        self.timelineSlider.setToolTip("Scrub through every recorded step of the last run (x_t and x̂_0)")
        self.timelineSlider.valueChanged.connect(self._on_timeline)
        self.timelineLabel = _TextLine(width=self.fontMetrics().horizontalAdvance("0000/0000 (1 step in 16 kept)"))
        self.timelineLabel.setObjectName("timelineLabel")
        self.timelineLabel.setText("–")
        self.exportButton = QToolButton()
        self.exportButton.setObjectName("exportButton")
        self.exportButton.setText("Export ▾")
        self.exportButton.setToolTip("Save the last run: GIF or APNG of every recorded step, a PNG grid of the "
                                     "progression, the final samples, or a folder of numbered PNG frames")
        self.exportButton.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        menu = QMenu(self.exportButton)
        menu.setObjectName("exportMenu")
        for kind, text in (("gif", "Animation (GIF)…"), ("apng", "Animation (APNG)…"),
                           ("grid", "Progression grid (PNG)…"), ("final", "Final samples (PNG)…"),
                           ("frames", "Folder of numbered PNG frames…")):
            a = QAction(text, menu)
            a.setObjectName(f"export{kind.capitalize()}Action")
            a.triggered.connect(lambda _c=False, k=kind: self._export_dialog(k))
            menu.addAction(a)
        self.exportButton.setMenu(menu)

        form = QGridLayout()
        form.setHorizontalSpacing(8)
        form.addWidget(QLabel("Model"), 0, 0)
        form.addWidget(self.modelCombo, 0, 1, 1, 5)
        form.addWidget(self.modelNote, 1, 1, 1, 5)
        form.addWidget(QLabel("Sampler"), 2, 0)
        form.addWidget(self.samplerCombo, 2, 1)
        form.addWidget(QLabel("Steps"), 2, 2)
        form.addWidget(self.stepsSpin, 2, 3)
        form.addWidget(QLabel("η"), 2, 4)
        form.addWidget(self.etaSpin, 2, 5)
        form.addWidget(QLabel("Seed"), 3, 0)
        seed_row = QHBoxLayout()
        seed_row.setSpacing(2)
        seed_row.addWidget(self.seedSpin, 1)
        seed_row.addWidget(self.diceButton)
        form.addLayout(seed_row, 3, 1)
        form.addWidget(QLabel("Batch"), 3, 2)
        form.addWidget(self.batchSpin, 3, 3)
        form.addWidget(QLabel("Device"), 3, 4)
        form.addWidget(self.deviceCombo, 3, 5)
        form.addWidget(self.classLabel, 4, 0)
        form.addWidget(self.classCombo, 4, 1)
        form.addWidget(self.guidanceLabel, 4, 2)
        form.addWidget(self.guidanceSpin, 4, 3)
        form.addWidget(QLabel("Start"), 5, 0)
        form.addWidget(self.startCombo, 5, 1, 1, 5)
        form.addWidget(self.startNote, 6, 1, 1, 5)
        form.setColumnStretch(1, 2)
        form.setColumnStretch(3, 1)
        form.setColumnStretch(5, 1)

        buttons = QHBoxLayout()
        buttons.addWidget(self.generateButton, 2)
        buttons.addWidget(self.cancelButton, 1)
        buttons.addWidget(self.followCheck)

        panes = QHBoxLayout()
        panes.setSpacing(6)
        panes.addWidget(self.xtPane, 1)
        panes.addWidget(self.x0Pane, 1)

        timeline = QHBoxLayout()
        timeline.addWidget(self.replayButton)
        timeline.addWidget(self.timelineSlider, 1)
        timeline.addWidget(self.timelineLabel)
        timeline.addWidget(self.exportButton)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progressBar)
        layout.addWidget(self.statusLabel)
        layout.addLayout(panes, 1)
        layout.addWidget(self.stepLabel)
        layout.addLayout(timeline)
        for w in (self.classCombo, self.guidanceSpin, self.classLabel, self.guidanceLabel):
            w.setVisible(False)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)

        gen = QShortcut(QKeySequence("Ctrl+G"), self.window_)
        gen.setObjectName("generateShortcut")
        gen.activated.connect(self._shortcut_generate)
        self._esc = QShortcut(QKeySequence(Qt.Key.Key_Escape), self.window_)
        self._esc.setObjectName("cancelShortcut")
        self._esc.setEnabled(False)  # only while a run is in flight, so Esc keeps its other uses
        self._esc.activated.connect(self.cancel)

    def _shortcut_generate(self) -> None:
        self.window_.show_panel(self)
        self.generate()


def _set_progress(bar: QProgressBar, value: int) -> None:
    """``bar.setValue(value)`` without the synchronous ``repaint()`` QProgressBar does inside it (9 ms a frame
    offscreen on a loaded machine); the bar is repainted with the rest of the window instead."""
    bar.setUpdatesEnabled(False)
    bar.setValue(value)
    bar.setUpdatesEnabled(True)   # schedules an ordinary update()


def _preload_model(cache: ModelCache, key: tuple, loader) -> str:
    """Load into the cache on the worker thread; returns only the name (a model never crosses threads as a
    payload: the worker copies payloads)."""
    return cache.get(key, loader).name
