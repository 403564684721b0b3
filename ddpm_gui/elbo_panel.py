"""The ELBO panel: the variational bound of a model on a photo or on dataset images, term by term.

L_VLB = L_T + Σ_{t=2}^{T} L_{t−1} + L_0 (DDPM notes, eq. 9–14), every term in bits per dimension, computed by
:func:`core.vlb.compute_bound` on a worker thread — exactly what ``ddpm elbo`` prints, for the same model, images,
schedule, variance and seed. The plot draws L_{t−1} against t on a log axis: the KL terms for t = 2…T as a line,
L_0 (the decoder, t = 1) and L_T (the prior; drawn at t = T + 1, where the pattern L_{t−1} puts it) as markers.
Hovering a point names the term, its value and its share of the total; clicking it moves the window's timestep
slider to that term's x_t.

Which schedule: a model trained on a schedule only knows that schedule's timesteps, so its bound is always computed
with its own schedule and the panel says so. A model that accepts any schedule (the oracle) uses the window's:
edit the schedule and Compute again (or tick "on schedule edits") to see the bound move, with the previous curve
kept faint for comparison.

A thin view over :mod:`core.jobs.bound`: the click turns the widgets into an :class:`~core.jobs.bound.ElboJob`;
:func:`~core.jobs.bound.elbo_events` (run by a :class:`~ddpm_gui.worker.WorkerRunner`) loads the model, turns the
photo or dataset into model-ready x_0 as ``ddpm elbo`` does and passes the bound's progress to the UI as copies.

``ElboPanel.install(window)`` adds it to a :class:`~ddpm_gui.main_window.MainWindow` as the "ELBO" tab.
"""
from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Callable

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QPointF, QSignalBlocker, Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QFileDialog, QGridLayout, QHBoxLayout, QLabel,
                               QProgressBar, QPushButton, QSizePolicy, QSpinBox, QVBoxLayout)
from superqt.utils import qdebounced

from core.device import pick_device
from core.jobs.bound import (DATASET, NO_PHOTO, ElboJob, ElboProgress, ElboRun, accepts_any_schedule, done_line,
                             elbo_events, format_bits, hover_text, model_note, model_request, nearest_term,
                             progress_line, totals_text, view_range)
from core.messages import one_line
from core.model_spec import ORACLE, PHOTO, ModelCache, parse_spec
from core.schedule import NoiseSchedule
from ddpm_gui.widgets import JobPanel, ModelMenu, finite_or_nan, named
from ddpm_gui.worker import WorkerRunner

OPEN_FOLDER = "open:folder"   # the image menu's action entry
MAX_IMAGES = 256
AUTO_DELAY_MS = 400     # a schedule drag emits many changes: recompute once it rests

KL_PEN = pg.mkPen((31, 119, 180), width=2)
PREV_PEN = pg.mkPen((120, 120, 120, 110), width=2, style=Qt.PenStyle.DashLine)
DECODER_BRUSH, PRIOR_BRUSH = pg.mkBrush(255, 127, 14), pg.mkBrush(214, 39, 40)
PREV_BRUSH = pg.mkBrush(150, 150, 150, 90)

TERMS_TIP = ("L_VLB = L_T + Σ_{t=2}^{T} L_{t−1} + L_0 (notes eq. 9–14), each term in bits/dim "
             "(nats / (C·H·W·ln 2)):\n"
             "  L_{t−1} = KL(q(x_{t−1} | x_t, x_0) ‖ p_θ(x_{t−1} | x_t)), t = 2…T, a Gaussian KL, "
             "one x_t ~ q(x_t | x_0) per image and t\n"
             "  L_0 = −log p_θ(x_0 | x_1), a discretized Gaussian over the 256 pixel bins (drawn at t = 1)\n"
             "  L_T = KL(q(x_T | x_0) ‖ N(0, I)), closed form, no network (drawn at t = T + 1)\n"
             "Log y axis. Hover a point for its value and share of the total; click it to show that x_t.")
