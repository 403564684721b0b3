"""DDPM Studio's main window: a photo, a timestep slider with live noising, and the schedule panel.

A thin view over ``core`` objects: the photo x_0 and what the view caches with its fixed noise ε
(:mod:`core.photo`), the schedule (owned by the :class:`~ddpm_gui.schedule_panel.SchedulePanel`),
:class:`core.forward.ForwardPreview` (x_0, ε, t → display pixels) and the readout (:mod:`core.readout`). A slider
change only records the newest t; x_t is rendered when the event loop gets to it, so fast drags skip t values
instead of queueing them. The histogram and the t marker follow, throttled; the strip, debounced. The Markov chain
(eq. 2 step by step) runs on a worker with cached checkpoints (:mod:`core.jobs.chain`).

For the panels (Generate, Train, ELBO):

- ``add_panel(title, widget)`` puts a widget in a tab beside the schedule panel; ``show_panel(widget)`` raises it.
- ``create_runner(name)`` gives a :class:`~ddpm_gui.worker.WorkerRunner` whose errors appear in a message box and
  which is stopped when the window closes.
- ``schedule`` / ``scheduleChanged``, ``timestep`` / ``set_timestep`` / ``timestepChanged``, ``x0``, ``noise``,
  ``seed`` / ``imageChanged`` and ``image_view`` (the x_t pane; ``image_view.set_image(u8)`` shows a frame).
- ``show_error(message)`` (a non-blocking message box + status bar) and ``statusBar().showMessage``.
- ``input_paths()`` / ``check_output_target(path)``: the files the window has read (photo, schedule file) and the
  check every export makes before writing (never one of the inputs, through symlinks and hard links too).

With a Stable Diffusion pipeline chosen in Generate, the "Latent space" toggle shows the photo's latents under the
slider instead (:mod:`ddpm_gui.latent_view`, ``window.latent``; ``set_pipeline(pipe)`` is the Generate panel's
``pipelineChanged``), and a pipeline's live frames can take over the image area (``window.takeover``).

Photos come in through :mod:`ddpm_gui.photo_intake` (``photoLoaded`` / ``photoFailed(message)``); the widgets and
menus are built by :mod:`ddpm_gui.window_ui`, the settings kept by :mod:`ddpm_gui.settings`.
"""
from __future__ import annotations

import html
import math
import secrets
import time
from pathlib import Path

import numpy as np
from PySide6.QtCore import QSettings, QSignalBlocker, Qt, QTimer, Signal
from PySide6.QtWidgets import QMainWindow, QMessageBox, QWidget
from superqt.utils import qdebounced, qthrottled

from core.forward import ForwardPreview, noise_strip, notes_timesteps, parse_timesteps
from core.images import load_image, make_grid, save_image, to_uint8
from core.jobs.chain import ChainCache, ChainFrame, chain_frames
from core.jobs.chain import chain_stride as chain_pixel_stride
from core.jobs.threads import one_torch_thread
from core.messages import first_line, one_line
from core.outputs import check_output_file, refuse_overwriting_inputs
from core.photo import Photo, PreparedPhoto, noise_job, prepare_photo
from core.readout import (closed_form_psnr, display_stride, histogram_index, histogram_values, psnr_db,
                          readout_cells, readout_values)
from core.schedule import NoiseSchedule
from ddpm_gui import settings as settings_mod
from ddpm_gui.image_views import ImagePane
from ddpm_gui.latent_view import LatentView, Takeover
from ddpm_gui.photo_intake import SYNC_MAX_PIXELS, PhotoIntake
from ddpm_gui.schedule_panel import SchedulePanel
from ddpm_gui.window_ui import CHAIN, CHAIN_NOTE, CLOSED, build_menus, build_view, xt_title
from ddpm_gui.worker import CLOSE_WAIT_S, WorkerRunner, collect_garbage_on_ui_thread, shutdown_all

PLAY_FPS = 30
PLAY_SECONDS = 5.0                 # one pass 0 → T−1 while playing
AUX_MS = 33                        # the histogram and the t marker follow x_t at most this often
STRIP_MS = 150                     # the strip is redrawn this long after the last schedule or noise change
MAX_STRIP = 16                     # timesteps in the strip


