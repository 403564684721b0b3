"""The Generate panel: run the reverse chain on a worker thread and watch x_t and x̂_0 emerge, step by step.

A view over :mod:`core.jobs.generate`: the click turns the widgets into a :class:`~core.jobs.generate.GenerateJob`;
a :class:`~ddpm_gui.worker.WorkerRunner` runs :func:`~core.jobs.generate.generate_frames` (which loads the model
and calls :func:`core.samplers.sample` exactly as ``ddpm sample`` does) on its own thread. Every step is recorded
in the worker; only the newest frame reaches the UI, at most 30 times a second. After the run a timeline replays
every recorded step and the run can be exported (GIF, APNG, a PNG grid, the final samples, numbered PNG frames).

``GeneratePanel.install(window)`` adds it to a :class:`~ddpm_gui.main_window.MainWindow` as the "Generate" tab.
"""
from __future__ import annotations

import secrets
import time
from pathlib import Path

from PySide6.QtCore import QSettings, QSignalBlocker, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence, QShortcut
from PySide6.QtWidgets import (QCheckBox, QFileDialog, QGridLayout, QHBoxLayout, QLabel, QMenu, QProgressBar,
                               QPushButton, QSizePolicy, QSlider, QToolButton, QVBoxLayout)

from core.device import pick_device
from core.jobs.generate import (EXPORT_MENU, EXPORTS, PAINT_BUDGET, PAINT_DUTY, SAMPLER_TIPS, TIPS, GenerateJob,
                                LivePacer, ModelRequests, Recording, RunFrame, class_choices, class_labels, export_name,
                                export_target, export_writer, generate_frames, model_note, preload_model, start_from)
from core.jobs.generate_latent import PREVIEW_SHARE, LatentJob, latent_frames, pipeline_loading, pipeline_note
from core.images import beside
from core.messages import one_line
from core.model_spec import FOLDER, ORACLE, PHOTO, ModelCache, parse_spec
from core.models.load import is_latent_spec, load_model   # read from here at each request: tests swap load_model
from core.outputs import check_output_file, refuse_overwriting_inputs, spec_paths
from core.samplers import SAMPLER_NAMES, SAMPLERS, default_steps
from core.samplers.timesteps import max_steps
from ddpm_gui.image_views import ImagePane
from ddpm_gui.prompt_box import PromptBox
from ddpm_gui.widgets import (JobPanel, ModelMenu, TextLine, button, combo_box, device_combo, hbox, named, row,
                              spin_box)
from ddpm_gui.worker import WorkerRunner

ORACLE_FOLDER = "oracle-folder"   # current_model()'s kind for an oracle over a photo file or a folder of images
RECENT_KEY = "generate/recentModels"
MAX_BATCH = 64
REPLAY_FPS = 30
FOLLOW_INTERVAL = 1.0     # during a run the window's slider follows t once a second (its photo costs ~2× x_t, x̂_0)
PURE_NOISE, FROM_HERE = "noise", "here"


