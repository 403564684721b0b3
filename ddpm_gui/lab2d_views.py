"""The 2D tab's plots (pyqtgraph): a square view of the plane that can be painted on, with a heatmap, particles,
arrows, trajectories and the N(0, I) circles. Fast paths: one ScatterPlotItem per cloud updated with
``setData(x=…, y=…)`` (one symbol, one pen, one brush: pyqtgraph draws it from one cached pixmap), arrows and
trajectories as single curves (``connect="pairs"`` / NaN breaks), the heatmap as one ImageItem with a fixed LUT."""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt

from core.lab2d.render import EXTENT

PARTICLE_BRUSH = pg.mkBrush(255, 255, 255, 200)
DATA_BRUSH = pg.mkBrush(160, 160, 160, 160)
EXACT_PEN = pg.mkPen(255, 170, 0, width=1.2)
LEARNED_PEN = pg.mkPen(0, 200, 255, width=1.2)
RECT = QRectF(-EXTENT, -EXTENT, 2 * EXTENT, 2 * EXTENT)
SAMPLER_COLORS = {"ddpm": (31, 119, 180), "ddim": (214, 39, 40), "dpmpp2m": (44, 160, 44)}


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
        self.data = pg.ScatterPlotItem(pxMode=True, size=3, pen=None, brush=DATA_BRUSH)
        self.trails = pg.PlotCurveItem(pen=pg.mkPen(255, 255, 255, 60), connect="finite")
        self.cloud = pg.ScatterPlotItem(pxMode=True, size=3, pen=None, brush=PARTICLE_BRUSH)
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