SOURCES = (  # the image menu: label, spec, tooltip
    ("The loaded photo (resized to the model's resolution)", PHOTO, "The window's photo, centre-cropped and resized "
     "to the model's H×W (Lanczos), grey for a one-channel model — as `ddpm elbo --image FILE`"),
    ("Built-in MNIST held-out digits", "builtin:mnist", "The first N of the 500 digits no model here was trained "
     "on — as `ddpm elbo --data builtin:mnist --n N`"),
    ("A folder of images…", OPEN_FOLDER, "The first N images of a folder (sorted), resized to the model's "
     "resolution — as `ddpm elbo --data DIR --n N`"),
)
PHOTO_ORACLE_TIP = ("The exact denoiser of the photo: x̂_0 = x_0, so μ_θ is the true posterior mean and with "
                    "σ_t² = β̃_t every KL term L_{t−1} is 0; any schedule")


def _positive(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The points a log axis can draw (finite and > 0)."""
    keep = np.isfinite(y) & (y > 0)
    return x[keep], y[keep]


def _kl_curve(terms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(t, L_{t−1}) for t = 2…T, NaN where a log axis cannot draw the term (0, or not computed yet): the line
    breaks there instead of bridging the gap."""
    T = len(terms) - 1
    return np.arange(2, T + 1, dtype=float), finite_or_nan(terms[1:T], log_y=True)


class ElboPanel(JobPanel):
    """The ELBO tab. Build it with the main window it belongs to (photo, schedule, runners, error box)."""

    TITLE, STATUS_COLOR = "ELBO", "#333"

    runStarted = Signal()
    progressed = Signal(int, int)     # terms done, total (image × timestep evaluations)
    resultReady = Signal(object)      # the ElboRun now shown
    runCancelled = Signal(int)        # evaluations done before the stop
    # runFailed(str), the one-line reason: JobPanel's
    hovered = Signal(int)             # the term k under the mouse (−1: none)

    @classmethod
    def install(cls, window) -> "ElboPanel":
        panel = cls(window)
        window.add_panel("ELBO", panel)
        return panel

    def __init__(self, window, parent=None):
        super().__init__(window, parent)
        self.setObjectName("elboPanel")
        self.cache = ModelCache()
        self.runner: WorkerRunner = window.create_runner("elbo")
        self.result: ElboRun | None = None       # the curve drawn in full colour
        self.previous: ElboRun | None = None     # the faint one
        self.partial: ElboProgress | None = None  # the run in flight, as far as it got
        self._running = False
        self._job: ElboJob | None = None
        self._prev_source_index = 0
        self.hover_k: int | None = None
        self._key_memo: tuple | None = None      # (what the key was made from, the photo, the key): _loaded_model
        self._auto_later = qdebounced(self._auto_compute, timeout=AUTO_DELAY_MS, parent=self)
        self._build_ui()
        self._fill_sources()
        self._update_model_note()
        self._set_running(False)
        self._set_status("Choose a model and images, then Compute.")
        window.scheduleChanged.connect(self._on_schedule_changed)
        window.imageChanged.connect(self._on_photo_changed)

    # ----- public API ------------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._running

    def current_model(self) -> tuple[str, str | None]:
        """(kind, SPEC) of the chosen model: ``("photo-oracle", None)``, ``("builtin", "builtin:NAME")``,
        ``("oracle", "oracle:builtin:mnist")`` or ``("folder", SPEC)`` for a folder or an oracle over a path."""
        spec = self.modelCombo.spec()
        if spec == PHOTO:
            return "photo-oracle", None
        kind = parse_spec(spec).kind
        return ("folder" if kind == ORACLE and spec != "oracle:builtin:mnist" else kind), spec

    def select_model(self, spec: str) -> None:
        """``builtin:NAME``, ``photo`` (the oracle over the loaded photo), ``oracle:builtin:mnist``, or any other
        model spec (a model folder, ``oracle:PATH``), which is added to the list."""
        self.modelCombo.select(spec)

    def select_source(self, spec: str, n: int | None = None) -> None:
        """``photo`` (the loaded photo), ``builtin:mnist`` (its held-out digits) or a folder of images; ``n`` the
        number of dataset images (the first n)."""
        combo = self.sourceCombo
        i = combo.findData(spec)
        if i < 0:
            i = combo.count() - 2  # before the separator and the "…" entry
            with QSignalBlocker(combo):
                combo.insertItem(i, f"Folder — {Path(spec).name or spec}", spec)
                combo.setItemData(i, spec, Qt.ItemDataRole.ToolTipRole)
        combo.setCurrentIndex(i)
        if n is not None:
            self.countSpin.setValue(int(n))

    def set_variance(self, variance: str | None) -> None:
        """None (the model's own), ``small`` (σ_t² = β̃_t) or ``large`` (σ_t² = β_t)."""
        self.varianceCombo.setCurrentIndex(self.varianceCombo.findData(variance))

    def compute(self) -> bool:
        """Start computing the bound with the current settings (replacing a run in flight); False, with a one-line
        message and nothing lost, when the input is not usable."""
        self._auto_later.cancel()
        try:
            job = self._make_job()
        except ValueError as e:
            self._fail(one_line(e))
            return False
        loaded = self.cache.peek(job.model_key) is not None
        try:  # the callbacks arrive through the event loop, after the state below is set
            self.runner.start(elbo_events, job, self.cache, on_frame=self._on_progress,
                              on_finished=self._on_finished, on_cancelled=self._on_cancelled,
                              on_error=self._on_error, on_done=self._on_done)
        except RuntimeError:  # the window is closing: its runners were shut down
            return False
        self._job = job
        self.partial = None
        self._set_running(True)
        self.progressBar.setFormat("%v / %m terms")
        self.progressBar.setRange(0, 0)  # busy until the first batch (the model may still be loading)
        self._set_status("Computing the bound…" if loaded else "Loading the model…")
        self._redraw()
        self.runStarted.emit()
        return True

    def cancel(self) -> bool:
        """Stop the run in flight. The panel is ready again at once (the worker finishes its current batch of
        model calls and drops it); the curve shown before the run stays."""
        if not self._running:
            return False
        self.runner.cancel()
        done = f" at {self.partial.done}/{self.partial.total} terms" if self.partial is not None else ""
        self.partial = None
        self._set_running(False)
        self._set_status(f"Cancelled{done}: the curve is the one from before.")
        self._redraw()
        return True

    def clear_previous(self) -> None:
        self.previous = None
        self._redraw()

    def hover_term(self, k: int | None) -> None:
        """Show term k's value and share of the total (as hovering its point does); None hides it."""
        r = self.result
        if k is None or r is None or not 0 <= k <= r.T:
            self.hover_k = None
            self.hoverLabel.setText("Hover a point for its value and share of the total.")
            self.hoverMarker.setData([], [])
            self.hoverText.hide()
            self.hovered.emit(-1)
            return
        self.hover_k = int(k)
        v, t = float(r.terms[k]), k + 1
        line, box = hover_text(r, k, self.previous)
        self.hoverLabel.setText(line)
        if v > 0 and math.isfinite(v):
            self.hoverMarker.setData([t], [v])
            self.hoverText.setHtml(box)
            xv = math.log10(t) if self.logXCheck.isChecked() else t
            self.hoverText.setPos(xv, math.log10(v))
            # keep the box inside the plot: left of points in the right half, below points in the top half
            (x0, x1), (y0, y1) = self.plot.getViewBox().viewRange()
            self.hoverText.setAnchor((1.05 if xv > (x0 + x1) / 2 else -0.05,
                                      -0.1 if math.log10(v) > (y0 + y1) / 2 else 1.1))
            self.hoverText.show()
            self.hoverText.updateTransform(force=True)  # pixel-sized text: a TextItem never painted does not know
        else:
            self.hoverMarker.setData([], [])
            self.hoverText.hide()
        self.hovered.emit(self.hover_k)

    def term_at(self, scene_pos, radius_px: float = 12.0) -> int | None:
        """The term k whose point is nearest ``scene_pos`` (within ``radius_px`` screen pixels), else None."""
        r = self.result
        vb = self.plot.getViewBox()
        if r is None or not self.plot.sceneBoundingRect().contains(scene_pos):
            return None
        p = vb.mapSceneToView(scene_pos)
        return nearest_term(r.terms, p.x(), p.y(), vb.viewPixelSize(), self.logXCheck.isChecked(), radius_px)

    def point_scene_pos(self, k: int):
        """Where term k's point is drawn, in scene coordinates (for tests and scripts)."""
        r = self.result
        t, v = k + 1, float(r.terms[k])
        xv = math.log10(t) if self.logXCheck.isChecked() else t
        return self.plot.getViewBox().mapViewToScene(QPointF(xv, math.log10(v)))

    # ----- model and image lists -------------------------------------------------------------------------------
    def _fill_sources(self) -> None:
        combo = self.sourceCombo
        with QSignalBlocker(combo):
            for label, spec, tip in SOURCES:
                if spec == OPEN_FOLDER:
                    combo.insertSeparator(combo.count())
                combo.addItem(label, spec)
                combo.setItemData(combo.count() - 1, tip, Qt.ItemDataRole.ToolTipRole)
            start = 1 if parse_spec(self.modelCombo.spec()).kind == "builtin" else 0
            combo.setCurrentIndex(start)
            self._prev_source_index = start
        self._on_source_changed(start)

    def _model_accepts_any_schedule(self) -> bool:
        """The oracle works with any schedule; a trained model is tied to its own (known once it is loaded)."""
        model = self._loaded_model()
        return model.schedule is None if model is not None else accepts_any_schedule(self.modelCombo.spec())

    def _on_open_requested(self, what: str) -> None:
        """The menu's "Open a model folder…" / "Oracle over a folder of images…"."""
        folder = QFileDialog.getExistingDirectory(
            self, "Open a model folder" if what == "folder" else "Oracle over a folder of images", "")
        if folder:
            self.select_model(folder if what == "folder" else f"oracle:{folder}")

    def _on_source_changed(self, i: int) -> None:
        spec = self.sourceCombo.currentData() or PHOTO
        if spec == OPEN_FOLDER:
            folder = QFileDialog.getExistingDirectory(self, "A folder of images", "")
            with QSignalBlocker(self.sourceCombo):
                self.sourceCombo.setCurrentIndex(self._prev_source_index)
            if folder:
                self.select_source(folder)
            return
        self._prev_source_index = i
        self.countSpin.setEnabled(spec != PHOTO)

    def _update_model_note(self) -> None:
        any_schedule = self._model_accepts_any_schedule()
        self.autoCheck.setEnabled(any_schedule)
        self.modelNote.setText(model_note(self._loaded_model(), self.window_.schedule, any_schedule))

    def _device(self) -> str:
        return str(pick_device("auto"))

    def _model_request(self, device: str) -> tuple[tuple, Callable]:
        w = self.window_
        return model_request(self.modelCombo.spec(), device, photo_path=w.photo_path, photo=w.x0)

    def _loaded_model(self):
        """The chosen model if it is loaded. Its key is remembered per photo (a pasted photo's pixels are hashed
        once, not on every schedule edit); Compute always makes a fresh one."""
        w, device = self.window_, self._device()
        made_of = (self.modelCombo.spec(), device, w.photo_path)
        memo = self._key_memo     # holds the photo array itself, so `is` cannot be fooled by a reused id()
        if memo is None or memo[0] != made_of or memo[1] is not w.x0:
            try:
                memo = self._key_memo = (made_of, w.x0, self._model_request(device)[0])
            except ValueError:
                return None
        return self.cache.peek(memo[2])

    # ----- the run ---------------------------------------------------------------------------------------------
    def _make_job(self) -> ElboJob:
        key, loader = self._model_request(self._device())
        spec, w = self.sourceCombo.currentData() or PHOTO, self.window_
        photo = spec == PHOTO
        if photo and w.photo_path is None and w.x0 is None:
            raise ValueError(NO_PHOTO)
        return ElboJob(model_key=key, loader=loader, source=PHOTO if photo else DATASET,
                       photo_path=str(w.photo_path) if photo and w.photo_path is not None else None,
                       photo_array=w.x0.copy() if photo and w.photo_path is None else None,
                       data=None if photo else spec, n=self.countSpin.value(),
                       variance=self.varianceCombo.currentData(), seed=self.seedSpin.value(), schedule=w.schedule)

    def _on_progress(self, p: ElboProgress) -> None:
        if not self._running:
            return
        if self.partial is None:
            self.progressBar.setRange(0, p.total)
            self._update_model_note()  # the model is loaded now: its name and schedule
        self.partial = p
        self.progressBar.setValue(p.done)
        if p.done < p.total:
            self._set_status(progress_line(p))
        self.progressed.emit(p.done, p.total)
        self._redraw()

    def _on_finished(self, run: ElboRun) -> None:
        old = self.result
        if old is not None and self.keepCheck.isChecked():
            self.previous = old
        self.result, self.partial = run, None
        self._set_running(False)
        self._set_status(done_line(run, old, old_kept=self.previous is old))
        self._update_model_note()
        self._redraw()
        self.resultReady.emit(run)

    def _on_cancelled(self, n: int) -> None:
        # cancel() already put the panel back; the worker has now really stopped
        self.runCancelled.emit(n)

    def _on_error(self, exc) -> None:
        self.partial = None
        self._set_running(False)
        self._redraw()
        self._fail(one_line(exc))

    def _on_done(self) -> None:
        if self._running:  # ended without finished/errored (cannot happen, but never leave Compute disabled)
            self._set_running(False)

    def _set_running(self, on: bool) -> None:
        self._running = on
        self.computeButton.setEnabled(not on)
        self.cancelButton.setEnabled(on)
        self.computeButton.setText("Recompute" if self.result is not None else "Compute")
        if not on:
            self._show_result_progress()

    def _show_result_progress(self) -> None:
        """The bar of the curve shown: full for a finished result, empty when there is none."""
        r = self.result
        total = r.per_image.size - r.per_image.shape[0] if r is not None else 0  # N·T (L_T needs no model)
        self.progressBar.setRange(0, max(total, 1))
        self.progressBar.setValue(total)
        self.progressBar.setFormat("%v / %m terms" if total else "")

    # ----- reactions -------------------------------------------------------------------------------------------
    def _on_schedule_changed(self, schedule: NoiseSchedule) -> None:
        self._update_model_note()
        if not self._model_accepts_any_schedule():
            return
        if self.autoCheck.isChecked():
            self._auto_later()
        elif self.result is not None and not self._running:
            self._set_status(f"The schedule changed ({schedule.name}, T = {schedule.T}): Recompute to see how the "
                             "bound moves; this curve will stay, faint.")

    def _auto_compute(self) -> None:
        if self._model_accepts_any_schedule() and self.autoCheck.isChecked():
            self.compute()

    def _on_photo_changed(self) -> None:
        self._key_memo = None
        if self.modelCombo.spec() == PHOTO:
            self._update_model_note()

    def _on_log_x(self, on: bool) -> None:
        self.plot.setLogMode(x=on, y=True)
        self.hover_term(None)
        self._redraw()

    def _on_mouse_moved(self, pos) -> None:
        k = self.term_at(pos)
        if k != self.hover_k:
            self.hover_term(k)

    def eventFilter(self, obj, ev) -> bool:
        if ev.type() == QEvent.Type.GraphicsSceneMouseMove and obj is self._scene:
            self._on_mouse_moved(ev.scenePos())
        return super().eventFilter(obj, ev)

    def _on_mouse_clicked(self, ev) -> None:
        k = self.term_at(ev.scenePos())
        r = self.result
        if k is None or r is None:
            return
        if r.T == self.window_.schedule.T:
            t_code = min(k, r.T - 1)  # term L_{t−1} is about x_t, the code's timestep t − 1 = k
            self.window_.set_timestep(t_code)
            self.window_.statusBar().showMessage(f"x_t for term L_{k if k < r.T else 'T'}: slider at t = {t_code}",
                                                 5000)

    # ----- drawing ---------------------------------------------------------------------------------------------
    def _redraw(self) -> None:
        """Current curve (full colour), previous (faint), or the run in flight over the old curve drawn faint."""
        live = self.partial if self._running else None
        shown_terms = live.terms if live is not None else (self.result.terms if self.result is not None else None)
        faint = (self.result if (self._running and self.result is not None) else self.previous)
        if shown_terms is None:
            for item in (self.klCurve, self.decoderPoint, self.priorPoint):
                item.setData([], [])
        else:
            T = len(shown_terms) - 1
            self.klCurve.setData(*_kl_curve(shown_terms), connect="finite")
            self.decoderPoint.setData(*_positive(np.array([1.0]), shown_terms[:1]))
            self.priorPoint.setData(*_positive(np.array([T + 1.0]), shown_terms[T:]))
        if faint is None:
            for item in (self.prevCurve, self.prevPoints):
                item.setData([], [])
        else:
            T = faint.T
            self.prevCurve.setData(*_kl_curve(faint.terms), connect="finite")
            self.prevPoints.setData(*_positive(np.array([1.0, T + 1.0]), faint.terms[[0, T]]))
        self._update_legend(faint)
        self._fit_view(shown_terms, faint)
        self._update_totals(live)
        if self.hover_k is not None:
            self.hover_term(self.hover_k if not self._running else None)

    def _fit_view(self, shown: np.ndarray | None, faint: ElboRun | None) -> None:
        """Every term of both curves in view, t from 1 to T + 1 and at least two decades of y, from the first
        batch on (auto-range would zoom onto the lone L_T point at the start of a run)."""
        parts = [a for a in (shown, None if faint is None else faint.terms) if a is not None]
        (x0, x1), (lo, hi), ticks = view_range(parts, self.logXCheck.isChecked())
        self.plot.getAxis("bottom").setTicks(ticks)   # decades 1, 10, 100 … on a log t axis
        self.plot.getViewBox().setRange(xRange=(x0, x1), yRange=(lo, hi), padding=0.04)
        self.emptyText.setVisible(not parts)
        self.emptyText.setPos((x0 + x1) / 2, (lo + hi) / 2)
        self.legend.setVisible(bool(parts))

    def _update_legend(self, faint: ElboRun | None) -> None:
        legend = self.legend
        legend.clear()
        legend.addItem(self.klCurve, "L<sub>t−1</sub>, t = 2…T (KL)")
        legend.addItem(self.decoderPoint, "L<sub>0</sub> decoder (t = 1)")
        legend.addItem(self.priorPoint, "L<sub>T</sub> prior (t = T+1)")
        if faint is not None:
            now = None if self._running else self.result
            legend.addItem(self.prevCurve, f"{'before' if self._running else 'previous'}: "
                           f"{html.escape(faint.label_against(now))}, "
                           f"{format_bits(faint.bits_per_dim)} bits/dim")

    def _update_totals(self, live: ElboProgress | None) -> None:
        total, breakdown = totals_text(self.result, self.previous, live)
        self.totalLabel.setText(total)
        if breakdown is not None:
            self.breakdownLabel.setText(breakdown)

    # ----- UI --------------------------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        rich = Qt.TextFormat.RichText
        selectable = Qt.TextInteractionFlag.TextSelectableByMouse
        self.modelCombo = ModelMenu("elboModelCombo", "The model p_θ whose bound is computed: μ_θ(x_t, t) = "
                                    "μ̃_t(x_t, x̂_0) (eq. 14) from its prediction; the built-in model, a model "
                                    "folder, or an exact oracle", oracle_photo_tip=PHOTO_ORACLE_TIP)
        self.modelCombo.setMinimumContentsLength(18)
        if not self.modelCombo.spec().startswith("builtin:"):   # the built-in model is not installed yet
            self.modelCombo.select(PHOTO)
        self.modelCombo.specChanged.connect(self._update_model_note)
        self.modelCombo.openRequested.connect(self._on_open_requested)
        self.modelNote = named(QLabel(""), "elboModelNote")
        self.modelNote.setWordWrap(True)
        self.modelNote.setStyleSheet("color: #555;")

        self.sourceCombo = named(QComboBox(), "elboSourceCombo", "The images x_0 whose bound is computed (on the "
                                 "uint8 grid x = u/127.5 − 1); the terms are averaged over the images")
        self.sourceCombo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.sourceCombo.setMinimumContentsLength(18)
        self.sourceCombo.currentIndexChanged.connect(self._on_source_changed)
        self.countSpin = named(QSpinBox(), "elboCountSpin", "N: how many dataset images (the first N); every term "
                               "is the mean over them. The work is N·T model evaluations")
        self.countSpin.setRange(1, MAX_IMAGES)
        self.countSpin.setValue(1)
        self.varianceCombo = named(QComboBox(), "elboVarianceCombo", "The variance of p_θ(x_{t−1} | x_t) = "
                                   "N(μ_θ, σ_t² I): small σ_t² = β̃_t = (1−ᾱ_{t−1})/(1−ᾱ_t)·β_t (then L_{t−1} = "
                                   "‖μ̃_t − μ_θ‖² / 2β̃_t), or large σ_t² = β_t. The decoder L_0 uses β̃ of the "
                                   "second step either way")
        for label, value in (("the model's own", None), ("small: σ_t² = β̃_t", "small"),
                             ("large: σ_t² = β_t", "large")):
            self.varianceCombo.addItem(label, value)
        self.seedSpin = named(QSpinBox(), "elboSeedSpin", "Seed of the noise ε that draws each x_t = √ᾱ_t·x_0 + "
                              "√(1−ᾱ_t)·ε (one x_t per image and t): the same seed gives the numbers of "
                              "`ddpm elbo --seed S`")
        self.seedSpin.setRange(0, 2**31 - 1)

        self.computeButton = named(QPushButton("Compute"), "elboComputeButton", "Compute every term L_0…L_T of "
                                   "L_VLB = L_T + Σ_{t=2}^{T} L_{t−1} + L_0 on a worker thread (N·T model "
                                   "evaluations, batched)")
        self.computeButton.clicked.connect(self.compute)
        self.cancelButton = named(QPushButton("Cancel"), "elboCancelButton",
                                  "Stop computing the bound; the curve from before stays")
        self.cancelButton.clicked.connect(self.cancel)
        self.autoCheck = named(QCheckBox("on schedule edits"), "elboAutoCheck", "Recompute the bound whenever the "
                               "window's schedule β_t changes (for models that accept any schedule, like the "
                               "oracle); the previous curve stays faint")
        self.keepCheck = named(QCheckBox("keep previous faint"), "elboKeepPreviousCheck", "After a recompute, draw "
                               "the previous curve faint, to compare the bound L_VLB = Σ_k L_k before and after")
        self.keepCheck.setChecked(True)
        self.keepCheck.toggled.connect(lambda on: on or self.clear_previous())
        self.logXCheck = named(QCheckBox("log t"), "elboLogXCheck",
                               "A log axis for t, to spread out small t, where most of the KL terms' bits are")
        self.logXCheck.setChecked(True)
        self.logXCheck.toggled.connect(self._on_log_x)
        self.progressBar = named(QProgressBar(), "elboProgress", "(image, timestep) evaluations done / N·T")
        self.progressBar.setFormat("%v / %m terms")

        self.totalLabel = named(QLabel(), "elboTotalLabel", "L_VLB = L_T + Σ_{t=2}^{T} L_{t−1} + L_0 in bits/dim: "
                                "an upper bound on −log₂ p_θ(x_0) / (C·H·W), averaged over the images")
        self.totalLabel.setTextFormat(rich)
        self.totalLabel.setStyleSheet("font-size: 15px;")
        self.totalLabel.setTextInteractionFlags(selectable)
        self.breakdownLabel = named(QLabel(), "elboBreakdownLabel", "The three parts: L_0 = −log p_θ(x_0 | x_1), "
                                    "Σ_{t=2}^{T} L_{t−1} (the KL terms), L_T = KL(q(x_T | x_0) ‖ N(0, I)); bits per "
                                    "image = bits/dim · C·H·W")
        self.breakdownLabel.setTextFormat(rich)
        self.breakdownLabel.setWordWrap(True)
        self.breakdownLabel.setStyleSheet("color: #444;")
        self.breakdownLabel.setTextInteractionFlags(selectable)

        self.plot = named(pg.PlotWidget(), "elboPlot", TERMS_TIP)
        self.plot.setBackground("w")
        self.plot.setMinimumHeight(220)
        pi = self.plot.getPlotItem()
        pi.setLabel("left", "bits/dim")
        pi.setLabel("bottom", "t  (term L<sub>t−1</sub>)")
        pi.showGrid(x=True, y=True, alpha=0.25)
        pi.setMenuEnabled(False)
        for ax in ("left", "bottom"):
            pi.getAxis(ax).setTextPen("#222")
            pi.getAxis(ax).setPen("#666")
            pi.getAxis(ax).enableAutoSIPrefix(False)  # "3·10¹ (x1e-06)" on a log axis reads badly
        self.prevCurve = pg.PlotDataItem(pen=PREV_PEN)
        self.prevPoints = pg.PlotDataItem(pen=None, symbol="o", symbolSize=9, symbolBrush=PREV_BRUSH,
                                          symbolPen=pg.mkPen(150, 150, 150, 90))
        self.klCurve = pg.PlotDataItem(pen=KL_PEN)
        self.decoderPoint = pg.PlotDataItem(pen=None, symbol="s", symbolSize=11, symbolBrush=DECODER_BRUSH,
                                            symbolPen=pg.mkPen("k"))
        self.priorPoint = pg.PlotDataItem(pen=None, symbol="d", symbolSize=13, symbolBrush=PRIOR_BRUSH,
                                          symbolPen=pg.mkPen("k"))
        self.hoverMarker = pg.PlotDataItem(pen=None, symbol="o", symbolSize=14, symbolBrush=None,
                                           symbolPen=pg.mkPen((0, 0, 0), width=2))
        for item in (self.prevCurve, self.prevPoints, self.klCurve, self.decoderPoint, self.priorPoint,
                     self.hoverMarker):
            pi.addItem(item)
        self.hoverText = pg.TextItem(anchor=(-0.05, 1.1))
        self.hoverText.setZValue(1000)
        self.hoverText.hide()
        pi.addItem(self.hoverText, ignoreBounds=True)
        self.emptyText = pg.TextItem("Compute to see which timesteps carry the bound", color="#777",
                                     anchor=(0.5, 0.5))
        pi.addItem(self.emptyText, ignoreBounds=True)
        self.legend = pi.addLegend(offset=(10, -10), labelTextColor="#222", brush=pg.mkBrush(255, 255, 255, 200))
        self.plot.setLogMode(x=self.logXCheck.isChecked(), y=True)
        # every move, not sigMouseMoved: pyqtgraph drops a move that comes < 1/mouseRateLimit s after the last
        # one, so a quick move that stops on a point would leave the hover on the point before
        self._scene = self.plot.scene()
        self._scene.installEventFilter(self)
        self.plot.scene().sigMouseClicked.connect(self._on_mouse_clicked)

        self.hoverLabel = named(QLabel("Hover a point for its value and share of the total."), "elboHoverLabel",
                                "The term under the mouse: its formula, its value in bits/dim and its share "
                                "L_k / L_VLB of the total")
        self.hoverLabel.setTextFormat(rich)
        self.hoverLabel.setWordWrap(True)
        self.statusLabel = named(QLabel(), "elboStatus")
        self.statusLabel.setWordWrap(True)
        self.statusLabel.setTextInteractionFlags(selectable)

        form = QGridLayout()
        form.setHorizontalSpacing(8)
        for widget, at in (("Model", (0, 0)), (self.modelCombo, (0, 1, 1, 5)), (self.modelNote, (1, 1, 1, 5)),
                           ("Images", (2, 0)), (self.sourceCombo, (2, 1, 1, 3)), ("N", (2, 4)),
                           (self.countSpin, (2, 5)), ("Variance", (3, 0)), (self.varianceCombo, (3, 1, 1, 3)),
                           ("Seed", (3, 4)), (self.seedSpin, (3, 5))):
            form.addWidget(QLabel(widget) if isinstance(widget, str) else widget, *at)
        form.setColumnStretch(1, 2)
        form.setColumnStretch(3, 1)
        buttons = QHBoxLayout()
        for widget, stretch in ((self.computeButton, 2), (self.cancelButton, 1), (self.autoCheck, 0),
                                (self.keepCheck, 0), (self.logXCheck, 0)):
            buttons.addWidget(widget, stretch)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(form)
        layout.addLayout(buttons)
        for widget in (self.progressBar, self.statusLabel, self.totalLabel, self.breakdownLabel):
            layout.addWidget(widget)
        layout.addWidget(self.plot, 1)
        layout.addWidget(self.hoverLabel)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)
        self._redraw()
