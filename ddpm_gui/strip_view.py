"""The strip under the main view: x_0, then x_t at each strip timestep with the photo's one ε (eq. 5,
:func:`core.forward.q_sample`), as small tiles captioned with their t and fitted to the label's size. In latent
space the tiles are D(z_0/s) and D(z_t/s), decoded on a worker (:meth:`StripView.show_frames`)."""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QPainter
from PySide6.QtWidgets import QLabel, QSizePolicy

from core.forward import q_sample
from core.images import make_grid
from core.schedule import NoiseSchedule
from ddpm_gui.image_views import qpixmap_from_u8

STRIP_THUMB_HEIGHT = 120   # tiles are the photo at every s-th pixel, s = its height // this


class StripView(QLabel):
    """The strip's picture; :meth:`show_strip` makes it, a resize refits it (captions drawn at the shown size)."""

    def __init__(self):
        super().__init__()
        self.setObjectName("stripView")
        self.setToolTip("x_0, then x_t at each strip timestep (one shared ε)")
        self.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        self.setMinimumHeight(90)
        self.setMaximumHeight(130)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self._pixmap = None
        self._captions: list[tuple[float, str]] = []   # (left edge as a fraction of the width, text)

    def show_strip(self, x0: np.ndarray, noise: np.ndarray, schedule: NoiseSchedule, timesteps: list[int]) -> None:
        step = max(1, x0.shape[0] // STRIP_THUMB_HEIGHT)
        x0, eps = x0[::step, ::step], noise[::step, ::step]
        frames = [x0] + [q_sample(x0, t, eps, schedule) for t in timesteps]
        self.show_frames(frames, ["x₀"] + [f"t = {t}" for t in timesteps])

    def show_frames(self, frames: list, captions: list[str]) -> None:
        """Tiles side by side (H×W×3 in [−1, 1], or uint8), each under its caption (the latent strip's path)."""
        grid = make_grid(frames, ncols=len(frames), pad=3)
        self._pixmap = qpixmap_from_u8(grid)
        tile_w = frames[0].shape[1] + 3
        self._captions = [(i * tile_w / grid.shape[1], text) for i, text in enumerate(captions)]
        self._fit()

    def resizeEvent(self, ev):  # noqa: N802 - Qt override
        super().resizeEvent(ev)
        self._fit()

    def _fit(self) -> None:
        pm = self._pixmap
        if pm is None:
            return
        w, h = max(50, self.width()), max(30, self.height())
        scaled = pm.scaled(w, h, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation)
        p = QPainter(scaled)
        font = p.font()
        font.setPointSizeF(8.5)
        p.setFont(font)
        fm = p.fontMetrics()
        for frac, text in self._captions:
            x = int(frac * scaled.width()) + 2
            box_w, box_h = fm.horizontalAdvance(text) + 8, fm.height() + 2
            p.fillRect(x, scaled.height() - box_h - 2, box_w, box_h, QColor(0, 0, 0, 150))
            p.setPen(QColor("white"))
            p.drawText(x + 4, scaled.height() - 4 - fm.descent(), text)
        p.end()
        self.setPixmap(scaled)
