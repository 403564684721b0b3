"""The 2D tab's plots (pyqtgraph): a square view of the plane that can be painted on, with a heatmap, particles,
arrows, trajectories and the N(0, I) circles. Fast paths: each cloud is a :class:`FastPoints` (one
``drawPoints`` call over a QPolygonF filled through numpy), arrows and
trajectories as single curves (``connect="pairs"`` / NaN breaks), the heatmap as one ImageItem with a fixed LUT."""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
import pyqtgraph.functions as fn
from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QPen

from core.lab2d.render import EXTENT

PARTICLE_BRUSH = pg.mkBrush(255, 255, 255, 200)
DATA_BRUSH = pg.mkBrush(160, 160, 160, 160)
EXACT_PEN = pg.mkPen(255, 170, 0, width=1.2)
LEARNED_PEN = pg.mkPen(0, 200, 255, width=1.2)
RECT = QRectF(-EXTENT, -EXTENT, 2 * EXTENT, 2 * EXTENT)
SAMPLER_COLORS = {"ddpm": (31, 119, 180), "ddim": (214, 39, 40), "dpmpp2m": (44, 160, 44)}


class FastPoints(pg.GraphicsObject):
    """N points drawn as one ``QPainter.drawPoints`` call with a wide cosmetic pen (square dots of ``size`` px):
    ``setData(x=…, y=…)`` writes into a QPolygonF's buffer through numpy (no per-point objects), so 10,000 points
    update and paint in a few ms — pyqtgraph's ScatterPlotItem rebuilds a record array per call (≈ 15 ms here)."""

    def __init__(self, size: float = 3.0, brush=None):
        super().__init__()
        self._poly = fn.create_qpolygonf(0)
        self._x = self._y = np.zeros(0)
        self._rect = QRectF()
        self._pen = QPen(QColor(255, 255, 255), float(size))
        self._pen.setCosmetic(True)
        self._pen.setCapStyle(Qt.PenCapStyle.SquareCap)
        if brush is not None:
            self.setBrush(brush)

    def setBrush(self, brush) -> None:  # noqa: N802 - the scatter's name
        self._pen.setColor(pg.mkBrush(brush).color())
        self.update()

    def setData(self, x, y) -> None:  # noqa: N802
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        n = len(x)
        if self._poly.size() != n:
            self._poly = fn.create_qpolygonf(n)
        if n:
            buf = fn.ndarray_from_qpolygonf(self._poly)
            buf[:, 0], buf[:, 1] = x, y
        self._x, self._y = x, y
        self.prepareGeometryChange()
        self._rect = QRectF(-EXTENT, -EXTENT, 2 * EXTENT, 2 * EXTENT) if n else QRectF()
        self.update()

    def getData(self):  # noqa: N802
        return self._x, self._y

    def boundingRect(self) -> QRectF:  # noqa: N802 - points outside are culled by the view anyway
        return self._rect

    def paint(self, p, *args) -> None:
        if self._poly.size():
            p.setPen(self._pen)
            p.drawPoints(self._poly)


class PaintBox(pg.ViewBox):
    """A ViewBox that hands left-button clicks and drags to ``painter(x, y, start)`` while ``painter`` is set;
    otherwise it pans and zooms as usual."""

    def __init__(self):
        super().__init__(lockAspect=True)
        self.painter = None

    def _paint(self, ev, start: bool) -> bool:
        if self.painter is None or ev.button() != Qt.MouseButton.LeftButton:
            return False
        ev.accept()
        p = self.mapSceneToView(ev.scenePos())
        self.painter(p.x(), p.y(), start)
        return True

    def mouseDragEvent(self, ev, axis=None):  # noqa: N802 - pyqtgraph's name
        if not self._paint(ev, ev.isStart()):
            super().mouseDragEvent(ev, axis)

    def mouseClickEvent(self, ev):  # noqa: N802
        if not self._paint(ev, True):
            super().mouseClickEvent(ev)


def _circle(r: float, pen) -> pg.PlotCurveItem:
    th = np.linspace(0, 2 * np.pi, 121)
    return pg.PlotCurveItem(r * np.cos(th), r * np.sin(th), pen=pen)


class CloudPlot(pg.PlotWidget):
    """A square plot of [−EXTENT, EXTENT]²: ``heat`` (ImageItem), ``data`` and ``cloud`` (scatters), ``trails``,
    ``arrows`` and ``learned_arrows`` (curves), and the circles ‖x‖ = 1, 2 of N(0, I)."""

    def __init__(self, name: str, title: str = "", dark: bool = True, parent=None):
        self.box = PaintBox()
        super().__init__(parent, viewBox=self.box, title=title)
        self.setObjectName(name)
        self.setBackground((20, 20, 28) if dark else "w")
        self.setXRange(-EXTENT, EXTENT, padding=0)
        self.setYRange(-EXTENT, EXTENT, padding=0)
        self.showGrid(False, False)
        self.heat = pg.ImageItem(axisOrder="col-major")
        self.heat.setLookupTable(pg.colormap.get("viridis").getLookupTable(nPts=256))
        self.heat.setZValue(-10)
        self.addItem(self.heat)
        ring = pg.mkPen(200, 200, 200, 120, width=1, style=Qt.PenStyle.DashLine)
        for r in (1.0, 2.0):
            self.addItem(_circle(r, ring))
        self.data = FastPoints(3, DATA_BRUSH)
        self.trails = pg.PlotCurveItem(pen=pg.mkPen(255, 255, 255, 60), connect="finite")
        self.cloud = FastPoints(3, PARTICLE_BRUSH)
        self.arrows = pg.PlotCurveItem(pen=EXACT_PEN, connect="pairs")
        self.learned_arrows = pg.PlotCurveItem(pen=LEARNED_PEN, connect="pairs")
        for item in (self.data, self.trails, self.cloud, self.arrows, self.learned_arrows):
            self.addItem(item)

    def set_cloud(self, xy, item=None) -> None:
        item = self.cloud if item is None else item
        xy = np.asarray(xy) if xy is not None else np.zeros((0, 2))
        item.setData(x=xy[:, 0], y=xy[:, 1])

    def set_color(self, rgb) -> None:
        self.cloud.setBrush(pg.mkBrush(*rgb, 220))
        self.trails.setPen(pg.mkPen(*rgb, 70))

    def set_trails(self, trail) -> None:
        """``trail``: steps × K × 2 (None clears): K polylines separated by NaN."""
        if trail is None or len(trail) < 2:
            self.trails.setData([], [])
            return
        t = np.asarray(trail, np.float64).transpose(1, 0, 2)                 # K × steps × 2
        t = np.concatenate([t, np.full((t.shape[0], 1, 2), np.nan)], 1).reshape(-1, 2)
        self.trails.setData(t[:, 0], t[:, 1])

    def set_arrows(self, seg, item=None) -> None:
        item = self.arrows if item is None else item
        if seg is None or len(seg) == 0:
            item.setData([], [])
        else:
            item.setData(seg[:, 0], seg[:, 1])

    def set_heat(self, values, levels=None) -> None:
        """``values``: G×G with rows = y, columns = x (None hides the heatmap)."""
        if values is None:
            self.heat.hide()
            return
        v = np.asarray(values, np.float32).T
        hi = float(np.nanmax(v)) if levels is None else levels[1]
        self.heat.setImage(v, autoLevels=False, levels=(0.0 if levels is None else levels[0], max(hi, 1e-12)))
        self.heat.setRect(RECT)       # after setImage: the rect scales the image's own pixel size
        self.heat.show()
