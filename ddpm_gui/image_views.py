"""Image panes and the pixel histogram: pyqtgraph views that only show arrays computed elsewhere."""
from __future__ import annotations

import math
import time

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import QLabel, QSizePolicy, QVBoxLayout, QWidget

from core.readout import normal_density
from ddpm_gui.widgets import named

IMAGE_BACKGROUND = "#202124"


class FrameView(pg.GraphicsView):
    """A GraphicsView that reports each finished paint (``painted(perf_counter_time)``) — what the slider
    benchmark waits for, and a hook for tests."""

    painted = Signal(float)

    def __init__(self, parent=None):
        super().__init__(parent, background=IMAGE_BACKGROUND)

    def paintEvent(self, ev):  # noqa: N802 - Qt override
        super().paintEvent(ev)
        self.painted.emit(time.perf_counter())


class ImagePane(QWidget):
    """A title over a zoomable, aspect-locked view of one H×W×3 uint8 image (row-major, origin top-left).

    ``set_image`` takes ownership of the array it is given (pass a fresh one per frame: pyqtgraph wraps it in a
    QImage without copying)."""

    def __init__(self, title: str, object_name: str, tooltip: str, parent=None):
        super().__init__(parent)
        self.setObjectName(object_name)
        self.title = named(QLabel(title), f"{object_name}Title")
        self.title.setTextFormat(Qt.TextFormat.RichText)
        self.title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.title.setWordWrap(True)   # a long title wraps instead of widening its pane: linked panes of unequal
        self.title.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)  # widths, each locking
        # its aspect, would push each other's range wider at every relayout
        self.view = named(FrameView(), f"{object_name}View", tooltip)
        self.view.setAcceptDrops(False)  # drops go to the main window
        self.view.setMinimumSize(160, 120)
        self.view.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.viewbox = pg.ViewBox(lockAspect=True, invertY=True, enableMenu=False)
        self.viewbox.setMouseEnabled(True, True)
        self.view.setCentralItem(self.viewbox)
        self.item = pg.ImageItem(axisOrder="row-major")
        self.viewbox.addItem(self.item)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.title)
        layout.addWidget(self.view, 1)
        self._shape: tuple[int, int] | None = None
        self._stride = 1

    @property
    def image(self) -> np.ndarray | None:
        """The array being shown (uint8 H×W×3; every ``stride``-th pixel of the full image when decimated)."""
        return self.item.image

    @property
    def stride(self) -> int:
        return self._stride

    def set_image(self, u8: np.ndarray, stride: int = 1, full_shape: tuple[int, int] | None = None) -> None:
        """Show ``u8``. With ``stride`` s > 1 it is the full image's ``[::s, ::s]`` subsample and is drawn at
        the full image's size, so zoom and coordinates stay in full-resolution pixels."""
        h, w = u8.shape[:2]
        full = full_shape or (h, w)
        self.item.setImage(u8, autoLevels=False, levels=None)
        if stride != 1 or self._stride != 1:
            self.item.setRect(QRectF(0, 0, w * stride, h * stride))
        self._stride = stride
        if full != self._shape:
            self._shape = full
            self.fit()

    def pixels_per_screen_pixel(self) -> float:
        """How many full-resolution image pixels one device pixel of the view covers (the smaller axis)."""
        sx, sy = self.viewbox.viewPixelSize()
        dpr = self.view.devicePixelRatioF() or 1.0
        return max(1e-9, min(abs(sx), abs(sy)) / dpr)

    def fit(self) -> None:
        if self._shape is not None:
            h, w = self._shape
            self.viewbox.setRange(xRange=(0, w), yRange=(0, h), padding=0.01)

    def link_to(self, other: "ImagePane") -> None:
        self.viewbox.setXLink(other.viewbox)
        self.viewbox.setYLink(other.viewbox)


def style_plot(pw: pg.PlotWidget) -> None:
    """Light plot style that reads well next to Qt's widgets. No grid: pyqtgraph draws a grid as part of the
    axes, which then cover the whole plot and repaint whenever anything in it moves (the t marker, the
    histogram) — that was the largest cost of a slider frame."""
    pw.setBackground("w")
    for name in ("left", "bottom", "right", "top"):
        ax = pw.getAxis(name)
        ax.setPen(pg.mkPen("#444"))
        ax.setTextPen(pg.mkPen("#222"))
        ax.enableAutoSIPrefix(False)  # "β_t (x0.001)" with ticks in thousandths confuses more than it helps


