"""DDPM Studio's main window: a photo, a timestep slider with live noising, and the schedule panel.

The window is a thin view over ``core`` objects: the photo x_0 (:func:`core.images.load_image`), its fixed noise
ε = :func:`core.forward.draw_noise` (shape, seed), the schedule (:class:`core.schedule.NoiseSchedule`, owned by the
:class:`~ddpm_gui.schedule_panel.SchedulePanel`) and :class:`core.forward.ForwardPreview`, which turns
(x_0, ε, t) into display pixels.

The slider path: a slider change only records the newest t and arms a zero-timeout timer; when the event loop
gets to it, x_t for that newest t is rendered from the cached x_0 and ε and handed to pyqtgraph. Faster drags
skip the intermediate t instead of queueing them. The Markov-chain mode (eq. 2 step by step) is too slow for
that path, so it runs on a worker thread with cached checkpoints (:mod:`ddpm_gui.chain`).

For the panels that later issues add (Generate, Train, ELBO):

- ``add_panel(title, widget)`` puts a widget in a tab beside the schedule panel; ``show_panel(widget)`` raises it.
- ``create_runner(name)`` gives a :class:`~ddpm_gui.worker.WorkerRunner` whose errors appear in a message box and
  which is stopped when the window closes.
- ``schedule`` / ``scheduleChanged``, ``timestep`` / ``set_timestep`` / ``timestepChanged``, ``x0``, ``noise``,
  ``seed`` / ``imageChanged`` and ``image_view`` (the x_t pane; ``image_view.set_image(u8)`` shows a frame).
- ``show_error(message)`` (a non-blocking message box + status bar) and ``statusBar().showMessage``.
- ``input_paths()`` / ``check_output_target(path)``: the files the window has read (photo, schedule file) and the
  check every export makes before writing (never one of the inputs, through symlinks and hard links too).

Opening a photo (:meth:`MainWindow.open_image`): a small file (≤ 512×512 pixels) is read at once; a larger one is
decoded at the working size (:mod:`core.photo`: at most 2048×2048 pixels, downscaled while decoding) and its noise
prepared on a worker, with a busy indicator in the status bar, while the window stays responsive; ``photoLoaded``
says when it is shown, ``photoFailed(message)`` when it cannot be used (the photo shown before stays).
"""
from __future__ import annotations

import html
import math
import os
import secrets
import time
from pathlib import Path

import numpy as np
from PIL import Image
from PySide6.QtCore import QByteArray, QSettings, QSignalBlocker, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QColor, QGuiApplication, QImage, QKeySequence, QPainter
from PySide6.QtWidgets import (QCheckBox, QComboBox, QFileDialog, QHBoxLayout, QLabel, QLineEdit,
                               QMainWindow, QMessageBox, QProgressBar, QPushButton, QSizePolicy, QSlider, QSpinBox,
                               QSplitter, QTabWidget, QVBoxLayout, QWidget)

from core.forward import ForwardPreview, draw_noise, noise_strip, notes_timesteps
from core.images import SAMPLES, from_uint8, load_image, make_grid, sample_path, save_image, to_uint8
from core.messages import one_line
from core.outputs import check_output_file, refuse_overwriting_inputs
from core.photo import WORK_MAX_PIXELS, Photo, load_photo, load_steps, peek_size
from core.schedule import NoiseSchedule, ScheduleError
from ddpm_gui import settings as settings_mod
from ddpm_gui.chain import ChainCache, ChainFrame, chain_frames
from ddpm_gui.image_views import ImagePane, PixelHistogram, qpixmap_from_u8, u8_from_qimage
from ddpm_gui.schedule_panel import SchedulePanel
from ddpm_gui.torch_threads import one_torch_thread
from ddpm_gui.worker import (CLOSE_WAIT_S, WorkerRunner, background_priority, collect_garbage_on_ui_thread,
                             shutdown_all)

IMAGE_FILTER = "Images (*.png *.jpg *.jpeg *.bmp *.gif *.webp *.tif *.tiff *.ppm *.pgm);;All files (*)"
MAX_WORK_PIXELS = WORK_MAX_PIXELS  # larger photos are downscaled for the interactive view (export uses the file)
SYNC_MAX_PIXELS = 512 * 512        # a photo file up to this size opens at once (≈ 50 ms); larger ones on a worker
HIST_SAMPLES = 65_536
CHAIN_MAX_PIXELS = 1024 * 1024     # the Markov chain walks at most this many pixels per step
STRIP_THUMB_HEIGHT = 120
PLAY_FPS = 30
PLAY_SECONDS = 5.0                 # one pass 0 → T−1 while playing
SAMPLE_LABELS = {"chelsea": "Chelsea the cat", "coffee": "Coffee", "astronaut": "Astronaut (Eileen Collins)"}
CLOSED, CHAIN = "closed", "chain"


class PreparedPhoto:
    """A photo's x_0 with its fixed noise and what the view caches from the pair (made by :func:`prepare_photo`,
    on a worker for large photos). A plain class, not a dataclass, so a worker hands it over without a copy: every
    array in it is new and no thread writes it again."""

    __slots__ = ("x0", "seed", "noise", "preview", "hist_index", "moments", "hist_x0", "hist_eps", "x0_u8",
                 "noise_u8")


def prepare_photo(x0: np.ndarray, seed: int) -> PreparedPhoto:
    """ε = draw_noise(x0.shape, seed), the slider's ForwardPreview, the histogram's samples, the moments the PSNR
    readout uses and the display images of x_0 and ε (no Qt: runs on any thread)."""
    p = PreparedPhoto()
    p.x0 = x0 = np.ascontiguousarray(x0, dtype=np.float32)
    p.seed = int(seed)
    p.noise = noise = draw_noise(x0.shape, seed).numpy()
    p.preview = ForwardPreview(x0, noise)
    rng = np.random.default_rng(12345)
    p.hist_index = rng.integers(0, x0.size, size=min(HIST_SAMPLES, x0.size))
    p.moments = _moments(x0, noise)
    p.hist_x0 = x0.reshape(-1)[p.hist_index].astype(np.float64)
    p.hist_eps = noise.reshape(-1)[p.hist_index].astype(np.float64)
    p.x0_u8 = to_uint8(x0)
    p.noise_u8 = to_uint8(noise)
    return p


