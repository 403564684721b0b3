"""The "2D" tab: a point cloud's diffusion with the exact answers beside a learned network (issue 18).

The canvas (``lab2dCanvas``) follows the window's timestep slider and schedule: the data's x_t = √ᾱ_t·x_0 +
√(1−ᾱ_t)·ε with one fixed ε = draw_noise((M, 2), window seed) (eq. 5, the photo's rule), over a heatmap of the exact
marginal q(x_t) (:func:`core.lab2d.exact.density_grid`, its s floored at half a cell for display) or of
‖ε̂_exact − ε̂_learned‖, with arrows of the exact ε̂(x, t) (orange) and the learned one (cyan), or of the score
−ε̂/√(1−ᾱ_t). Generate runs :func:`core.samplers.sample` on the particles (:func:`core.lab2d.run.lockstep`: DDPM and
DDIM from the same x_T, side by side); Learn trains :class:`core.lab2d.mlp.Trainer2D` on a worker (Stop/Resume);
Measure plots the energy distance against the number of steps (:func:`core.lab2d.run.sweep`), the figures
``ddpm lab2d`` prints for the same data, seed and particles. ``Lab2DPanel.install(window)`` adds the tab.
"""
from __future__ import annotations

import time

import numpy as np
import pyqtgraph as pg
import torch
from PySide6.QtCore import QTimer, Qt, Signal
from PySide6.QtWidgets import QFileDialog

from core.forward import draw_noise
from core.lab2d import data as pts
from core.lab2d.exact import Exact2D, density_grid, eps_field, grid_axes, score_from_eps
from core.lab2d.mlp import LearnConfig, Trainer2D, denoiser_from_weights
from core.lab2d.quality import energy_distance
from core.lab2d.render import EXTENT, arrow_segments
from core.lab2d.run import SHORT_NAMES, check_run, final_particles, lockstep, sweep
from core.messages import one_line
from core.samplers import SAMPLERS
from ddpm_gui.lab2d_views import SAMPLER_COLORS
from ddpm_gui.widgets import JobPanel

HEAT_SIZE, DIFF_SIZE, ARROW_SIZE = 128, 48, 21
FIELD_MS = 50          # the heatmap and arrows follow a dragged slider at most 20 times a second
TRAIL_KEEP, PREVIEW_N, PREVIEW_STEPS = 60, 1000, 20