class PixelHistogram(pg.PlotWidget):
    """Density histogram of x_t's values (a fixed subsample of pixels) with the N(0, 1) density overlaid."""

    RANGE = 4.0
    BINS = 96

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("pixelHistogram")
        self.setAcceptDrops(False)
        style_plot(self)
        self.setMenuEnabled(False)
        self.setMouseEnabled(False, False)
        self.hideButtons()
        self.edges = np.linspace(-self.RANGE, self.RANGE, self.BINS + 1)
        self.addLegend(offset=(-8, 6), labelTextColor="#222", brush=pg.mkBrush(255, 255, 255, 220),
                       pen=pg.mkPen("#bbb"))
        self.hist = self.plot(self.edges, np.zeros(self.BINS), stepMode="center", fillLevel=0, name="x<sub>t</sub>",
                              brush=pg.mkBrush(70, 130, 220, 110), pen=pg.mkPen(40, 90, 180, width=1))
        xs = np.linspace(-self.RANGE, self.RANGE, 241)
        self.normal = self.plot(xs, normal_density(xs),
                                pen=pg.mkPen(215, 60, 40, width=2), name="N(0, 1) density")
        self.setXRange(-self.RANGE, self.RANGE, padding=0)
        self.setLabel("left", "density")
        self.getPlotItem().getViewBox().setLimits(xMin=-self.RANGE, xMax=self.RANGE)
        self.counts = np.zeros(self.BINS)
        self._top = None
        self.set_subject(latent=False)

    def set_subject(self, latent: bool) -> None:
        """What the values are: pixels of x_t, or (``latent``) the latents z_t of a Stable Diffusion VAE."""
        if latent:
            tip = ("Histogram of the latents z_t (every value of the C×h×w latents, or a fixed sample of 65,536) "
                   "against the standard normal density φ(z) = exp(−z²/2)/√(2π): SD's scaled latents z_0 = s·E(x) "
                   "have σ ≈ 1, and z_t = √ᾱ_t·z_0 + √(1−ᾱ_t)·ε drifts to N(0, I) as t → T.")
            label = "value of a latent of z<sub>t</sub>"
        else:
            tip = ("Histogram of x_t's values (a fixed sample of up to 65,536 values, before display clipping) "
                   "against the standard normal density φ(x) = exp(−x²/2)/√(2π): as t → T, "
                   "x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε drifts to N(0, I).")
            label = "value of a pixel of x<sub>t</sub> (before display clipping)"
        self.setToolTip(tip)
        self.setLabel("bottom", label)
        self.hist.opts["name"] = "z<sub>t</sub>" if latent else "x<sub>t</sub>"
        legend = self.getPlotItem().legend
        if legend is not None:
            for sample, text in legend.items:
                if sample.item is self.hist:
                    text.setText(self.hist.opts["name"])

    def set_values(self, values: np.ndarray) -> None:
        counts, _ = np.histogram(values, bins=self.edges)
        total = max(1, values.size)
        density = counts / (total * (self.edges[1] - self.edges[0]))
        self.counts = density
        self.hist.setData(self.edges, density)
        top = max(0.45, math.ceil(float(density.max()) * 1.05 / 0.1) * 0.1)  # steps of 0.1: axes rarely redraw
        if top != self._top:
            self._top = top
            self.setYRange(0, top, padding=0)


def qpixmap_from_u8(u8: np.ndarray) -> QPixmap:
    """H×W×3 uint8 → QPixmap (the pixels are copied, so the array may be freed afterwards)."""
    u8 = np.ascontiguousarray(u8)
    h, w = u8.shape[:2]
    qimg = QImage(u8.data, w, h, 3 * w, QImage.Format.Format_RGB888)
    return QPixmap.fromImage(qimg.copy())


def u8_from_qimage(qimg: QImage) -> np.ndarray:
    """A QImage of any format → H×W×3 uint8 (copied)."""
    img = qimg.convertToFormat(QImage.Format.Format_RGB888)
    w, h, bpl = img.width(), img.height(), img.bytesPerLine()
    buf = np.frombuffer(img.constBits(), dtype=np.uint8, count=h * bpl).reshape(h, bpl)
    return buf[:, :3 * w].reshape(h, w, 3).copy()