class MainWindow(PhotoIntake, QMainWindow):
    """DDPM Studio's main window. ``MainWindow()`` opens the built-in cat with Ho et al.'s linear schedule;
    ``MainWindow(path)`` opens a photo; ``settings=QSettings(...)`` restores and later saves geometry, photo,
    schedule, t and seed (``ddpm-gui`` passes the user's settings; tests and scripts get a fresh window)."""

    imageChanged = Signal()            # a new photo or new noise
    scheduleChanged = Signal(object)   # the new NoiseSchedule
    timestepChanged = Signal(int)
    frameShown = Signal(int)           # x_t for this t was handed to the view (closed form, or a chain state)
    photoLoaded = Signal(str)          # a photo (its label) is shown: after open_image, open_sample, a paste, …
    photoFailed = Signal(str)          # a photo could not be opened (the one-line reason); the old one stays

    def __init__(self, image=None, *, settings: QSettings | None = None, parent=None):
        super().__init__(parent)
        collect_garbage_on_ui_thread()  # Qt objects must never be destroyed by a GC pass on a worker thread
        self.setObjectName("mainWindow")
        self.setWindowTitle("DDPM Studio")
        self.setAcceptDrops(True)
        self._settings = settings
        self._runners: list[WorkerRunner] = []
        self._x0: np.ndarray | None = None
        self._x0_full_shape: tuple[int, int] | None = None
        self._noise: np.ndarray | None = None
        self._preview: ForwardPreview | None = None
        self._previews: dict[int, ForwardPreview] = {}
        self._hist_index: np.ndarray | None = None
        self._moments = (0.0, 0.0, 0.0)
        self._photo_path: Path | None = None
        self._photo_label = ""
        self._sample_name: str | None = None
        self._pending_t: int | None = None
        self._mode = CLOSED
        self._chain_cache: ChainCache | None = None
        self._chain_px_stride = 1
        self._chain_hist_index: np.ndarray | None = None
        self._chain_target = 0
        self._strip_default = True
        self._closing = False
        self._photo_gen = 0                 # counts shown photos: a noise result for an older one is dropped
        self.last_error: str | None = None
        self.last_warning: str | None = None
        self.last_frame_time = 0.0
        self.readout_values: dict = {}
        self.frames_rendered = 0
        self.histogram_t: int | None = None   # the t whose x_t the histogram shows

        self._render_timer = QTimer(self)     # the slider's mailbox: renders the newest t once the loop is idle
        self._render_timer.setSingleShot(True)
        self._render_timer.setInterval(0)
        self._render_timer.timeout.connect(self._render_pending)
        # the histogram and the t marker a moment after the photo, so their repaints are not in x_t's way
        self._request_aux = qthrottled(self._update_aux, timeout=AUX_MS, leading=False, parent=self)
        self._request_strip = qdebounced(self._update_strip, timeout=STRIP_MS, parent=self)
        self._play_timer = QTimer(self)
        self._play_timer.setInterval(int(1000 / PLAY_FPS))
        self._play_timer.timeout.connect(self._play_tick)

        self.schedule_panel = SchedulePanel(NoiseSchedule.preset("linear"))
        self.schedule_panel.input_paths = self.input_paths   # its Save never overwrites the photo
        self._chain_runner = self.create_runner("markov-chain")
        self._photo_runner = self.create_runner("photo")
        self._noise_runner = self.create_runner("noise")
        build_view(self)
        self.latent = LatentView(self)
        self.takeover = Takeover(self, settings)
        build_menus(self)
        self.schedule_panel.scheduleChanged.connect(self._on_schedule_changed)
        self.schedule_panel.timestepDragged.connect(self.set_timestep)
        self.schedule_panel.message.connect(lambda m: self.statusBar().showMessage(m, 6000))
        self.schedule_panel.error.connect(self.show_error)
        self._apply_schedule_range()
        from ddpm_gui.generate_panel import GeneratePanel  # the Generate tab (issue 5)
        self.generate_panel = GeneratePanel.install(self, settings=settings)
        from ddpm_gui.train_panel import TrainPanel  # the Train tab (issue 6)
        self.train_panel = TrainPanel.install(self, settings=settings)
        from ddpm_gui.elbo_panel import ElboPanel  # the ELBO tab (issue 7)
        self.elbo_panel = ElboPanel.install(self)
        from ddpm_gui.lab2d_panel import Lab2DPanel  # the 2D tab (issue 18)
        self.lab2d_panel = Lab2DPanel.install(self)
        from ddpm_gui.compare_panel import ComparePanel  # the Compare tab (issue 19)
        self.compare_panel = ComparePanel.install(self)
        self._connect_pipeline_source(self.generate_panel)

        restored = settings_mod.restore_window(self, settings) if settings is not None else {}
        opened = False
        if image is not None:
            opened = self.open_image(image)
        elif restored.get("photo"):
            kind, value = restored["photo"]
            opened = self.open_sample(value) if kind == "sample" else self.open_image(value, quiet=True)
        if not opened and self._x0 is None:
            self.open_sample("chelsea")
        if "t" in restored:
            self.set_timestep(restored["t"])
        if settings is None or not restored.get("geometry"):
            self.resize(1440, 900)

    # ----- public API ------------------------------------------------------------------------------------
    @property
    def schedule(self) -> NoiseSchedule:
        return self.schedule_panel.schedule

    @property
    def timestep(self) -> int:
        return self.timestepSlider.value()

    @property
    def seed(self) -> int:
        return self.seedSpin.value()

    @property
    def x0(self) -> np.ndarray:
        """The photo being noised, H×W×3 float32 in [−1, 1] (downscaled if the file is over 2048² pixels)."""
        return self._x0

    @property
    def noise(self) -> np.ndarray:
        """Its fixed ε = draw_noise(x0.shape, seed) as numpy float32."""
        return self._noise

    @property
    def photo_path(self) -> Path | None:
        return self._photo_path

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def image_view(self) -> ImagePane:
        return self.xtPane

    def displayed_image(self) -> np.ndarray | None:
        """The uint8 pixels of x_t currently handed to the view."""
        return self.xtPane.image

    @property
    def pipeline(self):
        """The Stable Diffusion pipeline chosen in Generate (what Latent space encodes with), or None."""
        return self.latent.pipe

    def set_pipeline(self, pipe) -> None:
        """The pipeline Latent space uses (None: none; the toggle turns off and is disabled, saying why)."""
        self.latent.set_pipeline(pipe)

    def set_latent_space(self, on: bool) -> None:
        """Turn the Latent space toggle on or off (on needs a pipeline: :meth:`set_pipeline`)."""
        self.latentSpaceCheck.setChecked(bool(on) and self.latentSpaceCheck.isEnabled())

    def _connect_pipeline_source(self, panel) -> None:
        if hasattr(panel, "pipelineChanged"):
            panel.pipelineChanged.connect(self.set_pipeline)
        current = getattr(panel, "current_pipeline", None)
        if current is not None:
            self.set_pipeline(current())
        self.takeover.connect_generate(panel)

    def set_timestep(self, t: int) -> None:
        self.timestepSlider.setValue(min(max(int(t), 0), self.schedule.T - 1))

    def set_seed(self, seed: int) -> None:
        self.seedSpin.setValue(int(seed))

    def new_noise(self) -> None:
        """Draw a new ε (a random seed)."""
        self.set_seed(secrets.randbelow(self.seedSpin.maximum() + 1))

    def set_mode(self, mode: str) -> None:
        """``"closed"`` (eq. 5, one ε for all t) or ``"chain"`` (eq. 2 step by step, a worker thread)."""
        i = self.modeCombo.findData(mode)
        if i < 0:
            raise ValueError(f"unknown mode {mode!r}")
        self.modeCombo.setCurrentIndex(i)

    def strip_timesteps(self) -> list[int]:
        """The strip's timesteps from its text field (raises ValueError with one line if it's not valid)."""
        text = self.stripEdit.text().strip()
        if not text:
            return notes_timesteps(self.schedule.T)
        ts = parse_timesteps(text.replace(";", ","), self.schedule)
        if len(ts) > MAX_STRIP:
            raise ValueError(f"the strip shows at most {MAX_STRIP} timesteps")
        return ts

    def strip_image(self, full_resolution: bool = True) -> np.ndarray:
        """x_0 then x_t at each strip timestep, as ``ddpm noise`` writes it (same seed → same ε, same pixels).

        With ``full_resolution`` and a photo that was downscaled for the view, the file is reloaded so the
        strip matches ``ddpm noise FILE`` exactly."""
        ts = self.strip_timesteps()
        x0 = self._x0
        if x0 is None:
            raise ValueError("no photo yet: open one first")
        if full_resolution and self._photo_path is not None and self._x0_full_shape != x0.shape[:2]:
            x0 = load_image(self._photo_path)
        xt = noise_strip(x0, self.schedule, ts, self.seed)
        return make_grid([x0, *xt], ncols=len(ts) + 1, pad=4)

    def export_strip(self, path) -> bool:
        """Write :meth:`strip_image` as a PNG at ``path`` (never over one of the inputs: False and one line)."""
        try:
            self.check_output_target(path)
            if self.latent.active:   # the VAE decodes on a worker; stripExported(path) follows
                return self.latent.export_strip(path, self.strip_timesteps())
            save_image(path, self.strip_image())
        except Exception as e:  # noqa: BLE001 - reloading the photo can raise anything; always one line
            msg = one_line(e)
            self.show_error(msg if str(path) in msg else f"{path}: {msg}", title="Export strip")
            return False
        self.statusBar().showMessage(f"Wrote the strip to {path}", 6000)
        return True

    def add_panel(self, title: str, widget: QWidget) -> int:
        """Add a panel as a tab beside the schedule panel; returns its tab index."""
        return self.panelTabs.addTab(widget, title)

    def show_panel(self, widget: QWidget) -> None:
        self.panelTabs.setCurrentWidget(widget)

    def create_runner(self, name: str) -> WorkerRunner:
        """A worker runner owned by this window: its errors are shown, and it is stopped when the window closes."""
        runner = WorkerRunner(self, name=name)
        runner.error.connect(lambda msg, n=name: self.show_error(msg, title=n.capitalize()))
        runner.warned.connect(lambda line, n=name: self.show_warning(line, source=n))
        self._runners.append(runner)
        return runner

    def show_warning(self, line: str, source: str = "") -> None:
        """A warning (e.g. one a worker's run raised) as one line in the status bar; no message box."""
        line = first_line(line)
        self.last_warning = f"{source}: warning: {line}" if source else f"warning: {line}"
        self.statusBar().showMessage(self.last_warning, 10000)

    def input_paths(self) -> list[Path]:
        """The files the window has read and an export must never replace: the photo and the loaded schedule."""
        loading = self._pending_photo[0] if self._pending_photo is not None else None
        paths = (self._photo_path, loading, getattr(self.schedule_panel, "loaded_path", None))
        return [p for p in paths if p is not None]

    def check_output_target(self, path, extra_inputs=()) -> Path:
        """Raise a one-line error unless a file may be written at ``path``: its folder is writable and it is not
        one of the window's inputs (:meth:`input_paths`, plus ``extra_inputs``) — the same file through a symlink
        or a hard link counts too. Nothing is written."""
        path = Path(path)
        refuse_overwriting_inputs([path], [*self.input_paths(), *extra_inputs])
        return check_output_file(path)

    def show_error(self, message: str, title: str = "DDPM Studio") -> None:
        """A one-line message in a non-blocking message box and in the status bar."""
        message = first_line(message)
        self.last_error = message
        self.statusBar().showMessage(message, 10000)
        if self._closing:
            return
        box = QMessageBox(QMessageBox.Icon.Warning, title, message, QMessageBox.StandardButton.Ok, self)
        box.setObjectName("errorMessageBox")
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.open()

    def fit_view(self) -> None:
        self.xtPane.fit()
        if self.takeover.showing:
            self.takeoverPane.fit()

    def save_screenshot(self, path) -> None:
        """Grab the window as a PNG, written atomically (never over one of the inputs)."""
        from core.atomic import atomic_path
        self.check_output_target(path)
        pixmap = self.grab()
        with atomic_path(Path(path)) as tmp:
            if not pixmap.save(str(tmp), "PNG"):
                raise OSError(f"{path}: could not write the screenshot")

    def save_settings(self) -> None:
        if self._settings is not None:
            settings_mod.save_window(self, self._settings)
            if self.schedule_panel.overridden:   # a pipeline's schedule is shown: remember the user's own
                self._settings.setValue("schedule/json", self.schedule_panel.own_schedule.to_json())

    # ----- photo, noise, schedule --------------------------------------------------------------------------
    def _show_photo(self, photo: Photo, prepared: PreparedPhoto | None, label: str, sample: str | None,
                    path: Path | None | bool = True) -> None:
        """Make ``photo`` current (UI thread; the heavy work is in ``prepared``, made beforehand)."""
        path = photo.path if path is True else path
        x0 = np.ascontiguousarray(photo.x0, dtype=np.float32)
        self._x0_full_shape = photo.file_size[::-1]
        self._x0 = x0
        self._photo_gen += 1
        self._noise_runner.discard()
        self._photo_path, self._photo_label, self._sample_name = path, label, sample
        w, h = photo.size
        self.x0Pane.set_image(prepared.x0_u8 if prepared is not None else to_uint8(x0))
        self.photoLabel.setText(f"{label} · {w}×{h}")
        self.photoLabel.setToolTip(f"{path or label} ({w}×{h} pixels)")
        self.x0Pane.title.setText(f"<b>x<sub>0</sub></b> — {html.escape(label)}")
        if prepared is not None and prepared.seed == self.seed:
            self._use_noise(prepared)
        else:
            self._make_noise()
        self.statusBar().showMessage(f"Opened {label}: {photo.note or f'{w}×{h}'}", 8000)
        self.photoLoaded.emit(label)

    def _use_noise(self, p: PreparedPhoto) -> None:
        self._noise = p.noise
        self._preview = p.preview
        self._previews = {1: p.preview}
        self._hist_index = p.hist_index
        self._moments = p.moments
        self._hist_x0, self._hist_eps = p.hist_x0, p.hist_eps
        self.noisePane.set_image(p.noise_u8)
        self._chain_cache = None
        self._request_frame()
        self._request_strip()
        self.imageChanged.emit()

    def _make_noise(self) -> None:
        """A new ε for the current photo and seed: at once for a small photo, on a worker for a large one (the
        old ε stays shown until the new one is ready)."""
        x0 = self._x0
        if x0 is None:
            return
        if x0.shape[0] * x0.shape[1] <= SYNC_MAX_PIXELS:
            self._noise_runner.discard()
            self._use_noise(prepare_photo(x0, self.seed))
            return
        gen = self._photo_gen
        try:
            self._noise_runner.start(noise_job, x0, self.seed,
                                     on_finished=lambda p, g=gen: self._on_noise_ready(p, g))
        except RuntimeError:  # the window is closing
            return
        self.statusBar().showMessage(f"Drawing new noise for {self._photo_label}…", 4000)

    def _on_noise_ready(self, prepared: PreparedPhoto, gen: int) -> None:
        if gen != self._photo_gen or prepared.seed != self.seed:
            return  # a newer photo or seed is on its way
        self._use_noise(prepared)

    def _on_schedule_changed(self, schedule: NoiseSchedule) -> None:
        self._apply_schedule_range()
        self._chain_cache = None
        self._request_frame()
        self._request_strip()
        self.scheduleChanged.emit(schedule)

    def _apply_schedule_range(self) -> None:
        T = self.schedule.T
        if self._strip_default:
            with QSignalBlocker(self.stripEdit):
                self.stripEdit.setText(", ".join(map(str, notes_timesteps(T))))
        for w in (self.timestepSlider, self.timestepSpin):
            w.setMaximum(T - 1)  # clamps the value (emits valueChanged if it moved)
        self.timestepSlider.setPageStep(max(1, T // 20))
        self.tMaxLabel.setText(f"/ {T - 1}")

    # ----- the slider path ---------------------------------------------------------------------------------
    def _on_slider(self, t: int) -> None:
        with QSignalBlocker(self.timestepSpin):
            self.timestepSpin.setValue(t)
        self._request_frame()
        self._request_aux()
        self.timestepChanged.emit(t)

    def _request_frame(self) -> None:
        """Remember the newest t and render it when the event loop gets there (coalescing fast drags)."""
        self._pending_t = self.timestepSlider.value()
        if not self._render_timer.isActive():
            self._render_timer.start()

    def _render_pending(self) -> None:
        t, self._pending_t = self._pending_t, None
        if t is None or self._preview is None:
            return
        t = min(t, self.schedule.T - 1)
        if self.latent.active:
            self.latent.render(t)
            return
        if self._mode == CHAIN:
            self._update_readout(t, mse=math.nan)  # the chain's PSNR arrives with its frame
            self._start_chain(t)
            return
        self._update_readout(t)
        stride = self.display_stride
        with one_torch_thread():
            frame = self._preview_at(stride).render(t, self.schedule)  # a fresh array per frame
        self._request_aux()
        self._show_frame(frame, stride, t)

    def _show_frame(self, u8: np.ndarray, stride: int, t: int, full_shape=None) -> None:
        self.xtPane.set_image(u8, stride=stride, full_shape=full_shape or self._x0.shape[:2])
        self.last_frame_time = time.perf_counter()
        self.frames_rendered += 1
        self.frameShown.emit(t)

    def _update_aux(self) -> None:
        """The histogram and the schedule plot's t marker (≤ 30 times a second, through ``_request_aux``)."""
        t = self.timestep
        self.schedule_panel.set_timestep(t)
        if self.latent.active:
            values = self.latent.histogram_values(t)
            if values is not None:
                self.histogram.set_values(values)
                self.histogram_t = t
        elif self._mode == CLOSED and self._x0 is not None:
            self.histogram.set_values(histogram_values(self.schedule, t, self._hist_x0, self._hist_eps))
            self.histogram_t = t

    @property
    def display_stride(self) -> int:
        """Level of detail of the x_t view: s > 1 when one screen pixel covers s or more photo pixels, and then
        the slider renders every s-th pixel of x_t (exactly ``ForwardPreview(x0, ε).render(t)[::s, ::s]``), s²
        times less work with no visible loss. Zooming in re-renders at full resolution."""
        if self._x0 is None or not self.xtPane.isVisible():
            return 1
        return display_stride(self.xtPane.pixels_per_screen_pixel())

    def _preview_at(self, stride: int) -> ForwardPreview:
        fp = self._previews.get(stride)
        if fp is None:
            fp = ForwardPreview(np.ascontiguousarray(self._x0[::stride, ::stride]),
                                np.ascontiguousarray(self._noise[::stride, ::stride]))
            self._previews[stride] = fp
        return fp

    def _on_view_range(self, *_args) -> None:
        if self._x0 is None or self.latent.active:
            return
        if self._mode == CLOSED and self.display_stride != self.xtPane.stride:
            self._request_frame()
        elif self._mode == CHAIN and self._chain_cache is not None and self.chain_stride != self._chain_px_stride:
            self._request_frame()

    def psnr(self, t: int) -> float:
        """PSNR of x_t against x_0 in dB, on the [−1, 1] scale (peak-to-peak 2) before display clipping:
        10·log10(4 / MSE) with MSE = (a−1)²·E[x_0²] + 2(a−1)b·E[x_0 ε] + b²·E[ε²], a = √ᾱ_t, b = √(1−ᾱ_t)."""
        return closed_form_psnr(self.schedule, t, self._moments)

    def _update_readout(self, t: int, mse: float | None = None) -> None:
        self.readout_values = readout_values(self.schedule, t, self.psnr(t) if mse is None else psnr_db(mse))
        self.readout.setText("&nbsp;&nbsp;·&nbsp;&nbsp;".join(f"{k} = <b>{v}</b>"
                                                              for k, v in readout_cells(self.readout_values)))

    # ----- Markov-chain mode -------------------------------------------------------------------------------
    def _on_mode(self, _index: int) -> None:
        self._mode = self.modeCombo.currentData()
        chain = self._mode == CHAIN
        self.modeNote.setVisible(chain)
        if not chain:
            self._chain_runner.cancel()
        self.xtPane.title.setText(xt_title(self._mode))
        self._request_frame()

    @property
    def chain_stride(self) -> int:
        """The Markov chain runs on every s-th pixel of the photo: the view's level of detail, and never on more
        than ~1 megapixel (:func:`core.jobs.chain.chain_stride`). s = 1 for ordinary photos."""
        return chain_pixel_stride(self._x0.shape, self.display_stride)

    def _start_chain(self, t: int) -> None:
        s = self.chain_stride
        if self._chain_cache is None or self._chain_px_stride != s:
            x0 = np.ascontiguousarray(self._x0[::s, ::s])
            self._chain_cache = ChainCache(x0, self.schedule, self.seed)
            self._chain_px_stride = s
            self._chain_hist_index = self._hist_index if s == 1 else histogram_index(x0.size)
        self._chain_target = t
        h, w = self._chain_cache.x0.shape[:2]
        res = "" if s == 1 else f" (on every {s}-th pixel: {w}×{h})"
        self.modeNote.setText(f"{CHAIN_NOTE}  Walking the chain to t = {t}{res}…")
        self._chain_runner.start(chain_frames, self._chain_cache, t, sample_index=self._chain_hist_index,
                                 on_frame=self._on_chain_frame, on_finished=lambda _r: self._on_chain_done())

    def _on_chain_frame(self, frame: ChainFrame | None) -> None:
        if frame is None:
            return
        if frame.sample is not None:
            self.histogram.set_values(frame.sample)
            self.histogram_t = frame.t
        self._update_readout(frame.t, mse=frame.mse)
        if not frame.final:
            self.modeNote.setText(f"{CHAIN_NOTE}  Walking the chain: step {frame.t} of {frame.target}…")
        self._show_frame(frame.image, self._chain_px_stride, frame.t)

    def _on_chain_done(self) -> None:
        stride = self._chain_cache.stride if self._chain_cache else 1
        s = self._chain_px_stride
        res = "" if s == 1 else f", every {s}-th pixel"
        self.modeNote.setText(f"{CHAIN_NOTE}  Showing step {self._chain_target} (checkpoints every {stride} "
                              f"steps{res}).")

    # ----- strip -------------------------------------------------------------------------------------------
    def _on_strip_edited(self) -> None:
        default = ", ".join(map(str, notes_timesteps(self.schedule.T)))
        self._strip_default = self.stripEdit.text().strip() in ("", default)
        self._update_strip()

    def _update_strip(self) -> None:
        try:
            ts = self.strip_timesteps()
        except ValueError as e:
            self.statusBar().showMessage(f"Strip: {e}", 8000)
            return
        if self.latent.active:
            self.latent.update_strip(ts)
        elif self._x0 is not None and self._noise is not None:
            self.stripView.show_strip(self._x0, self._noise, self.schedule, ts)

    # ----- play --------------------------------------------------------------------------------------------
    def _on_play(self, on: bool) -> None:
        if on:
            if self.timestep >= self.schedule.T - 1:
                self.set_timestep(0)
            self._play_timer.start()
        else:
            self._play_timer.stop()
        self.playButton.setText("⏸ Pause" if on else "▶ Play")

    def _play_tick(self) -> None:
        T = self.schedule.T
        t = self.timestep + max(1, round(T / (PLAY_SECONDS * PLAY_FPS)))
        if t >= T - 1:
            self.set_timestep(T - 1)
            self.playButton.setChecked(False)
        else:
            self.set_timestep(t)

    # ----- closing -----------------------------------------------------------------------------------------
    def closeEvent(self, ev):  # noqa: N802 - Qt override
        """Closing never waits more than about a second (:data:`~ddpm_gui.worker.CLOSE_WAIT_S`): every run is
        detached and asked to stop; one that yields stops at its next yield, one inside a call that cannot be
        interrupted (a slow model load) is abandoned — its daemon thread never holds up or aborts the exit."""
        self._closing = True
        self._play_timer.stop()
        self._render_timer.stop()
        self._request_aux.cancel()
        self._request_strip.cancel()
        self.latent._request_vae.cancel()
        self._pending_photo = None
        for runner in self._runners:
            runner.shutdown(timeout_s=0)     # detach and ask to stop; the wait is shared below
        shutdown_all(timeout_s=CLOSE_WAIT_S)
        try:
            self.save_settings()
        except Exception:  # noqa: BLE001 - never keep the window from closing
            pass
        super().closeEvent(ev)

    def resizeEvent(self, ev):  # noqa: N802 - Qt override
        super().resizeEvent(ev)
        self.histogram.setFixedHeight(int(min(150, max(90, 0.17 * self.height()))))  # small screens: room for x_t
