"""How photos come into the main window: a file (File ▸ Open, the command line, the settings, a drop), a built-in
sample, the clipboard or an array (:meth:`PhotoIntake.open_image` says how a large file is opened on a worker).
Whatever goes wrong is one line, and the photo shown before stays.

:class:`PhotoIntake` is that part of :class:`~ddpm_gui.main_window.MainWindow` (a mixin); the window makes what it
hands over current with ``_show_photo``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication, QImage, QPainter

from core.images import from_uint8, sample_path
from core.messages import first_line, one_line
from core.photo import LoadedPhoto, load_photo, peek_size, photo_from_array, photo_job, prepare_photo
from ddpm_gui.image_views import u8_from_qimage

SYNC_MAX_PIXELS = 512 * 512        # a photo file up to this size opens at once (≈ 50 ms); larger ones on a worker
SAMPLE_LABELS = {"chelsea": "Chelsea the cat", "coffee": "Coffee", "astronaut": "Astronaut (Eileen Collins)"}


class PhotoIntake:
    """Opening photos, for the main window (see the module docstring). It uses the window's ``_photo_runner``,
    ``seed``, ``_show_photo``, ``show_error``, ``photoFailed`` and ``photoBusy``."""

    _pending_photo: tuple[Path, bool] | None = None   # (path, quiet) of the photo loading on a worker
    _pending_name = ""

    @property
    def photo_loading(self) -> bool:
        """True while a photo file is being opened on a worker (``photoLoaded`` or ``photoFailed`` follows)."""
        return self._pending_photo is not None

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
            photo = load_photo(sample_path(name))
            prepared = prepare_photo(photo.x0, self.seed)
        except Exception as e:  # noqa: BLE001
            self._photo_failed(one_line(e), False, title="Cannot open sample", fallback=False)
            return False
        self._show_photo(photo, prepared, SAMPLE_LABELS.get(name, name), name)
        return True

    def set_image_array(self, x0: np.ndarray, label: str = "image") -> None:
        """Use an H×W×3 float array in [−1, 1] as the photo (e.g. pasted); shown at once (downscaled to the
        working size, 2048×2048 pixels at most, when it is larger)."""
        photo = photo_from_array(x0, label)   # ValueError for another shape, before anything changes
        self._photo_runner.discard()
        self._pending_photo = None
        self._set_busy(None)
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
                self.set_image_array(from_uint8(flatten_alpha(qimg)), "pasted image")
                return True
        self.show_error("The clipboard holds no image", title="Paste")
        return False

    # ----- drag and drop -----------------------------------------------------------------------------------
    def dragEnterEvent(self, ev):  # noqa: N802 - Qt override
        mime = ev.mimeData()
        if (mime.hasUrls() and any(u.isLocalFile() for u in mime.urls())) or mime.hasImage():
            ev.acceptProposedAction()
        else:
            ev.ignore()

    dragMoveEvent = dragEnterEvent  # noqa: N815 - Qt override

    def dropEvent(self, ev):  # noqa: N802 - Qt override
        mime = ev.mimeData()
        files = [u.toLocalFile() for u in mime.urls() if u.isLocalFile()] if mime.hasUrls() else []
        if files:
            ev.acceptProposedAction()
            self.open_image(files[0])
        elif mime.hasImage():
            ev.acceptProposedAction()
            self.set_image_array(from_uint8(flatten_alpha(QImage(mime.imageData()))), "dropped image")
        else:
            ev.ignore()

    # ----- the photo worker's results ----------------------------------------------------------------------
    def _on_photo_stage(self, stage) -> None:
        if self._pending_photo is not None and isinstance(stage, str):
            self._set_busy(f"Opening {self._pending_name}: {stage}…")

    def _on_photo_loaded(self, loaded: LoadedPhoto) -> None:
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
        message = first_line(message)
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


def flatten_alpha(qimg: QImage) -> np.ndarray:
    """A QImage → H×W×3 uint8, transparency composited over white (as core.images does for files)."""
    if qimg.hasAlphaChannel():
        bg = QImage(qimg.size(), QImage.Format.Format_RGB888)
        bg.fill(Qt.GlobalColor.white)
        p = QPainter(bg)
        p.drawImage(0, 0, qimg)
        p.end()
        qimg = bg
    return u8_from_qimage(qimg)