class GeneratePanel(JobPanel):
    """The Generate tab. Build it with the main window it belongs to (for the photo, the slider, the schedule
    and its worker runners); ``settings`` remembers the model folders chosen from disk."""

    TITLE = "Generate"
    runStarted = Signal()
    stepPainted = Signal(int)         # a frame of the live run (its step index) was handed to the views
    framePainted = Signal(object)     # … and its picture, uint8 H×W×3 (x_t beside x̂_0), live or replayed
    pipelineChanged = Signal(object)  # the LatentPipeline that became the model, or None for a pixel model
    runFinished = Signal(object)      # the final samples, N×C×H×W float32
    runCancelled = Signal(int)        # the number of steps done
    runEnded = Signal()               # after any of the three (or runFailed)
    modelReady = Signal(str)          # a model was loaded (its name) and the class widgets are up to date

    @classmethod
    def install(cls, window, settings: QSettings | None = None) -> "GeneratePanel":
        panel = cls(window, settings=settings)
        window.add_panel("Generate", panel)
        return panel

    def __init__(self, window, settings: QSettings | None = None, parent=None):
        super().__init__(window, parent)
        self.setObjectName("generatePanel")
        self._settings = settings
        self.cache = ModelCache()
        self.runner: WorkerRunner = window.create_runner("generate")
        self._load_runner: WorkerRunner = window.create_runner("generate-model")
        self._pipe_runner: WorkerRunner = window.create_runner("generate-pipeline")
        self.recording: Recording | None = None
        self._live: Recording | None = None
        self._running = False
        self._cancel_requested = False
        self._click_time = 0.0
        self.first_frame_latency: float | None = None
        self.frames_painted = 0
        self._requests = ModelRequests()
        self.paint_budget, self.paint_duty = PAINT_BUDGET, PAINT_DUTY
        self.preview_share = PREVIEW_SHARE   # a pipeline run's preview decoding: this share of sampling at most
        self._pacer = LivePacer()
        self._shown: RunFrame | None = None
        self._last_follow = 0.0
        self._poll_timer = QTimer(self)
        self._poll_timer.setSingleShot(True)
        self._poll_timer.timeout.connect(self._poll)
        self._replay_timer = QTimer(self)
        self._replay_timer.setInterval(int(1000 / REPLAY_FPS))
        self._replay_timer.timeout.connect(self._replay_tick)
        self._pipe = None               # the Stable Diffusion pipeline that is the model (None: a pixel model)
        self._pipe_spec: str | None = None
        self._accepted: str | None = None   # the SPEC the panel's model comes from (a failed load goes back to it)
        self._loading: str | None = None   # the pipeline SPEC being loaded
        self._build_ui()
        self._accepted = self.modelCombo.spec()
        self._on_sampler_changed()
        self._set_running(False)
        self._set_status("Choose a model and click Generate (Ctrl+G).")
        window.imageChanged.connect(self._on_photo_changed)
        window.scheduleChanged.connect(lambda _s: self._update_class_widgets())
        window.timestepChanged.connect(lambda _t: self._on_start_changed())
        QTimer.singleShot(0, self._preload)

    # ----- public API ------------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._running

    def current_model(self) -> tuple[str, str | None]:
        """(kind, value) of the selected model entry: (builtin, SPEC), (photo, None), (oracle,
        "oracle:builtin:mnist"), (oracle-folder, PATH) or (folder, PATH)."""
        spec = parse_spec(self.modelCombo.spec())
        if spec.kind == PHOTO:
            return PHOTO, None
        if spec.kind == ORACLE and spec.is_path:
            return ORACLE_FOLDER, spec.value
        return spec.kind, spec.value if spec.kind == FOLDER else str(spec)

    def select_model(self, spec: str) -> None:
        """Select a model by any SPEC ``ddpm sample --model`` takes (``builtin:NAME``, ``oracle:TARGET``, a model
        or Stable Diffusion pipeline folder, a Hugging Face repo id in the local cache; new folders are added to
        the list and remembered) or ``photo`` (the oracle over the loaded photo). A pipeline loads on a worker
        (``pipelineChanged`` when it is the model); one that cannot load keeps the previous model."""
        self.modelCombo.select(spec)

    def current_pipeline(self):
        """The Stable Diffusion pipeline that is the panel's model, or None (a pixel model)."""
        return self._pipe

    @property
    def loading(self) -> bool:
        """True while a pipeline is loading."""
        return self._loading is not None

    def set_start(self, mode: str) -> None:
        """``"noise"`` (pure noise x_T) or ``"here"`` (the photo noised to the slider's t)."""
        self.startCombo.setCurrentIndex(self.startCombo.findData(mode))

    def generate(self) -> bool:
        """Start a run with the current settings; False (with a one-line message) when the input is not usable."""
        if self._running:
            self._set_status("A run is in progress: Cancel it first (Esc).")
            return False
        if self._loading is not None:
            self._set_status("The pipeline is still loading: wait, or Cancel it (Esc).")
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
        latent = isinstance(job, LatentJob)
        loaded = latent or self.cache.peek(job.model_key) is not None
        self._set_status("Generating…" if loaded else "Loading the model…")
        if latent:
            self.prompts.remember_prompt()
        self._click_time = time.perf_counter()
        self._pacer = LivePacer(self.paint_budget, self.paint_duty)   # its clocks start now
        fn, args = (latent_frames, (job, self._pipe)) if latent else (generate_frames, (job, self.cache))
        try:
            self.runner.start(fn, *args, self._live,
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
        """Ask the run in flight to stop; it stops after the model call it is in (the status says so at once).
        A pipeline that is loading is abandoned at once (the previous model stays)."""
        if self._loading is not None:
            self._pipe_runner.discard()
            self._on_load_failed(self._loading, "loading cancelled")
            return True
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
        try:
            write = export_writer(kind, self.recording)
            if kind == "frames":
                refuse_overwriting_inputs([path], [*self.window_.input_paths(), *self.export_inputs()])
                if not Path(path).exists():
                    check_output_file(path)   # its parent folder exists and is writable
            else:
                self.window_.check_output_target(path, self.export_inputs())
            write(path, self.recording)
        except Exception as e:  # noqa: BLE001 - always one line
            msg = one_line(e)
            self._fail(msg if str(path) in msg else f"{path}: {msg}", title="Export")
            return False
        self.window_.statusBar().showMessage(f"Wrote {path}", 8000)
        return True

    def export_inputs(self) -> list[Path]:
        """The files of the models the last run and the current choice read (model folders, oracle photos and
        image folders): an export never replaces one of them."""
        job = getattr(self, "_job", None)
        specs = {s for s in (getattr(job, "spec", None), self.modelCombo.spec()) if s and s != PHOTO}
        return [p for spec in sorted(specs) for p in spec_paths(spec)]

    # ----- the model ---------------------------------------------------------------------------------------------
    def _on_model_changed(self, _spec: str = "") -> None:
        spec = self.modelCombo.spec()
        if is_latent_spec(spec):
            self._load_pipeline(spec)
            return
        if self._loading is not None:
            self._pipe_runner.discard()
            self._loading = None
        self._accepted = spec
        if self._pipe is not None:
            self._set_pipeline(None, None)
        self._update_class_widgets()
        self._on_model_T()
        self._preload()

    # ----- a Stable Diffusion pipeline ---------------------------------------------------------------------------
    def _load_pipeline(self, spec: str) -> None:
        """Load the pipeline SPEC on the worker (stages in the progress bar, Cancel abandons it); it becomes the
        model when it has loaded. The shared cache gives it at once when another panel loaded it."""
        self._loading = spec
        self._set_running(False)
        self.progressBar.setRange(0, 4)
        _set_progress(self.progressBar, 0)
        self.progressBar.setFormat("loading %v / %m")
        self._set_status(f"Loading {spec}…")
        try:
            self._pipe_runner.start(pipeline_loading, spec, self._device(), self._pipe, self._pipe_spec,
                                    on_yield=self._on_load_stage,
                                    on_finished=lambda r, s=spec: self._on_pipeline_loaded(s, r.pipe),
                                    on_cancelled=lambda _n, s=spec: self._on_load_failed(s, "loading cancelled"),
                                    on_error=lambda e, s=spec: self._on_load_failed(s, one_line(e)))
        except RuntimeError:  # the window is closing
            self._loading = None

    def _on_load_stage(self, stage) -> None:
        k, n, name = stage
        self.progressBar.setRange(0, n)
        _set_progress(self.progressBar, k - 1)
        self._set_status(f"Loading {self._loading}: {name} ({k}/{n})…")

    def _on_pipeline_loaded(self, spec: str, pipe) -> None:
        self._loading = None
        self._accepted = spec
        self._set_running(False)
        self.progressBar.setFormat("%v / %m")
        self.progressBar.setRange(0, 1)
        self.progressBar.setValue(0)
        self._set_pipeline(spec, pipe)
        self._set_status(f"{pipe.name} loaded: type a prompt and click Generate (Ctrl+G).")
        self.modelReady.emit(pipe.name)

    def _on_load_failed(self, spec: str, reason: str) -> None:
        """The pipeline SPEC did not load: say why in one line and go back to the previous model's entry."""
        if self._loading != spec:
            return
        self._loading = None
        self.progressBar.setFormat("%v / %m")
        self.progressBar.setRange(0, 1)
        self.progressBar.setValue(0)
        i = self.modelCombo.find(self._accepted)
        if i >= 0:
            self.modelCombo.set_quietly(i)
        self._set_running(False)
        if reason == "loading cancelled":
            self._set_status(f"{spec}: loading cancelled; the model is still {self._accepted}.")
        else:
            self._fail(reason)
            self.modelNote.setText(f"Cannot load: {reason}")

    def _set_pipeline(self, spec: str | None, pipe) -> None:
        """Make ``pipe`` (or no pipeline) the model: show the prompt widgets or the class widgets."""
        changed = pipe is not self._pipe
        self._pipe, self._pipe_spec = pipe, spec
        self.prompts.setVisible(pipe is not None)
        if pipe is not None:
            from core.latent.decoders import find_taesd
            try:
                taesd = find_taesd() is not None
            except Exception:  # noqa: BLE001 - an unreadable cache: no TAESD
                taesd = False
            self.prompts.set_pipeline(pipe, taesd)
            self.modelNote.setText(pipeline_note(pipe))
        self._update_class_widgets()
        self._on_model_T()
        self._on_parts_toggled()
        if changed:
            self.pipelineChanged.emit(pipe)

    def _device(self) -> str:
        return str(pick_device(self.deviceCombo.currentData() or "auto"))

    def _model_request(self, device: str) -> tuple[tuple, object, str | None]:
        """(cache key, loader, the SPEC whose files it reads) for the chosen model on ``device``."""
        w = self.window_
        return self._requests(self.modelCombo.spec(), device, load_model, w.photo_path, w.x0)

    def _preload(self) -> None:
        """Load the selected model in the background (so the first Generate starts at once and the class widgets
        know the model); failures only show in the model note. A pipeline loads in :meth:`_load_pipeline`."""
        if self._pipe is not None or self._loading is not None:
            return
        try:
            key, loader, _ = self._model_request(self._device())
        except ValueError as e:
            self.modelNote.setText(one_line(e))
            return
        if self.cache.peek(key) is not None:
            self._update_class_widgets()
            return
        try:
            self._load_runner.start(preload_model, self.cache, key, loader,
                                    on_finished=lambda _m, k=key: self._on_preloaded(k),
                                    on_error=lambda e: self.modelNote.setText(f"Cannot load: {one_line(e)}"))
        except RuntimeError:  # the window is closing: its runners were shut down
            return
        self.modelNote.setText("Loading…")

    def _on_preloaded(self, key: tuple) -> None:
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
        if self._pipe is not None:
            return self._pipe.denoiser.schedule.T
        model = self._loaded_model()
        if model is not None and model.schedule is not None:
            return model.schedule.T
        return self.window_.schedule.T

    def _update_class_widgets(self) -> None:
        model = self._loaded_model() if self._pipe is None else None
        guided = getattr(model, "guide", None) is not None
        if guided and self.autoguidanceSpin.property("model") != model.name:
            self.autoguidanceSpin.setValue(model.weight)   # a newly chosen model starts at its own weight
        self.autoguidanceSpin.setProperty("model", model.name if guided else None)
        for w in (self.autoguidanceLabel, self.autoguidanceSpin):
            w.setVisible(guided)
        if self._pipe is not None:
            for w in (self.classCombo, self.guidanceSpin, self.classLabel, self.guidanceLabel):
                w.setVisible(False)
            return
        k = int(getattr(model, "num_classes", 0) or 0)
        if model is not None:
            self.modelNote.setText(model_note(model, self.window_.schedule.T))
        if k != self.classCombo.property("numClasses"):
            with QSignalBlocker(self.classCombo):
                self.classCombo.clear()
                for text, choice in class_choices(k):
                    self.classCombo.addItem(text, choice)
            self.classCombo.setProperty("numClasses", k)
        for w in (self.classCombo, self.guidanceSpin, self.classLabel, self.guidanceLabel):
            w.setVisible(k > 0)
        self._on_class_changed()

    # ----- the job ---------------------------------------------------------------------------------------------
    def _make_job(self) -> GenerateJob | LatentJob:
        if self._pipe is not None:
            return self._make_latent_job()
        device = self._device()
        key, loader, spec = self._model_request(device)
        labels = class_labels(self.classCombo.currentData(), int(self.classCombo.property("numClasses") or 0),
                              self.batchSpin.value())
        w = self.window_
        start = start_from(w.timestep, w.photo_path, w.x0) if self.startCombo.currentData() == FROM_HERE else {}
        sampler = self.samplerCombo.currentData()
        return GenerateJob(model_key=key, loader=loader, spec=spec, sampler=sampler, steps=self.stepsSpin.value(),
                           eta=self.etaSpin.value() if sampler == "ddim" else 0.0, seed=self.seedSpin.value(),
                           n=self.batchSpin.value(), class_labels=labels,
                           guidance=self.guidanceSpin.value() if labels is not None else 1.0, device=device,
                           schedule=w.schedule, autoguidance=(self.autoguidanceSpin.value()
                                                              if self.autoguidanceSpin.isVisible() else None),
                           **start)

    def _make_latent_job(self) -> LatentJob:
        box, w = self.prompts, self.window_
        height, width = box.image_size()
        self._pipe.latent_size(height, width)   # one line if the size does not fit
        start = {}
        if self.startCombo.currentData() == FROM_HERE:
            if w.photo_path is None and w.x0 is None:
                raise ValueError("denoise from here needs a photo: open one first")
            start = ({"init_path": str(w.photo_path)} if w.photo_path is not None
                     else {"init_array": w.x0.copy()})
            start["t_start"] = w.timestep
        sampler = self.samplerCombo.currentData()
        return LatentJob(spec=self._pipe_spec, prompt=box.prompt(), negative_prompt=box.negative_prompt(),
                         guidance=box.guidance(), height=height, width=width, n=self.batchSpin.value(),
                         seed=self.seedSpin.value(), sampler=sampler, steps=self.stepsSpin.value(),
                         eta=self.etaSpin.value() if sampler == "ddim" else 0.0, preview=box.preview(),
                         guidance_parts=self.prompts.guidancePartsCheck.isChecked(),
                         preview_share=self.preview_share, **start)

    # ----- the live run ------------------------------------------------------------------------------------------
    def _poll(self) -> None:
        """Show the newest step of the live run when the run's :class:`~core.jobs.generate.LivePacer` says so (at
        most 30 times a second and within a share of the sampler's CPU time), and come back later."""
        live = self._live
        if live is None:
            return
        frame = live.latest
        paint, wait_ms = self._pacer.next(frame is not None and frame is not self._shown, self._shown is None)
        if paint:
            self._paint(frame)
        self._poll_timer.start(wait_ms)

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
            self._set_status(frame.progress_line())
        _set_progress(self.progressBar, frame.index)
        self.frames_painted += 1
        self.stepPainted.emit(frame.index)

    def _show(self, frame: RunFrame, follow: bool = True) -> None:
        xt, x0 = frame.xt, frame.x0
        self.xtPane.set_image(xt)
        self.x0Pane.set_image(x0)
        parts = getattr(frame, "parts", None)
        if parts is not None and self.partsRow.isVisible():
            self.uncondPane.set_image(parts[0])
            self.condPane.set_image(parts[1])
        self.framePainted.emit(beside(xt, x0))
        self.stepLabel.setText(f"step {frame.index}/{frame.total}   t = {frame.t}")
        w = self.window_
        rec = self._live if self._live is not None else self.recording
        if follow and self.followCheck.isChecked() and rec is not None and w.schedule.T == rec.schedule_T:
            w.set_timestep(frame.t)

    def _on_finished(self, final) -> None:
        self._paint_last()
        self._set_status(self._live.done_line(self._job.sampler, self._job.seed))
        self.runFinished.emit(final)

    def _on_cancelled(self, n: int) -> None:
        self._paint_last()
        self._set_status((self._live if self._live is not None else Recording()).cancelled_line(n))
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

    def _set_running(self, on: bool) -> None:
        self._running = on
        busy = on or self._loading is not None
        self.generateButton.setEnabled(not busy)
        self.cancelButton.setEnabled(busy)
        self._esc.setEnabled(busy)
        for w in (self.timelineSlider, self.replayButton, self.exportButton):
            w.setEnabled(not on and self.recording is not None and len(self.recording) > 0)
        if not on and self.progressBar.maximum() == 0:   # ended before its first step: no bar, no "0 / 1"
            self.progressBar.setRange(0, 1)
            self.progressBar.setValue(0)
            self.progressBar.setFormat("")
        elif on:
            self.progressBar.setFormat("%v / %m")

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
        self._show(rec.frames[min(max(i, 0), len(rec) - 1)])
        self.timelineLabel.setText(rec.timeline_label(i))

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
        pipe = self.current_pipeline()
        offset = int(getattr(pipe.denoiser, "steps_offset", 0)) if pipe is not None else 0
        leading = (getattr(pipe.denoiser, "timestep_spacing", None) if pipe is not None else None) in (None, "leading")
        cap = T - offset if leading and sampler != "dpmpp2m" else max_steps(T, sampler == "dpmpp2m")
        self.stepsSpin.setMaximum(min(cap, max_steps(T, sampler == "dpmpp2m")))
        self.stepsSpin.setValue(min(default_steps(sampler, T), self.stepsSpin.maximum()))
        self.etaSpin.setEnabled(sampler == "ddim")
        self.samplerCombo.setToolTip(SAMPLER_TIPS[sampler])

    def _on_model_T(self) -> None:
        """A model was selected or loaded: keep the user's steps unless the number of timesteps T changed."""
        pipe = self.current_pipeline()
        key = (self._model_T(), getattr(pipe.denoiser, "steps_offset", 0) if pipe is not None else 0)
        if key != getattr(self, "_steps_key", None):
            self._steps_key = key
            self._on_sampler_changed()

    def _on_class_changed(self, *_args) -> None:
        self.guidanceSpin.setEnabled(self.classCombo.currentData() is not None)

    def _on_start_changed(self, *_args) -> None:
        here = self.startCombo.currentData() == FROM_HERE
        self.startNote.setText(f"from t = {self.window_.timestep}: the photo noised by eq. 5, then denoised"
                               if here else "x_T ~ N(0, I)")

    def _on_parts_toggled(self, *_args) -> None:
        self.partsRow.setVisible(self._pipe is not None and self.prompts.guidancePartsCheck.isChecked())

    def _on_photo_changed(self) -> None:
        if self.modelCombo.spec() == PHOTO and not self._running:
            self._preload()

    def _roll_seed(self) -> None:
        self.seedSpin.setValue(secrets.randbelow(self.seedSpin.maximum() + 1))

    def _export_dialog(self, kind: str) -> None:
        rec = self.recording
        name = export_name(rec.model_name if rec else "run", self.seedSpin.value(), kind)
        if kind == "frames":
            chosen = QFileDialog.getExistingDirectory(self, "Export frames into a new folder", "")
        else:
            chosen, _ = QFileDialog.getSaveFileName(self, "Export the run", name, EXPORTS[kind][2])
        if chosen:
            self.export(kind, export_target(kind, chosen, name))

    # ----- UI ----------------------------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        self.modelCombo = ModelMenu("modelCombo", TIPS["modelCombo"], settings=self._settings, settings_key=RECENT_KEY)
        self.modelCombo.specChanged.connect(self._on_model_changed)
        self.modelNote = named(QLabel(""), "modelNote")
        self.modelNote.setWordWrap(True)
        self.modelNote.setStyleSheet("color: #555;")

        self.samplerCombo = combo_box("samplerCombo", None, [(SAMPLER_NAMES[s], s, SAMPLER_TIPS[s]) for s in SAMPLERS])
        self.samplerCombo.setCurrentIndex(SAMPLERS.index("ddim"))
        self.samplerCombo.currentIndexChanged.connect(self._on_sampler_changed)
        self.stepsSpin = spin_box("stepsSpin", TIPS["stepsSpin"], 1, 1000)
        self.etaSpin = spin_box("etaSpin", TIPS["etaSpin"], 0.0, 1.0, step=0.1, decimals=2)
        self.seedSpin = spin_box("seedSpin", TIPS["seedSpin"], 0, 2**31 - 1)
        self.diceButton = button("⚄", "diceButton", "A random seed", self._roll_seed, QToolButton)
        self.batchSpin = spin_box("batchSpin", TIPS["batchSpin"], 1, MAX_BATCH, value=1)
        self.deviceCombo = device_combo()
        self.deviceCombo.currentIndexChanged.connect(lambda _i: self._on_model_changed())
        self.classLabel = QLabel("Class")
        self.classCombo = combo_box("classCombo", TIPS["classCombo"], [])
        self.classCombo.currentIndexChanged.connect(self._on_class_changed)
        self.guidanceLabel = QLabel("Guidance w")
        self.guidanceSpin = spin_box("guidanceSpin", TIPS["guidanceSpin"], 0.0, 20.0, value=1.0, step=0.5)
        self.autoguidanceLabel = QLabel("Autoguidance")
        self.autoguidanceSpin = spin_box("autoguidanceSpin", TIPS["autoguidanceSpin"], 0.0, 10.0, value=1.0,
                                         step=0.25)
        self.startCombo = combo_box("startCombo", TIPS["startCombo"], [
            ("Pure noise", PURE_NOISE), ("Denoise from here (the photo at the slider's t)", FROM_HERE)])
        self.startCombo.currentIndexChanged.connect(self._on_start_changed)
        self.startNote = named(TextLine(color="#555"), "startNote")
        self.startNote.setText("x_T ~ N(0, I)")
        self.prompts = PromptBox(self._settings)
        self.prompts.setVisible(False)
        self.prompts.guidancePartsCheck.toggled.connect(self._on_parts_toggled)

        self.generateButton = button("Generate", "generateButton", "Run the reverse chain x_T → x_0 on a worker "
                                     "thread (Ctrl+G)", self.generate)
        self.generateButton.setDefault(True)
        self.cancelButton = button("Cancel", "cancelButton", "Stop the run after the model call in progress (Esc)",
                                   self.cancel)
        self.followCheck = named(QCheckBox("slider follows t"), "followTimestepCheck", TIPS["followTimestepCheck"])
        self.followCheck.setChecked(True)
        self.progressBar = named(QProgressBar(), "generateProgress", "Model calls done / N")
        self.progressBar.setFormat("%v / %m")
        self.statusLabel = named(TextLine(lines=2, tooltip_follows=True), "generateStatus")

        self.xtPane = ImagePane("<b>x<sub>t</sub></b>", "generateXtPane", TIPS["generateXtPane"])
        self.x0Pane = ImagePane("<b>x̂<sub>0</sub></b> — the model's guess of the clean image", "generateX0Pane",
                                TIPS["generateX0Pane"])
        self.x0Pane.link_to(self.xtPane)
        self.uncondPane = ImagePane("<b>x̂<sub>0</sub></b> unconditional — from ε(z<sub>t</sub>, ∅)",
                                    "generateUncondPane", "x̂_0 of the unconditional prediction (the empty or "
                                    "negative prompt)")
        self.condPane = ImagePane("<b>x̂<sub>0</sub></b> conditional — from ε(z<sub>t</sub>, c)", "generateCondPane",
                                  "x̂_0 of the prompt's prediction; guidance w extrapolates from the left one "
                                  "through this one")
        self.condPane.link_to(self.uncondPane)
        self.partsRow = row((self.uncondPane, 1), (self.condPane, 1))
        self.partsRow.setVisible(False)
        self.stepLabel = named(TextLine(align=Qt.AlignmentFlag.AlignHCenter), "generateStepLabel",
                               "The frame shown: model call k of N, at timestep t")

        self.replayButton = named(QPushButton("▶"), "replayButton", "Replay the last run's recorded steps (about 4 s)")
        self.replayButton.setCheckable(True)
        self.replayButton.setFixedWidth(36)
        self.replayButton.toggled.connect(self._on_replay)
        self.timelineSlider = named(QSlider(Qt.Orientation.Horizontal), "timelineSlider",
                                    "Scrub through every recorded step of the last run (x_t and x̂_0)")
        self.timelineSlider.valueChanged.connect(self._on_timeline)
        widest = self.fontMetrics().horizontalAdvance("0000/0000 (1 step in 16 kept)")
        self.timelineLabel = named(TextLine(width=widest), "timelineLabel")
        self.timelineLabel.setText("–")
        self.exportButton = named(QToolButton(), "exportButton", TIPS["exportButton"])
        self.exportButton.setText("Export ▾")
        self.exportButton.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        menu = named(QMenu(self.exportButton), "exportMenu")
        for kind, text in EXPORT_MENU:
            a = named(QAction(text, menu), f"export{kind.capitalize()}Action")
            a.triggered.connect(lambda _c=False, k=kind: self._export_dialog(k))
            menu.addAction(a)
        self.exportButton.setMenu(menu)

        form = QGridLayout()
        form.setHorizontalSpacing(8)
        seed_row = hbox((self.seedSpin, 1), (self.diceButton, 0), spacing=2)
        wide = 5   # columns a wide cell spans
        for r, cells in enumerate((("Model", (self.modelCombo, wide)), (None, (self.modelNote, wide)),
                                   ("Sampler", self.samplerCombo, "Steps", self.stepsSpin, "η", self.etaSpin),
                                   ("Seed", seed_row, "Batch", self.batchSpin, "Device", self.deviceCombo),
                                   (self.classLabel, self.classCombo, self.guidanceLabel, self.guidanceSpin,
                                    self.autoguidanceLabel, self.autoguidanceSpin),
                                   ("Start", (self.startCombo, wide)), (None, (self.startNote, wide)))):
            for c, cell in enumerate(cells):
                item, span = cell if isinstance(cell, tuple) else (cell, 1)
                if isinstance(item, QHBoxLayout):
                    form.addLayout(item, r, c)
                elif item is not None:
                    form.addWidget(QLabel(item) if isinstance(item, str) else item, r, c, 1, span)
        for col, stretch in ((1, 2), (3, 1), (5, 1)):
            form.setColumnStretch(col, stretch)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(form)
        layout.addWidget(self.prompts)
        layout.addLayout(hbox((self.generateButton, 2), (self.cancelButton, 1), (self.followCheck, 0)))
        layout.addWidget(self.progressBar)
        layout.addWidget(self.statusLabel)
        layout.addLayout(hbox((self.xtPane, 1), (self.x0Pane, 1), spacing=6), 2)
        layout.addWidget(self.partsRow, 1)
        layout.addWidget(self.stepLabel)
        layout.addLayout(hbox((self.replayButton, 0), (self.timelineSlider, 1), (self.timelineLabel, 0),
                               (self.exportButton, 0)))
        for w in (self.classCombo, self.guidanceSpin, self.classLabel, self.guidanceLabel):
            w.setVisible(False)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)

        gen = named(QShortcut(QKeySequence("Ctrl+G"), self.window_), "generateShortcut")
        gen.activated.connect(self._shortcut_generate)
        self._esc = named(QShortcut(QKeySequence(Qt.Key.Key_Escape), self.window_), "cancelShortcut")
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