def _moments(x0: np.ndarray, noise: np.ndarray, chunk: int = 1 << 20) -> tuple[float, float, float]:
    """(E[x_0²], E[x_0 ε], E[ε²]) in float64, a million values at a time (no full-size float64 copies)."""
    x, e = x0.reshape(-1), noise.reshape(-1)
    xx = xe = ee = 0.0
    for i in range(0, x.size, chunk):
        xs, es = x[i:i + chunk].astype(np.float64), e[i:i + chunk].astype(np.float64)
        xx += float(np.dot(xs, xs))
        xe += float(np.dot(xs, es))
        ee += float(np.dot(es, es))
    n = max(1, x.size)
    return xx / n, xe / n, ee / n


class _Loaded:
    """What the photo worker hands back: the photo and its prepared noise (a plain object: not copied)."""

    __slots__ = ("photo", "prepared")

    def __init__(self, photo: Photo, prepared: PreparedPhoto):
        self.photo, self.prepared = photo, prepared


def photo_job(path, seed: int, max_pixels: int = WORK_MAX_PIXELS):
    """The photo worker: decode ``path`` at its working size (:func:`core.photo.load_steps`, yielding each stage's
    name), then prepare its noise; returns a :class:`_Loaded`. It runs at a lower CPU priority than the UI."""
    background_priority()
    photo = yield from load_steps(path, max_pixels)
    yield "preparing the noise"
    with one_torch_thread():
        prepared = prepare_photo(photo.x0, seed)
    return _Loaded(photo, prepared)


def noise_job(x0: np.ndarray, seed: int):
    """The noise worker (a new seed for a large photo): returns the :class:`PreparedPhoto`."""
    background_priority()
    yield None
    with one_torch_thread():
        return prepare_photo(x0, seed)


def spec_input_files(spec, limit: int = 20_000) -> list[Path]:
    """The files a model spec reads (a model folder and its files, a built-in model's folder, an oracle's photo or
    folder of images, recursively), so an export can refuse to replace one of them. Non-path specs give none."""
    if not isinstance(spec, str) or not spec or spec == "oracle:builtin:mnist":
        return []
    target = spec[len("oracle:"):] if spec.startswith("oracle:") else spec
    if target.startswith("builtin:"):
        from core.models.load import builtin_root
        path = builtin_root() / target.split(":", 1)[1]
    else:
        path = Path(target)
    try:
        if not path.exists():
            return []
        if not path.is_dir():
            return [path]
        found = [path]
        for root, _dirs, files in os.walk(path):
            found.extend(Path(root, f) for f in files)
            if len(found) > limit:
                break
        return found
    except OSError:
        return [path]