class Lab2DPanel(JobPanel):
    """The 2D tab. ``points`` is the data (M×2); ``result`` the last Generate's {sampler: Row}; ``rows`` the
    Measure rows so far; ``learned`` the learned denoiser (or None)."""

    TITLE = "2D"
    generated = Signal(object)     # {sampler: Row}
    measured = Signal(object)      # list of Row
    learnStepped = Signal(int)

    @classmethod
    def install(cls, window) -> "Lab2DPanel":
        panel = cls(window)
        window.add_panel("2D", panel)
        return panel

    def __init__(self, window, parent=None):
        super().__init__(window, parent)
        self.setObjectName("lab2dPanel")
        self.points = np.zeros((0, 2))
        self._undo: list[np.ndarray] = []
        self._eps = np.zeros((0, 2), np.float32)
        self._eps_seed = None
        self.exact: Exact2D | None = None
        self.trainer: Trainer2D | None = None
        self.learned = None
        self.result: dict = {}
        self.rows: list = []
        self.losses: list[float] = []
        self.frames_drawn = 0
        self._dirty = True
        self._rng = np.random.default_rng(12345)
        self.gen_runner = window.create_runner("2d-generate")
        self.learn_runner = window.create_runner("2d-learn")
        self.measure_runner = window.create_runner("2d-measure")
        self._build()
        self._redraw_timer = QTimer(self)
        self._redraw_timer.setSingleShot(True)
        self._redraw_timer.setInterval(0)
        self._redraw_timer.timeout.connect(self.redraw)
        self._fields_at, self._fields_cost = 0.0, 0.0
        self.fields_t = None
        self._fields_timer = QTimer(self)
        self._fields_timer.setSingleShot(True)
        self._fields_timer.timeout.connect(self.redraw_fields)
        self._loss_timer = QTimer(self)
        self._loss_timer.setSingleShot(True)
        self._loss_timer.setInterval(100)
        self._loss_timer.timeout.connect(self._draw_loss)
        window.timestepChanged.connect(self._request)
        window.scheduleChanged.connect(self._on_schedule)
        window.imageChanged.connect(self._on_image)
        self.set_data("moons")

    def _build(self) -> None:
        from ddpm_gui.lab2d_ui import build
        build(self)

    # ----- data ---------------------------------------------------------------------------------------------------
    def set_data(self, kind: str) -> bool:
        """Choose the point set: a preset name, ``"paint"`` (empty, paint with the mouse), ``"photo"`` or
        ``"file"`` (a dialog). False, with one line in the status, when it cannot be had."""
        i = self.dataCombo.findData(kind)
        if kind == "file":
            path, _ = QFileDialog.getOpenFileName(self, "Open points", "", "Points (*.csv *.npz)")
            return self.load_file(path) if path else False
        try:
            if kind in pts.PRESETS:
                new = pts.preset(kind, self.pointsSpin.value(), self.seedSpin.value())
            elif kind == "photo":
                if self.window_.x0 is None:
                    raise pts.PointsError("no photo loaded")
                new = pts.from_photo(self.window_.x0, self.pointsSpin.value(), self.seedSpin.value())
            elif kind == "paint":
                new = np.zeros((0, 2))
            else:
                raise pts.PointsError(f"unknown data {kind!r}")
        except (ValueError, OSError) as e:
            self._set_status(one_line(e), error=True)
            return False
        if i >= 0:
            self.dataCombo.setCurrentIndex(i)
        self.canvas.box.painter = self._paint if kind == "paint" else None
        self._replace(new, undoable=kind == "paint")
        return True

    def load_file(self, path) -> bool:
        try:
            new = pts.load_points(path)
        except (ValueError, OSError) as e:
            self._fail(one_line(e))
            return False
        self.dataCombo.setCurrentIndex(self.dataCombo.findData("paint"))
        self.canvas.box.painter = self._paint
        self._replace(new, undoable=True)
        return True

    def save_file(self, path) -> bool:
        try:
            pts.save_points(path, self.points)
        except (ValueError, OSError) as e:
            self._fail(one_line(e))
            return False
        self._set_status(f"Saved {len(self.points)} points to {path}")
        return True

    def _save_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save points", "points.csv", "Points (*.csv *.npz)")
        if path:
            self.save_file(path)

    def _reload(self) -> None:
        kind = self.dataCombo.currentData()
        if kind in pts.PRESETS or kind == "photo":
            self.set_data(kind)

    def _on_image(self) -> None:
        if self.dataCombo.currentData() == "photo":
            self.set_data("photo")
        self._request()

    def paint_at(self, x: float, y: float, start: bool = True) -> None:
        """One brush dab at (x, y): points uniform in the brush's disc (``start`` begins an undoable stroke)."""
        if start:
            self._push_undo()
        room = pts.MAX_POINTS - len(self.points)
        if room <= 0:
            self._set_status(f"at most {pts.MAX_POINTS:,} points", error=True)
            return
        r = self.brushSpin.value()
        new = pts.brush((x, y), r, min(room, max(1, int(round(8 * (r / 0.15) ** 2)))), self._rng)
        self._replace(np.concatenate([self.points, new]), undoable=False)

    _paint = paint_at

    def clear_points(self) -> None:
        self._push_undo()
        self._replace(np.zeros((0, 2)), undoable=False)

    def undo(self) -> None:
        if self._undo:
            self._replace(self._undo.pop(), undoable=False)

    def _push_undo(self) -> None:
        self._undo = (self._undo + [self.points.copy()])[-50:]

    def _replace(self, new, undoable: bool) -> None:
        if undoable:
            self._push_undo()
        self.points = np.asarray(new, np.float64).reshape(-1, 2)
        self.exact = Exact2D(self.points) if len(self.points) else None
        self.learn_runner.discard()
        self.trainer, self.learned, self.losses, self.result = None, None, [], {}
        self._eps_seed = None
        self.learnButton.setText("Learn")
        self.lossCurve.setData([], [])
        for p in (self.left, self.right):
            p.set_cloud(None), p.set_trails(None), p.set_cloud(self.points, p.data)
        has = len(self.points) > 0
        for w in (self.generateButton, self.learnButton, self.measureButton):
            w.setEnabled(has)
        self._set_status(f"{len(self.points)} points" + ("" if has else ": paint some with the mouse"))
        self._request()

    # ----- the forward view ---------------------------------------------------------------------------------------
    def _request(self, *_) -> None:
        self._dirty = True
        if self.isVisible():
            self._redraw_timer.start()

    def showEvent(self, ev) -> None:  # noqa: N802
        super().showEvent(ev)
        if self._dirty:
            self._redraw_timer.start()

    def _on_schedule(self, _schedule) -> None:
        if self.trainer is not None and self.trainer.schedule.T != self.window_.schedule.T:
            self.learn_runner.discard()
            self.trainer, self.learned = None, None
            self.learnButton.setText("Learn")
            self._set_status("the schedule's T changed: the network must be learned again")
        self._request()

    def noise(self) -> np.ndarray:
        """The fixed ε of the data's forward process, draw_noise((M, 2), window seed)."""
        seed = self.window_.seed
        if self._eps_seed != (seed, len(self.points)):
            self._eps = draw_noise((len(self.points), 2), seed).numpy()
            self._eps_seed = (seed, len(self.points))
        return self._eps

    def forward_points(self, t: int | None = None) -> np.ndarray:
        """x_t of every data point at the window's t (eq. 5, float32)."""
        s = self.window_.schedule
        t = self.window_.timestep if t is None else int(t)
        a, b = np.float32(s.sqrt_alphas_cumprod[t]), np.float32(s.sqrt_one_minus_alphas_cumprod[t])
        return a * self.points.astype(np.float32) + b * self.noise()

    def redraw(self, fields_now: bool = False) -> None:
        """Repaint the canvas at the window's t: the particles at once; the heatmap and arrows at most every
        ``FIELD_MS`` while the slider moves (then once more when it rests), so a drag animates the particles at
        the display's rate whatever the field costs."""
        self._dirty = False
        t = min(self.window_.timestep, self.window_.schedule.T - 1)
        self.canvas.set_cloud(self.forward_points(t))
        self.canvas.set_cloud(self.points if self.canvas.box.painter else None, self.canvas.data)
        self.frames_drawn += 1
        # the fields wait FIELD_MS (or twice their own cost) after their last draw ended: ≤ 1/3 of the time
        wait = max(FIELD_MS, 2 * self._fields_cost) - (time.perf_counter() - self._fields_at) * 1000
        if fields_now or wait <= 0:
            self.redraw_fields()
        else:
            self._fields_timer.start(int(wait) + 1)

    def redraw_fields(self) -> None:
        """The heatmap and the arrows at the window's t."""
        self._fields_timer.stop()
        start = time.perf_counter()
        try:
            self._draw_fields()
        finally:
            self._fields_at = time.perf_counter()
            self._fields_cost = (self._fields_at - start) * 1000

    def _draw_fields(self) -> None:
        sched, t = self.window_.schedule, min(self.window_.timestep, self.window_.schedule.T - 1)
        self.fields_t = t
        if self.exact is None:
            self.canvas.set_heat(None), self.canvas.set_arrows(None), self.canvas.set_arrows(None,
                                                                                           self.canvas.learned_arrows)
            return
        heat = self.heatCombo.currentData()
        if heat == "density":
            cell = 2 * EXTENT / HEAT_SIZE
            self.canvas.set_heat(np.sqrt(density_grid(self.points, sched, t, grid_axes(EXTENT, HEAT_SIZE),
                                                      min_sigma=cell / 2)))
        elif heat == "diff" and self.learned is not None and self.learned.schedule.T == sched.T:
            xy = _grid_points(DIFF_SIZE)
            d = np.linalg.norm(eps_field(self.exact, xy, sched, t) - self._learned_eps(xy, t), axis=1)
            self.canvas.set_heat(d.reshape(DIFF_SIZE, DIFF_SIZE))
        else:
            self.canvas.set_heat(None)
        if self.fieldCheck.isChecked():
            xy = _grid_points(ARROW_SIZE)
            cell = 2 * EXTENT / ARROW_SIZE
            fields = [(eps_field(self.exact, xy, sched, t), self.canvas.arrows)]
            if self.learned is not None and self.learned.schedule.T == sched.T:
                fields.append((self._learned_eps(xy, t), self.canvas.learned_arrows))
            else:
                self.canvas.set_arrows(None, self.canvas.learned_arrows)
            for v, item in fields:
                if self.scoreCheck.isChecked():
                    v = score_from_eps(v, sched, t)
                self.canvas.set_arrows(arrow_segments(xy, v, cell), item)
        else:
            self.canvas.set_arrows(None), self.canvas.set_arrows(None, self.canvas.learned_arrows)

    def _learned_eps(self, xy, t) -> np.ndarray:
        x = torch.from_numpy(np.asarray(xy, np.float32).T.copy())[None, :, None, :]
        return self.learned.model_output(x, torch.tensor([int(t)]))[0, :, 0, :].T.double().numpy()

    # ----- generate -----------------------------------------------------------------------------------------------
    def samplers(self) -> tuple:
        return self.modeCombo.currentData()

    def _denoiser(self):
        if self.denoiserCombo.currentData() == "learned":
            if self.learned is None:
                raise ValueError("nothing learned yet: click Learn first")
            return self.learned, self.learned.schedule, "learned"
        return self.exact, self.window_.schedule, "exact"

    def generate(self) -> bool:
        """Run the chosen sampler(s) on ``lab2dParticlesSpin`` particles from the same x_T (seed), animated."""
        try:
            den, sched, name = self._denoiser()
            args = (den, sched, self.samplers(), self.stepsSpin.value(), self.particlesSpin.value(),
                    self.seedSpin.value(), self.points)
            it = lockstep(*args, keep=TRAIL_KEEP if self.trailsCheck.isChecked() else 0, name=name)
        except ValueError as e:
            self._fail(one_line(e))
            return False
        self.generateButton.setEnabled(False)
        for plot, s in zip((self.left, self.right), (*self.samplers(), None)):
            plot.setTitle(SHORT_NAMES[s] if s else "", size="8pt")
            plot.set_cloud(None), plot.set_trails(None)
            if s:
                plot.set_color(SAMPLER_COLORS[s])
        self._set_status("generating…")
        self.gen_runner.start(lambda: (yield from it), on_frame=self._paint_frames, on_finished=self._generated,
                              on_error=lambda e: self._fail(one_line(e)),
                              on_done=lambda: self.generateButton.setEnabled(len(self.points) > 0))
        return True

    def _paint_frames(self, frames: dict) -> None:
        for plot, (s, f) in zip((self.left, self.right), frames.items()):
            plot.set_cloud(f.particles)
            plot.set_trails(f.trail)
            plot.setTitle(f"{SHORT_NAMES[s]} {f.index}/{f.total}", size="8pt")

    def _generated(self, rows: dict) -> None:
        self.result = rows
        for plot, (s, r) in zip((self.left, self.right), rows.items()):
            plot.set_cloud(r.particles)
            plot.setTitle(f"{SHORT_NAMES[s]} ×{r.steps}: E = {r.energy:.4f}", size="8pt")
        self._set_status(" · ".join(f"{SHORT_NAMES[s]} {r.denoiser}, {r.steps} steps: energy distance "
                                    f"{r.energy:.5f}" for s, r in rows.items()))
        self.generated.emit(rows)

    # ----- measure ------------------------------------------------------------------------------------------------
    def steps_list(self) -> list[int]:
        try:
            out = [int(v) for v in self.stepsListEdit.text().replace(";", ",").split(",") if v.strip()]
        except ValueError:
            raise ValueError("steps must be comma-separated integers, e.g. 5,10,20,50") from None
        if not out:
            raise ValueError("no step counts listed")
        return out

    def measure(self) -> bool:
        """Energy distance vs steps for every sampler with the exact denoiser (and the learned one, if any)."""
        dens, scheds = {"exact": self.exact}, {"exact": self.window_.schedule}
        if self.learned is not None:
            dens["learned"], scheds["learned"] = self.learned, self.learned.schedule
        try:
            steps, n = self.steps_list(), self.particlesSpin.value()
            for name in dens:
                for sampler in SAMPLERS:
                    for k in steps:
                        check_run(scheds[name], sampler, k, n)
        except ValueError as e:
            self._fail(one_line(e))
            return False
        it = sweep(self.points, dens, SAMPLERS, steps, n, self.seedSpin.value(), scheds)
        self.rows = []
        self.qualityPlot.clear()
        self._quality_curves = {}
        self.measureButton.setEnabled(False)
        self.measure_runner.start(lambda: (yield from it), on_yield=self._on_row,
                                  on_done=self._measured)
        return True

    def _on_row(self, row) -> None:
        self.rows.append(row)
        key = (row.denoiser, row.sampler)
        if key not in self._quality_curves:
            style = Qt.PenStyle.SolidLine if row.denoiser == "exact" else Qt.PenStyle.DashLine
            self._quality_curves[key] = self.qualityPlot.plot(
                pen=pg.mkPen(*SAMPLER_COLORS[row.sampler], width=2, style=style), symbol="o", symbolSize=5,
                symbolBrush=SAMPLER_COLORS[row.sampler], name=f"{SHORT_NAMES[row.sampler]} {row.denoiser}")
        mine = [r for r in self.rows if (r.denoiser, r.sampler) == key and r.energy > 0]
        self._quality_curves[key].setData([r.steps for r in mine], [r.energy for r in mine])
        self._set_status(f"{SHORT_NAMES[row.sampler]} {row.denoiser}, {row.steps} steps: energy distance "
                         f"{row.energy:.5f}")

    def _measured(self) -> None:
        self.measureButton.setEnabled(len(self.points) > 0)
        self.measured.emit(list(self.rows))

    # ----- learn --------------------------------------------------------------------------------------------------
    def toggle_learn(self) -> None:
        """Learn → Stop → Resume (a stopped run continues exactly where it was)."""
        if self.learn_runner.is_running():
            self.learn_runner.cancel()
            return
        if not len(self.points):
            return
        if self.trainer is None:
            self.trainer = Trainer2D(self.points, self.window_.schedule,
                                     LearnConfig(steps=self.learnSpin.value(), seed=self.seedSpin.value()))
            self.losses = []
        total = self.trainer.step + self.learnSpin.value() if self.trainer.step >= self.trainer.cfg.steps \
            else self.trainer.cfg.steps
        self.trainer.cfg.steps = total
        self.learnButton.setText("Stop")
        self.learn_runner.start(self.trainer.run, on_yield=self._on_learn, on_cancelled=self._learn_stopped,
                                on_finished=lambda _r: self._learn_stopped(-1),
                                on_error=lambda e: self._fail(one_line(e)))

    def _on_learn(self, ev) -> None:
        self.losses.append(ev.loss)
        if not self._loss_timer.isActive():
            self._loss_timer.start()
        if ev.weights is not None:
            self.learned = denoiser_from_weights(ev.weights, self.trainer.schedule)
            self._set_status(f"learning: step {ev.step}/{ev.total}, loss {ev.loss_avg:.4f}, {ev.elapsed_s:.1f} s")
            if not self.gen_runner.is_running():
                p = final_particles(self.learned, self.learned.schedule, "ddim", PREVIEW_STEPS, PREVIEW_N,
                                    self.seedSpin.value())
                self.left.setTitle(f"learned, DDIM ×{PREVIEW_STEPS}: E = {energy_distance(p, self.points):.4f}",
                                   size="8pt")
                self.left.set_color(SAMPLER_COLORS["ddim"])
                self.left.set_trails(None)
                self.left.set_cloud(p)
            self._request()
        self.learnStepped.emit(ev.step)

    def _learn_stopped(self, _n: int) -> None:
        done = self.trainer is not None and self.trainer.step >= self.trainer.cfg.steps
        self.learnButton.setText("Learn more" if done else "Resume")
        self._draw_loss()

    def _draw_loss(self) -> None:
        if self.losses:
            y = np.asarray(self.losses)
            k = max(1, len(y) // 400)
            y = y[: len(y) // k * k].reshape(-1, k).mean(1)
            self.lossCurve.setData(np.arange(len(y)) * k + k, y)


def _grid_points(size: int) -> np.ndarray:
    g = grid_axes(EXTENT, size)
    return np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