class MainWindow(QMainWindow):
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
        self._chain_status = ""
        self._strip_default = True
        self._closing = False
        self._photo_gen = 0                 # counts shown photos: a noise result for an older one is dropped
        self._pending_photo: tuple[Path, bool] | None = None   # (path, quiet) of the photo loading on a worker
        self._pending_name = ""
        self.last_error: str | None = None
        self.last_warning: str | None = None
        self.last_frame_time = 0.0
        self.readout_values: dict = {}
        self.frames_rendered = 0

        self._render_timer = QTimer(self)
        self._render_timer.setSingleShot(True)
        self._render_timer.setInterval(0)
        self._render_timer.timeout.connect(self._render_pending)
        self._aux_timer = QTimer(self)
        self._aux_timer.setSingleShot(True)
        self._aux_timer.setInterval(33)
        self._aux_timer.timeout.connect(self._update_aux)
        self.histogram_t: int | None = None   # the t whose x_t the histogram shows
        self._strip_timer = QTimer(self)
        self._strip_timer.setSingleShot(True)
        self._strip_timer.setInterval(150)
        self._strip_timer.timeout.connect(self._update_strip)
        self._play_timer = QTimer(self)
        self._play_timer.setInterval(int(1000 / PLAY_FPS))
        self._play_timer.timeout.connect(self._play_tick)

        self.schedule_panel = SchedulePanel(NoiseSchedule.preset("linear"))
        self.schedule_panel.input_paths = self.input_paths   # its Save never overwrites the photo
        self._chain_runner = self.create_runner("markov-chain")
        self._photo_runner = self.create_runner("photo")
        self._noise_runner = self.create_runner("noise")
        self._build_ui()
        self._build_menus()
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

        restored = self._restore_settings() if settings is not None else {}
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
    def photo_loading(self) -> bool:
        """True while a photo file is being opened on a worker (``photoLoaded`` or ``photoFailed`` follows)."""
        return self._pending_photo is not None

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def image_view(self) -> ImagePane:
        return self.xtPane

    def displayed_image(self) -> np.ndarray | None:
        """The uint8 pixels of x_t currently handed to the view."""
        return self.xtPane.image

    def set_timestep(self, t: int) -> None:
        t = int(min(max(int(t), 0), self.schedule.T - 1))
        self.timestepSlider.setValue(t)

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

    def open_image(self, path, quiet: bool = False) -> bool:
        """Open a photo file; the photo shown before stays until the new one is ready, and stays on any failure.

        A small file (≤ 512×512 pixels, :data:`SYNC_MAX_PIXELS`) is read at once: True when it is shown, False
        (with its one-line reason, unless ``quiet``) when it cannot be used. A larger one is decoded at the working
        size (:mod:`core.photo`: at most 2048×2048 pixels, downscaled while decoding) and prepared on a worker,
        the window staying responsive: True means it is loading (:attr:`photo_loading`); ``photoLoaded`` follows
        when it is shown, or ``photoFailed(message)`` with the one-line reason. A file that is not an image at all
        fails at once (False). Whatever the decoder raises becomes one line."""
        self._photo_runner.discard()
        self._pending_photo = None
        try:
            path = Path(path)
            w, h = peek_size(path)
            if w * h <= SYNC_MAX_PIXELS:
                photo = load_photo(path)
                prepared = prepare_photo(photo.x0, self.seed)
        except Exception as e:  # noqa: BLE001 - a crafted file can make a decoder raise anything
            self._set_busy(None)
            self._photo_failed(one_line(e), quiet)
            return False
        if w * h <= SYNC_MAX_PIXELS:
            self._set_busy(None)
            self._show_photo(photo, prepared, path.name, None)
            return True
        self._pending_photo = (path, quiet)
        self._pending_name = f"{path.name} ({w}×{h})"
        try:
            self._photo_runner.start(photo_job, path, self.seed, on_yield=self._on_photo_stage,
                                     on_finished=self._on_photo_loaded, on_error=self._on_photo_error)
        except RuntimeError:  # the window is closing
            self._pending_photo = None
            return False
        self._set_busy(f"Opening {self._pending_name}…")
        return True

    def open_sample(self, name: str) -> bool:
        """Open a built-in sample photo (they are small: read at once)."""
        self._photo_runner.discard()
        self._pending_photo = None
        self._set_busy(None)
        try:
            path = sample_path(name)
            photo = load_photo(path)
            prepared = prepare_photo(photo.x0, self.seed)
        except Exception as e:  # noqa: BLE001
            self._photo_failed(one_line(e), False, title="Cannot open sample", fallback=False)
            return False
        self._show_photo(photo, prepared, SAMPLE_LABELS.get(name, name), name)
        return True

    def set_image_array(self, x0: np.ndarray, label: str = "image") -> None:
        """Use an H×W×3 float array in [−1, 1] as the photo (e.g. pasted); shown at once (downscaled to the
        working size, 2048×2048 pixels at most, when it is larger)."""
        x0 = np.asarray(x0, dtype=np.float32)
        if x0.ndim != 3 or x0.shape[2] != 3 or min(x0.shape[:2]) < 1:
            raise ValueError(f"expected an H×W×3 image, got shape {x0.shape}")
        self._photo_runner.discard()
        self._pending_photo = None
        self._set_busy(None)
        h, w = x0.shape[:2]
        if h * w > MAX_WORK_PIXELS:
            from core.photo import work_size
            nw, nh = work_size(w, h, MAX_WORK_PIXELS)
            img = Image.fromarray(to_uint8(x0)).resize((nw, nh), Image.Resampling.LANCZOS)
            small = from_uint8(np.asarray(img))
        else:
            small = x0
        photo = Photo(np.ascontiguousarray(small, dtype=np.float32), (w, h), Path(label))
        self._show_photo(photo, prepare_photo(photo.x0, self.seed), label, None, path=None)

    def paste_image(self) -> bool:
        """Paste an image (or an image file) from the clipboard."""
        mime = QGuiApplication.clipboard().mimeData()
        if mime is not None and mime.hasUrls():
            for url in mime.urls():
                if url.isLocalFile():
                    return self.open_image(url.toLocalFile())
        if mime is not None and mime.hasImage():
            qimg = QImage(mime.imageData())
            if not qimg.isNull():
                self.set_image_array(from_uint8(_flatten_alpha(qimg)), "pasted image")
                return True
        self.show_error("The clipboard holds no image", title="Paste")
        return False

    def strip_timesteps(self) -> list[int]:
        """The strip's timesteps from its text field (raises ValueError with one line if it's not valid)."""
        text = self.stripEdit.text().strip()
        if not text:
            return notes_timesteps(self.schedule.T)
        try:
            ts = [int(v) for v in text.replace(";", ",").split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"strip timesteps must be comma-separated integers, got {text!r}") from None
        if not ts:
            raise ValueError("the strip lists no timesteps")
        for t in ts:
            try:
                self.schedule.check_t(t)
            except ScheduleError as e:
                raise ValueError(str(e)) from None
        if len(ts) > 16:
            raise ValueError("the strip shows at most 16 timesteps")
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
        line = (line.strip().splitlines() or [""])[0]
        self.last_warning = f"{source}: warning: {line}" if source else f"warning: {line}"
        self.statusBar().showMessage(self.last_warning, 10000)

    def input_paths(self) -> list[Path]:
        """The files the window has read and an export must never replace: the photo and the loaded schedule."""
        out = []
        if self._photo_path is not None:
            out.append(self._photo_path)
        if self._pending_photo is not None:
            out.append(self._pending_photo[0])
        loaded = getattr(self.schedule_panel, "loaded_path", None)
        if loaded is not None:
            out.append(loaded)
        return out

    def check_output_target(self, path, extra_inputs=()) -> Path:
        """Raise a one-line error unless a file may be written at ``path``: its folder is writable and it is not
        one of the window's inputs (:meth:`input_paths`, plus ``extra_inputs``) — the same file through a symlink
        or a hard link counts too. Nothing is written."""
        path = Path(path)
        refuse_overwriting_inputs([path], [*self.input_paths(), *extra_inputs])
        return check_output_file(path)

    def show_error(self, message: str, title: str = "DDPM Studio") -> None:
        """A one-line message in a non-blocking message box and in the status bar."""
        message = (message.strip().splitlines() or [""])[0]
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

    def save_screenshot(self, path) -> None:
        """Grab the window as a PNG, written atomically (never over one of the inputs)."""
        from core.atomic import atomic_path
        self.check_output_target(path)
        pixmap = self.grab()
        with atomic_path(Path(path)) as tmp:
            if not pixmap.save(str(tmp), "PNG"):
                raise OSError(f"{path}: could not write the screenshot")

    # ----- photo, noise, schedule --------------------------------------------------------------------------
    def _show_photo(self, photo: Photo, prepared: PreparedPhoto | None, label: str, sample: str | None,
                    path: Path | None | bool = True) -> None:
        """Make ``photo`` current (UI thread; the heavy work is in ``prepared``, made beforehand)."""
        path = photo.path if path is True else path
        x0 = np.ascontiguousarray(photo.x0, dtype=np.float32)
        fw, fh = photo.file_size
        self._x0_full_shape = (fh, fw)
        self._x0 = x0
        self._photo_gen += 1
        self._noise_runner.discard()
        self._photo_path, self._photo_label, self._sample_name = path, label, sample
        h, w = x0.shape[:2]
        self.x0Pane.set_image(prepared.x0_u8 if prepared is not None else to_uint8(x0))
        self.photoLabel.setText(f"{label} · {w}×{h}")
        self.photoLabel.setToolTip(f"{path or label} ({w}×{h} pixels)")
        self.x0Pane.title.setText(f"<b>x<sub>0</sub></b> — {html.escape(label)}")
        if prepared is not None and prepared.seed == self.seed:
            self._use_noise(prepared)
        else:
            self._make_noise()
        note = f": photo {fw}×{fh} shown at {w}×{h}" if (fw, fh) != (w, h) else f": {w}×{h}"
        self.statusBar().showMessage(f"Opened {label}{note}", 8000)
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
        self._strip_timer.start()
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

    # ----- opening a photo on a worker ---------------------------------------------------------------------
    def _on_photo_stage(self, stage) -> None:
        if self._pending_photo is not None and isinstance(stage, str):
            self._set_busy(f"Opening {self._pending_name}: {stage}…")

    def _on_photo_loaded(self, loaded: _Loaded) -> None:
        pending, self._pending_photo = self._pending_photo, None
        self._set_busy(None)
        if pending is None:
            return
        self._show_photo(loaded.photo, loaded.prepared, pending[0].name, None)

    def _on_photo_error(self, exc) -> None:
        pending, self._pending_photo = self._pending_photo, None
        self._set_busy(None)
        self._photo_failed(one_line(exc), bool(pending and pending[1]))

    def _photo_failed(self, message: str, quiet: bool, title: str = "Cannot open image",
                      fallback: bool = True) -> None:
        message = (message.strip().splitlines() or [""])[0]
        if quiet:
            self.statusBar().showMessage(message, 10000)
        else:
            self.show_error(message, title=title)
        self.photoFailed.emit(message)
        if fallback and self._x0 is None and not self._closing:  # nothing shown yet (from the command line, settings)
            self.open_sample("chelsea")

    def _set_busy(self, text: str | None) -> None:
        """The status bar's busy indicator: shown with ``text`` while a photo loads, hidden with None."""
        bar = self.photoBusy
        if text is None:
            if not bar.isHidden():
                bar.hide()
                self.statusBar().clearMessage()
            return
        bar.show()
        self.statusBar().showMessage(text)

    def _on_schedule_changed(self, schedule: NoiseSchedule) -> None:
        self._apply_schedule_range()
        self._chain_cache = None
        self._request_frame()
        self._strip_timer.start()
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
        if self._mode == CHAIN:
            self._update_readout(t, mse=math.nan)  # the chain's PSNR arrives with its frame
            self._start_chain(t)
            return
        self._update_readout(t)
        stride = self.display_stride
        with one_torch_thread():
            frame = self._preview_at(stride).render(t, self.schedule)  # a fresh array per frame
        self.xtPane.set_image(frame, stride=stride, full_shape=self._x0.shape[:2])
        self.last_frame_time = time.perf_counter()
        self.frames_rendered += 1
        self._request_aux()
        self.frameShown.emit(t)

    def _request_aux(self) -> None:
        """The histogram and the schedule plot's t marker follow a moment after the photo (≤ 30 times a second),
        so their repaints are not in the way of x_t's pixels."""
        if not self._aux_timer.isActive():
            self._aux_timer.start()

    def _update_aux(self) -> None:
        t = self.timestep
        self.schedule_panel.set_timestep(t)
        if self._mode == CLOSED and self._x0 is not None:
            a = self.schedule.sqrt_alphas_cumprod[t]
            b = self.schedule.sqrt_one_minus_alphas_cumprod[t]
            self.histogram.set_values(a * self._hist_x0 + b * self._hist_eps)
            self.histogram_t = t

    @property
    def display_stride(self) -> int:
        """Level of detail of the x_t view: s > 1 when one screen pixel covers s or more photo pixels, and then
        the slider renders every s-th pixel of x_t (exactly ``ForwardPreview(x0, ε).render(t)[::s, ::s]``), s²
        times less work with no visible loss. Zooming in re-renders at full resolution."""
        if self._x0 is None or not self.xtPane.isVisible():
            return 1
        return max(1, int(math.floor(self.xtPane.pixels_per_screen_pixel() + 1e-6)))

    def _preview_at(self, stride: int) -> ForwardPreview:
        fp = self._previews.get(stride)
        if fp is None:
            fp = ForwardPreview(np.ascontiguousarray(self._x0[::stride, ::stride]),
                                np.ascontiguousarray(self._noise[::stride, ::stride]))
            self._previews[stride] = fp
        return fp

    def _on_view_range(self, *_args) -> None:
        if self._x0 is None:
            return
        if self._mode == CLOSED and self.display_stride != self.xtPane.stride:
            self._request_frame()
        elif self._mode == CHAIN and self._chain_cache is not None and self.chain_stride != self._chain_px_stride:
            self._request_frame()

    def psnr(self, t: int) -> float:
        """PSNR of x_t against x_0 in dB, on the [−1, 1] scale (peak-to-peak 2) before display clipping:
        10·log10(4 / MSE) with MSE = (a−1)²·E[x_0²] + 2(a−1)b·E[x_0 ε] + b²·E[ε²], a = √ᾱ_t, b = √(1−ᾱ_t)."""
        a = float(self.schedule.sqrt_alphas_cumprod[t])
        b = float(self.schedule.sqrt_one_minus_alphas_cumprod[t])
        xx, xe, ee = self._moments
        mse = (a - 1) ** 2 * xx + 2 * (a - 1) * b * xe + b * b * ee
        return _psnr(mse)

    def _update_readout(self, t: int, mse: float | None = None) -> None:
        s = self.schedule
        ab = float(s.alphas_cumprod[t])
        snr = float(s.snr[t])
        snr_db = "−∞" if snr <= 0 else f"{10 * math.log10(snr):+.2f}"
        psnr = self.psnr(t) if mse is None else _psnr(mse)
        psnr_txt = "∞" if math.isinf(psnr) else ("…" if math.isnan(psnr) else f"{psnr:.2f}")
        cells = [("t", f"{t}"), ("β<sub>t</sub>", f"{s.betas[t]:.5g}"), ("ᾱ<sub>t</sub>", f"{ab:.5g}"),
                 ("√ᾱ<sub>t</sub>", f"{math.sqrt(ab):.4f}"), ("√(1−ᾱ<sub>t</sub>)", f"{math.sqrt(1 - ab):.4f}"),
                 ("SNR", f"{snr_db} dB"), ("PSNR(x<sub>t</sub>, x<sub>0</sub>)", f"{psnr_txt} dB")]
        self.readout.setText("&nbsp;&nbsp;·&nbsp;&nbsp;".join(f"{k} = <b>{v}</b>" for k, v in cells))
        self.readout_values = dict(t=t, beta=float(s.betas[t]), alpha_bar=ab, sqrt_alpha_bar=math.sqrt(ab),
                                   sqrt_one_minus_alpha_bar=math.sqrt(1 - ab),
                                   snr_db=(-math.inf if snr <= 0 else 10 * math.log10(snr)), psnr_db=psnr)

    # ----- Markov-chain mode -------------------------------------------------------------------------------
    def _on_mode(self, _index: int) -> None:
        self._mode = self.modeCombo.currentData()
        chain = self._mode == CHAIN
        self.modeNote.setVisible(chain)
        if not chain:
            self._chain_runner.cancel()
            self._chain_status = ""
        self.xtPane.title.setText(self._xt_title())
        self._request_frame()

    def _xt_title(self) -> str:
        if self._mode == CHAIN:
            return "<b>x<sub>t</sub></b> — Markov chain, eq. 2: x<sub>t</sub> = √(1−β<sub>t</sub>)·x<sub>t−1</sub> + √β<sub>t</sub>·ε<sub>t</sub>"
        return "<b>x<sub>t</sub></b> = √ᾱ<sub>t</sub>·x<sub>0</sub> + √(1−ᾱ<sub>t</sub>)·ε &nbsp;(eq. 5)"

    @property
    def chain_stride(self) -> int:
        """The Markov chain runs on every s-th pixel of the photo: the view's level of detail, and never on more
        than ~1 megapixel (each step draws fresh noise for every pixel it walks). s = 1 for ordinary photos."""
        h, w = self._x0.shape[:2]
        cap = max(1, math.ceil(math.sqrt(h * w / CHAIN_MAX_PIXELS)))
        return max(self.display_stride, cap)

    def _start_chain(self, t: int) -> None:
        s = self.chain_stride
        if self._chain_cache is None or self._chain_px_stride != s:
            x0 = np.ascontiguousarray(self._x0[::s, ::s])
            self._chain_cache = ChainCache(x0, self.schedule, self.seed)
            self._chain_px_stride = s
            self._chain_hist_index = (self._hist_index if s == 1 else np.random.default_rng(12345).integers(
                0, x0.size, size=min(HIST_SAMPLES, x0.size)))
        self._chain_target = t
        h, w = self._chain_cache.x0.shape[:2]
        res = "" if s == 1 else f" (on every {s}-th pixel: {w}×{h})"
        self.modeNote.setText(f"{CHAIN_NOTE}  Walking the chain to t = {t}{res}…")
        self._chain_runner.start(chain_frames, self._chain_cache, t, sample_index=self._chain_hist_index,
                                 on_frame=self._on_chain_frame, on_finished=lambda _r: self._on_chain_done())

    def _on_chain_frame(self, frame: ChainFrame | None) -> None:
        if frame is None:
            return
        self.xtPane.set_image(frame.image, stride=self._chain_px_stride, full_shape=self._x0.shape[:2])
        self.last_frame_time = time.perf_counter()
        if frame.sample is not None:
            self.histogram.set_values(frame.sample)
            self.histogram_t = frame.t
        self._update_readout(frame.t, mse=frame.mse)
        self.frames_rendered += 1
        if not frame.final:
            self.modeNote.setText(f"{CHAIN_NOTE}  Walking the chain: step {frame.t} of {frame.target}…")
        self.frameShown.emit(frame.t)

    def _on_chain_done(self) -> None:
        t = getattr(self, "_chain_target", 0)
        stride = self._chain_cache.stride if self._chain_cache else 1
        s = self._chain_px_stride
        res = "" if s == 1 else f", every {s}-th pixel"
        self.modeNote.setText(f"{CHAIN_NOTE}  Showing step {t} (checkpoints every {stride} steps{res}).")

    # ----- strip -------------------------------------------------------------------------------------------
    def _on_strip_edited(self) -> None:
        self._strip_default = self.stripEdit.text().strip() in ("", ", ".join(map(str, notes_timesteps(self.schedule.T))))
        self._update_strip()

    def _update_strip(self) -> None:
        try:
            ts = self.strip_timesteps()
        except ValueError as e:
            self.statusBar().showMessage(f"Strip: {e}", 8000)
            return
        if self._x0 is None or self._noise is None:
            return
        h = self._x0.shape[0]
        step = max(1, h // STRIP_THUMB_HEIGHT)
        x0 = self._x0[::step, ::step]
        eps = self._noise[::step, ::step]
        s = self.schedule
        frames = [x0] + [s.sqrt_alphas_cumprod[t] * x0 + s.sqrt_one_minus_alphas_cumprod[t] * eps for t in ts]
        grid = make_grid(frames, ncols=len(frames), pad=3)
        self._strip_pixmap = qpixmap_from_u8(grid)
        tile_w = frames[0].shape[1] + 3
        self._strip_captions = [(i * tile_w / grid.shape[1], text)
                                for i, text in enumerate(["x₀"] + [f"t = {t}" for t in ts])]
        self._fit_strip()

    def _fit_strip(self) -> None:
        pm = getattr(self, "_strip_pixmap", None)
        if pm is None:
            return
        w = max(50, self.stripView.width())
        h = max(30, self.stripView.height())
        scaled = pm.scaled(w, h, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation)
        p = QPainter(scaled)
        font = p.font()
        font.setPointSizeF(8.5)
        p.setFont(font)
        fm = p.fontMetrics()
        for frac, text in getattr(self, "_strip_captions", []):
            x = int(frac * scaled.width()) + 2
            box_w, box_h = fm.horizontalAdvance(text) + 8, fm.height() + 2
            p.fillRect(x, scaled.height() - box_h - 2, box_w, box_h, QColor(0, 0, 0, 150))
            p.setPen(QColor("white"))
            p.drawText(x + 4, scaled.height() - 4 - fm.descent(), text)
        p.end()
        self.stripView.setPixmap(scaled)

    def _export_strip_dialog(self) -> None:
        name = (Path(self._photo_label).stem or "image") + f"_strip_seed{self.seed}.png"
        path, _ = QFileDialog.getSaveFileName(self, "Export strip", name, "PNG (*.png)")
        if path:
            if not path.lower().endswith(".png"):
                path += ".png"
            self.export_strip(path)

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
        step = max(1, round(T / (PLAY_SECONDS * PLAY_FPS)))
        t = self.timestep + step
        if t >= T - 1:
            self.set_timestep(T - 1)
            self.playButton.setChecked(False)
        else:
            self.set_timestep(t)

    # ----- UI ----------------------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        self.xtPane = ImagePane(self._xt_title(), "xtPane",
                                "x_t at the slider's t. Wheel: zoom, drag: pan, Ctrl+0: fit.")
        self.x0Pane = ImagePane("<b>x<sub>0</sub></b> — the photo", "x0Pane", "The clean photo x_0")
        self.noisePane = ImagePane("<b>ε</b> ~ N(0, I) — fixed for this photo and seed", "noisePane",
                                   "The noise ε = draw_noise(shape, seed), shown with x_t's mapping "
                                   "u8 = clip(127.5·x + 128): x_T ≈ ε")
        self.xtPane.viewbox.sigRangeChanged.connect(self._on_view_range)
        self.x0Pane.link_to(self.xtPane)
        self.noisePane.link_to(self.xtPane)
        self.x0Pane.hide()
        self.noisePane.hide()
        panes = QHBoxLayout()
        panes.setSpacing(6)
        for p in (self.xtPane, self.x0Pane, self.noisePane):
            panes.addWidget(p, 1)

        self.showX0Check = QCheckBox("show x₀")
        self.showX0Check.setObjectName("showX0Check")
        self.showX0Check.setToolTip("Show the clean photo x_0 beside x_t")
        self.showX0Check.toggled.connect(self.x0Pane.setVisible)
        self.showX0Check.toggled.connect(lambda _v: QTimer.singleShot(0, self.fit_view))
        self.showNoiseCheck = QCheckBox("show ε")
        self.showNoiseCheck.setObjectName("showNoiseCheck")
        self.showNoiseCheck.setToolTip("Show the noise ε beside x_t (x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε)")
        self.showNoiseCheck.toggled.connect(self.noisePane.setVisible)
        self.showNoiseCheck.toggled.connect(lambda _v: QTimer.singleShot(0, self.fit_view))
        self.fitButton = QPushButton("Fit")
        self.fitButton.setObjectName("fitViewButton")
        self.fitButton.setToolTip("Fit the photo to the view (Ctrl+0)")
        self.fitButton.clicked.connect(self.fit_view)

        self.modeCombo = QComboBox()
        self.modeCombo.setObjectName("modeCombo")
        self.modeCombo.addItem("Closed form q(x_t | x_0), eq. 5 — one ε for all t", CLOSED)
        self.modeCombo.addItem("Markov chain, eq. 2 — a new ε every step", CHAIN)
        self.modeCombo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.modeCombo.setMinimumContentsLength(16)
        self.modeCombo.setToolTip("Closed form: x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε with one ε for all t (eq. 5). "
                                  "Markov chain: x_t = √(1−β_t)·x_{t−1} + √β_t·ε_t, a new ε_t every step "
                                  "(eq. 2). They agree in distribution, not pixel for pixel.")
        self.modeCombo.currentIndexChanged.connect(self._on_mode)

        self.seedSpin = QSpinBox()
        self.seedSpin.setObjectName("noiseSeedSpin")  # "seedSpin" is the Generate panel's
        self.seedSpin.setRange(0, 2**31 - 1)
        self.seedSpin.setKeyboardTracking(False)
        self.seedSpin.setToolTip("Seed of ε (a seeded CPU torch.Generator: the same seed gives the same ε as "
                                 "`ddpm noise --seed` on every machine)")
        self.seedSpin.valueChanged.connect(lambda _v: self._x0 is not None and self._make_noise())
        self.newNoiseButton = QPushButton("New noise")
        self.newNoiseButton.setObjectName("newNoiseButton")
        self.newNoiseButton.setToolTip("Draw a new ε ~ N(0, I) (a random seed)")
        self.newNoiseButton.clicked.connect(self.new_noise)

        controls = QHBoxLayout()
        controls.addWidget(self.showX0Check)
        controls.addWidget(self.showNoiseCheck)
        controls.addWidget(self.fitButton)
        self.photoLabel = _ElidedLabel()
        self.photoLabel.setObjectName("photoLabel")
        self.photoLabel.setStyleSheet("color: #555;")
        self.photoLabel.setMinimumWidth(40)
        self.photoLabel.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        controls.addWidget(self.photoLabel, 1)
        controls.addStretch(1)
        controls.addWidget(QLabel("Seed"))
        controls.addWidget(self.seedSpin)
        controls.addWidget(self.newNoiseButton)
        mode_row = QHBoxLayout()
        mode_row.addWidget(QLabel("Mode"))
        mode_row.addWidget(self.modeCombo, 1)

        self.modeNote = QLabel(CHAIN_NOTE)
        self.modeNote.setObjectName("modeNote")
        self.modeNote.setWordWrap(True)
        self.modeNote.setStyleSheet("color: #8a4b00;")
        self.modeNote.hide()

        self.histogram = PixelHistogram()
        self.histogram.setFixedHeight(150)

        self.playButton = QPushButton("▶ Play")
        self.playButton.setObjectName("playButton")
        self.playButton.setCheckable(True)
        self.playButton.setToolTip("Animate t from here to T−1 (about 5 s per pass); click again to pause")
        self.playButton.toggled.connect(self._on_play)
        self.timestepSlider = QSlider(Qt.Orientation.Horizontal)
        self.timestepSlider.setObjectName("timestepSlider")
        self.timestepSlider.setToolTip("Timestep t (0…T−1): x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε. "
                                       "Arrows step by 1, Page Up/Down by T/20, Home/End jump to the ends.")
        self.timestepSlider.setRange(0, 999)
        self.timestepSlider.valueChanged.connect(self._on_slider)
        self.timestepSpin = QSpinBox()
        self.timestepSpin.setObjectName("timestepSpin")
        self.timestepSpin.setRange(0, 999)
        self.timestepSpin.setToolTip("Timestep t (0…T−1)")
        self.timestepSpin.valueChanged.connect(self.timestepSlider.setValue)
        self.tMaxLabel = QLabel("/ 999")
        slider_row = QHBoxLayout()
        slider_row.addWidget(self.playButton)
        slider_row.addWidget(QLabel("t"))
        slider_row.addWidget(self.timestepSlider, 1)
        slider_row.addWidget(self.timestepSpin)
        slider_row.addWidget(self.tMaxLabel)

        self.readout = QLabel()
        self.readout.setObjectName("timestepReadout")
        self.readout.setTextFormat(Qt.TextFormat.RichText)
        self.readout.setWordWrap(True)
        self.readout.setToolTip("β_t; ᾱ_t = Π(1−β_s); √ᾱ_t and √(1−ᾱ_t), the scales of x_0 and ε in x_t; "
                                "SNR = 10·log10(ᾱ_t/(1−ᾱ_t)) dB; PSNR(x_t, x_0) = 10·log10(2²/MSE) dB on the "
                                "[−1, 1] scale, before display clipping")
        self.readout.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.stripEdit = QLineEdit()
        self.stripEdit.setObjectName("stripTimesteps")
        self.stripEdit.setToolTip("Timesteps of the strip, comma-separated (default: the notes' 19, 39, 59, 79, 99 "
                                  "scaled to T). The strip uses the closed form with this photo's ε, like "
                                  "`ddpm noise`.")
        self.stripEdit.editingFinished.connect(self._on_strip_edited)
        self.exportStripButton = QPushButton("Export strip…")
        self.exportStripButton.setObjectName("exportStripButton")
        self.exportStripButton.setToolTip("Save x_0 and x_t at the strip's timesteps as one PNG, at full resolution "
                                          "(the same pixels as `ddpm noise IMAGE --seed S`)")
        self.exportStripButton.clicked.connect(self._export_strip_dialog)
        strip_row = QHBoxLayout()
        strip_row.addWidget(QLabel("Strip at t ="))
        strip_row.addWidget(self.stripEdit, 1)
        strip_row.addWidget(self.exportStripButton)
        self.stripView = _ResizeLabel(self._fit_strip)
        self.stripView.setObjectName("stripView")
        self.stripView.setToolTip("x_0, then x_t at each strip timestep (one shared ε)")
        self.stripView.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        self.stripView.setMinimumHeight(90)
        self.stripView.setMaximumHeight(130)
        self.stripView.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)

        left = QWidget()
        left.setObjectName("imageArea")
        lv = QVBoxLayout(left)
        lv.setContentsMargins(6, 6, 6, 6)
        lv.addLayout(panes, 1)
        lv.addLayout(controls)
        lv.addLayout(mode_row)
        lv.addWidget(self.modeNote)
        lv.addLayout(slider_row)
        lv.addWidget(self.readout)
        lv.addWidget(self.histogram)
        lv.addLayout(strip_row)
        lv.addWidget(self.stripView)

        self.panelTabs = QTabWidget()
        self.panelTabs.setObjectName("panelTabs")
        self.panelTabs.setToolTip("")
        self.panelTabs.addTab(self.schedule_panel, "Schedule")

        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.setObjectName("mainSplitter")
        self.splitter.addWidget(left)
        self.splitter.addWidget(self.panelTabs)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 2)
        self.splitter.setSizes([840, 600])
        self.setCentralWidget(self.splitter)
        self.statusBar().setObjectName("statusBar")
        self.photoBusy = QProgressBar()
        self.photoBusy.setObjectName("photoBusy")
        self.photoBusy.setRange(0, 0)   # busy: no percentage (a decoder says nothing about its progress)
        self.photoBusy.setMaximumWidth(120)
        self.photoBusy.setMaximumHeight(14)
        self.photoBusy.setTextVisible(False)
        self.photoBusy.setToolTip("Opening a photo (decoded and downscaled on a worker; the window stays usable)")
        self.statusBar().addPermanentWidget(self.photoBusy)
        self.photoBusy.hide()

    def _build_menus(self) -> None:
        mb = self.menuBar()
        file_menu = mb.addMenu("&File")
        self._action(file_menu, "&Open image…", self._open_dialog, "Ctrl+O", "openImageAction")
        samples = file_menu.addMenu("Built-in &samples")
        for name in SAMPLES:
            self._action(samples, SAMPLE_LABELS.get(name, name), lambda _c=False, n=name: self.open_sample(n),
                         None, f"sample{name.capitalize()}Action")
        self._action(file_menu, "&Paste image", self.paste_image, "Ctrl+V", "pasteImageAction")
        file_menu.addSeparator()
        self._action(file_menu, "&Export strip…", self._export_strip_dialog, "Ctrl+E", "exportStripAction")
        self._action(file_menu, "Save &screenshot…", self._screenshot_dialog, None, "screenshotAction")
        file_menu.addSeparator()
        self._action(file_menu, "&Quit", self.close, "Ctrl+Q", "quitAction")

        sched = mb.addMenu("&Schedule")
        undo, redo = self.schedule_panel.make_undo_actions(self)
        sched.addAction(undo)
        sched.addAction(redo)
        self.addAction(undo)
        self.addAction(redo)
        sched.addSeparator()
        self._action(sched, "The notes' example (linear, T = 100)", self.schedule_panel.apply_notes_example, None,
                     "notesExampleAction")
        self._action(sched, "Ho et al. (linear, T = 1000)",
                     lambda: self.schedule_panel.apply_preset("linear", T=1000, beta_start=1e-4, beta_end=0.02,
                                                              zero_snr=False), None, "hoPresetAction")
        self._action(sched, "&Load schedule…", self.schedule_panel._load_dialog, None, "loadScheduleAction")
        self._action(sched, "&Save schedule…", self.schedule_panel._save_dialog, None, "saveScheduleAction")
        pin = self._action(sched, "&Pin as reference", self.schedule_panel.set_pinned, None, "pinScheduleAction")
        pin.setCheckable(True)
        self.schedule_panel.pinButton.toggled.connect(pin.setChecked)

        view = mb.addMenu("&View")
        for check in (self.showX0Check, self.showNoiseCheck):
            a = QAction(check.text(), self, checkable=True)
            a.setObjectName(check.objectName().replace("Check", "Action"))
            a.toggled.connect(check.setChecked)
            check.toggled.connect(a.setChecked)
            view.addAction(a)
        self._action(view, "&Fit image", self.fit_view, "Ctrl+0", "fitViewAction")
        play = self._action(view, "&Play / pause", self.playButton.toggle, "Ctrl+Space", "playAction")
        del play

        help_menu = mb.addMenu("&Help")
        self._action(help_menu, "&About DDPM Studio", self._about, None, "aboutAction")

    def _action(self, menu, text, slot, shortcut, name) -> QAction:
        a = QAction(text, self)
        a.setObjectName(name)
        if shortcut:
            a.setShortcut(QKeySequence(shortcut))
        a.triggered.connect(slot)
        menu.addAction(a)
        self.addAction(a)
        return a

    def _open_dialog(self) -> None:
        start = str(self._photo_path.parent) if self._photo_path else ""
        path, _ = QFileDialog.getOpenFileName(self, "Open image", start, IMAGE_FILTER)
        if path:
            self.open_image(path)

    def _screenshot_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save screenshot", "ddpm-studio.png", "PNG (*.png)")
        if path:
            try:
                self.save_screenshot(path)
            except Exception as e:  # noqa: BLE001 - always one line
                self.show_error(one_line(e), title="Save screenshot")

    def _about(self) -> None:
        box = QMessageBox(QMessageBox.Icon.Information, "About DDPM Studio",
                          "DDPM Studio: see denoising diffusion happen. Drag t to noise the photo; drag the "
                          "schedule's points to reshape β_t.", QMessageBox.StandardButton.Ok, self)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.open()

    # ----- drag and drop -----------------------------------------------------------------------------------
    def dragEnterEvent(self, ev):  # noqa: N802 - Qt override
        mime = ev.mimeData()
        if (mime.hasUrls() and any(u.isLocalFile() for u in mime.urls())) or mime.hasImage():
            ev.acceptProposedAction()
        else:
            ev.ignore()

    def dragMoveEvent(self, ev):  # noqa: N802 - Qt override
        self.dragEnterEvent(ev)

    def dropEvent(self, ev):  # noqa: N802 - Qt override
        mime = ev.mimeData()
        files = [u.toLocalFile() for u in mime.urls() if u.isLocalFile()] if mime.hasUrls() else []
        if files:
            ev.acceptProposedAction()
            self.open_image(files[0])
        elif mime.hasImage():
            ev.acceptProposedAction()
            self.set_image_array(from_uint8(_flatten_alpha(QImage(mime.imageData()))), "dropped image")
        else:
            ev.ignore()

    # ----- settings and closing ----------------------------------------------------------------------------
    def _restore_settings(self) -> dict:
        s = self._settings
        out: dict = {}
        geometry = s.value("window/geometry")
        if isinstance(geometry, (QByteArray, bytes)) and self.restoreGeometry(QByteArray(geometry)):
            out["geometry"] = True
        text = s.value("schedule/json")
        if isinstance(text, str) and text:
            try:
                self.schedule_panel.set_schedule(NoiseSchedule.from_json(text), "Restore schedule")
                self.schedule_panel.undo_stack.clear()
            except Exception:  # noqa: BLE001 - a hand-edited settings file never breaks the window
                pass
        seed = settings_mod.int_value(s, "noise/seed")
        if seed is not None and 0 <= seed <= self.seedSpin.maximum():
            with QSignalBlocker(self.seedSpin):
                self.seedSpin.setValue(seed)
        t = settings_mod.int_value(s, "view/t")
        if t is not None:
            out["t"] = t
        sample = s.value("photo/sample")
        path = s.value("photo/path")
        if isinstance(sample, str) and sample in SAMPLES:
            out["photo"] = ("sample", sample)
        elif isinstance(path, str) and path and Path(path).is_file():
            out["photo"] = ("path", path)
        for key, check in (("view/showX0", self.showX0Check), ("view/showNoise", self.showNoiseCheck)):
            v = settings_mod.bool_value(s, key)
            if v is not None:
                check.setChecked(v)
        curve = s.value("schedule/curve")
        if isinstance(curve, str):
            try:
                self.schedule_panel.set_curve(curve)
            except KeyError:
                pass
        return out

    def save_settings(self) -> None:
        s = self._settings
        if s is None:
            return
        s.setValue("window/geometry", self.saveGeometry())
        s.setValue("schedule/json", self.schedule.to_json())
        s.setValue("schedule/curve", self.schedule_panel.curve)
        s.setValue("noise/seed", self.seed)
        s.setValue("view/t", self.timestep)
        s.setValue("view/showX0", self.showX0Check.isChecked())
        s.setValue("view/showNoise", self.showNoiseCheck.isChecked())
        s.setValue("photo/sample", self._sample_name or "")
        s.setValue("photo/path", str(self._photo_path) if self._photo_path and not self._sample_name else "")
        s.sync()

    def closeEvent(self, ev):  # noqa: N802 - Qt override
        """Closing never waits more than about a second (:data:`~ddpm_gui.worker.CLOSE_WAIT_S`): every run is
        detached and asked to stop; one that yields stops at its next yield, one inside a call that cannot be
        interrupted (a slow model load) is abandoned — its daemon thread never holds up or aborts the exit."""
        self._closing = True
        self._play_timer.stop()
        self._render_timer.stop()
        self._aux_timer.stop()
        self._strip_timer.stop()
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
        self._fit_strip()


CHAIN_NOTE = ("Markov chain: a fresh ε_t at every step. It agrees with the closed form in distribution, "
              "not pixel for pixel.")


class _ElidedLabel(QLabel):
    """A one-line label that ends in … when it is too narrow (the full text is in its tooltip)."""

    def paintEvent(self, ev):  # noqa: N802 - Qt override
        p = QPainter(self)
        p.setPen(self.palette().color(self.foregroundRole()))
        text = self.fontMetrics().elidedText(self.text(), Qt.TextElideMode.ElideRight, self.width())
        p.drawText(self.rect(), int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter), text)
        p.end()


class _ResizeLabel(QLabel):
    def __init__(self, on_resize):
        super().__init__()
        self._on_resize = on_resize

    def resizeEvent(self, ev):  # noqa: N802 - Qt override
        super().resizeEvent(ev)
        self._on_resize()


def _psnr(mse: float) -> float:
    if math.isnan(mse):
        return math.nan
    return math.inf if mse <= 0 else 10.0 * math.log10(4.0 / mse)


def _flatten_alpha(qimg: QImage) -> np.ndarray:
    """A QImage → H×W×3 uint8, transparency composited over white (as core.images does for files)."""
    if qimg.hasAlphaChannel():
        bg = QImage(qimg.size(), QImage.Format.Format_RGB888)
        bg.fill(Qt.GlobalColor.white)
        p = QPainter(bg)
        p.drawImage(0, 0, qimg)
        p.end()
        qimg = bg
    return u8_from_qimage(qimg)
