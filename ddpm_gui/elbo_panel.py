"""The ELBO panel: the variational bound of a model on a photo or on dataset images, term by term.

L_VLB = L_T + Σ_{t=2}^{T} L_{t−1} + L_0 (DDPM notes, eq. 9–14) in bits per dimension, exactly what ``ddpm elbo``
prints. The plot draws L_{t−1} against t on a log axis (the KL terms as a line, L_0 at t = 1 and L_T at t = T + 1 as
markers); hovering a point names the term, its value and share, clicking it moves the window's slider to its x_t.
A trained model's bound always uses its own schedule; the oracle's uses the window's, so a schedule edit moves it
(Compute again, or tick "on schedule edits"), with the previous curve kept faint.

A Stable Diffusion pipeline chosen in the model menu (a folder, or a repo in the Hugging Face cache) gets a prompt
field and the same plot in bits per latent dimension (:mod:`core.vlb.latent`): the bound of its UNet on the images'
latents z_0 = s·E(x), L_0 a continuous density; the note says what it bounds, the breakdown shows the VAE's
reconstruction PSNR, the status line the run's estimate before the first batch. The pipeline is loaded on the
worker through the shared cache (:mod:`core.jobs.pipelines`), part by part, so the Generate panel's copy is reused.

A thin view over :mod:`core.jobs.bound`: the widgets become an :class:`~core.jobs.bound.ElboJob` that a
:class:`~ddpm_gui.worker.WorkerRunner` runs (:func:`~core.jobs.bound.elbo_events`). ``ElboPanel.install(window)``
adds the "ELBO" tab to a :class:`~ddpm_gui.main_window.MainWindow`.
"""
from __future__ import annotations

import html
from typing import Callable

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QPointF, Qt, Signal
from PySide6.QtWidgets import QCheckBox, QGridLayout, QLabel, QLineEdit, QProgressBar, QSizePolicy, QVBoxLayout
from superqt.utils import qdebounced

from core.device import pick_device
from core.jobs.bound import (DATASET, LATENT_NOTE, NO_PHOTO, OPEN_FOLDER, PHOTO_ORACLE_TIP, SOURCES, TIPS, VARIANCES,
                             ElboJob, ElboProgress, ElboRun, ElboStage, LatentElboJob, accepts_any_schedule,
                             done_line, elbo_events, format_bits, hover_anchor, hover_text, kl_line,
                             latent_elbo_events, model_note, model_request, nearest_term, point_xy, progress_line,
                             schedule_changed_line, stage_line, term_points, totals_text, view_range)
from core.jobs.pipelines import loaded_pipeline
from core.messages import one_line
from core.model_spec import ORACLE, PHOTO, ModelCache, parse_spec
from core.schedule import NoiseSchedule
from ddpm_gui.widgets import FolderMenu, JobPanel, ModelMenu, button, combo_box, hbox, named, spin_box
from ddpm_gui.worker import WorkerRunner

MAX_IMAGES = 256
AUTO_DELAY_MS = 400     # a schedule drag emits many changes: recompute once it rests

KL_PEN = pg.mkPen((31, 119, 180), width=2)
PREV_PEN = pg.mkPen((120, 120, 120, 110), width=2, style=Qt.PenStyle.DashLine)
DECODER_BRUSH, PRIOR_BRUSH = pg.mkBrush(255, 127, 14), pg.mkBrush(214, 39, 40)
PREV_BRUSH = pg.mkBrush(150, 150, 150, 90)

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
        self.hover_k: int | None = None
        self._key_memo: tuple | None = None      # (what the key was made from, the photo, the key): _loaded_model
        self._pipeline_memo: tuple[str, bool] = ("", False)   # (spec, is it a Stable Diffusion pipeline)
        self.estimate_note = ""                  # the run's estimate (a pipeline's bound), once the worker has it
        self._auto_later = qdebounced(self._auto_compute, timeout=AUTO_DELAY_MS, parent=self)
        self._build_ui()
        self.sourceCombo.set_quietly(1 if parse_spec(self.modelCombo.spec()).kind == "builtin" else 0)
        self._on_source_changed()
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
        if self.is_pipeline():
            return "pipeline", spec
        kind = parse_spec(spec).kind
        return ("folder" if kind == ORACLE and spec != "oracle:builtin:mnist" else kind), spec

    def is_pipeline(self) -> bool:
        """True when the chosen model is a Stable Diffusion pipeline (its bound is in latent space)."""
        spec = self.modelCombo.spec()
        if self._pipeline_memo[0] != spec:
            from core.models.load import is_latent_spec
            self._pipeline_memo = (spec, is_latent_spec(spec))
        return self._pipeline_memo[1]

    def set_prompt(self, prompt: str) -> None:
        """A pipeline's prompt c (empty: the unconditional model)."""
        self.promptEdit.setText(prompt)

    def select_model(self, spec: str) -> None:
        """``builtin:NAME``, ``photo`` (the oracle over the loaded photo), ``oracle:builtin:mnist``, or any other
        model spec (a model folder, ``oracle:PATH``, a Stable Diffusion pipeline folder or cached repo id), which
        is added to the list."""
        self.modelCombo.select(spec)

    def select_source(self, spec: str, n: int | None = None) -> None:
        """``photo`` (the loaded photo), ``builtin:mnist`` (its held-out digits) or a folder of images; ``n`` the
        number of dataset images (the first n)."""
        self.sourceCombo.select(spec)
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
        if isinstance(job, LatentElboJob):
            loaded = loaded_pipeline(job.spec, job.device) is not None
            fn, args = latent_elbo_events, (job,)
        else:
            loaded = self.cache.peek(job.model_key) is not None
            fn, args = elbo_events, (job, self.cache)
        try:  # the callbacks arrive through the event loop, after the state below is set
            self.runner.start(fn, *args, on_frame=self._on_progress,
                              on_finished=self._on_finished, on_cancelled=self._on_cancelled,
                              on_error=self._on_error, on_done=self._on_done)
        except RuntimeError:  # the window is closing: its runners were shut down
            return False
        self._job = job
        self.partial = None
        self.estimate_note = ""
        self._set_running(True)
        self.progressBar.setFormat("%v / %m terms")
        self.progressBar.setRange(0, 0)  # busy until the first batch (the model may still be loading)
        self._set_status("Computing the bound…" if loaded else
                         "Loading the pipeline…" if isinstance(job, LatentElboJob) else "Loading the model…")
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
        v = float(r.terms[k])
        line, box = hover_text(r, k, self.previous)
        self.hoverLabel.setText(line)
        if v > 0 and np.isfinite(v):
            self.hoverMarker.setData([k + 1], [v])
            self.hoverText.setHtml(box)
            xy = point_xy(k, v, self.logXCheck.isChecked())
            self.hoverText.setPos(*xy)
            self.hoverText.setAnchor(hover_anchor(*xy, self.plot.getViewBox().viewRange()))
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
        xy = point_xy(k, float(self.result.terms[k]), self.logXCheck.isChecked())
        return self.plot.getViewBox().mapViewToScene(QPointF(*xy))

    # ----- model and image lists -------------------------------------------------------------------------------
    def _model_accepts_any_schedule(self) -> bool:
        """The oracle works with any schedule; a trained model is tied to its own (known once it is loaded)."""
        if self.is_pipeline():
            return False
        model = self._loaded_model()
        return model.schedule is None if model is not None else accepts_any_schedule(self.modelCombo.spec())

    def _on_source_changed(self, _spec: str = "") -> None:
        self.countSpin.setEnabled((self.sourceCombo.currentData() or PHOTO) != PHOTO)

    def _update_model_note(self) -> None:
        pipeline = self.is_pipeline()
        for widget in (self.promptLabel, self.promptEdit, self.latentNote):
            widget.setVisible(pipeline)
        any_schedule = self._model_accepts_any_schedule()
        self.autoCheck.setEnabled(any_schedule)
        if pipeline:
            self.modelNote.setText(self._pipeline_note())
        else:
            self.modelNote.setText(model_note(self._loaded_model(), self.window_.schedule, any_schedule))

    def _pipeline_note(self) -> str:
        pipe = loaded_pipeline(self.modelCombo.spec(), self._device())
        if pipe is None:
            return ("A Stable Diffusion pipeline: Compute loads it (text encoder, UNet, VAE) and bounds its UNet on "
                    "the images' latents, tied to its own schedule.")
        s, den = pipe.denoiser.schedule, pipe.denoiser
        return (f"{html.escape(pipe.name)}: latents {den.channels}×h×w (s = {pipe.scaling_factor:g}), trained at "
                f"{pipe.default_size}²; tied to its own schedule ({html.escape(s.name)}, T = {s.T}).")

    def _device(self) -> str:
        return str(pick_device("auto"))

    def _model_request(self, device: str) -> tuple[tuple, Callable]:
        w = self.window_
        return model_request(self.modelCombo.spec(), device, photo_path=w.photo_path, photo=w.x0)

    def _loaded_model(self):
        """The chosen (pixel) model if it is loaded. Its key is remembered per photo (a pasted photo's pixels are hashed
        once, not on every schedule edit); Compute always makes a fresh one."""
        w, device = self.window_, self._device()
        if self.is_pipeline():
            return None
        made_of = (self.modelCombo.spec(), device, w.photo_path)
        memo = self._key_memo     # holds the photo array itself, so `is` cannot be fooled by a reused id()
        if memo is None or memo[0] != made_of or memo[1] is not w.x0:
            try:
                memo = self._key_memo = (made_of, w.x0, self._model_request(device)[0])
            except ValueError:
                return None
        return self.cache.peek(memo[2])

    # ----- the run ---------------------------------------------------------------------------------------------
    def _make_job(self) -> ElboJob | LatentElboJob:
        spec, w = self.sourceCombo.currentData() or PHOTO, self.window_
        photo = spec == PHOTO
        if photo and w.photo_path is None and w.x0 is None:
            raise ValueError(NO_PHOTO)
        if self.is_pipeline():
            return LatentElboJob(spec=self.modelCombo.spec(), device=self._device(),
                                 source=PHOTO if photo else DATASET,
                                 photo_path=str(w.photo_path) if photo and w.photo_path is not None else None,
                                 photo_array=w.x0.copy() if photo and w.photo_path is None else None,
                                 data=None if photo else spec, n=self.countSpin.value(),
                                 prompt=self.promptEdit.text(), variance=self.varianceCombo.currentData(),
                                 seed=self.seedSpin.value())
        key, loader = self._model_request(self._device())
        return ElboJob(model_key=key, loader=loader, source=PHOTO if photo else DATASET,
                       photo_path=str(w.photo_path) if photo and w.photo_path is not None else None,
                       photo_array=w.x0.copy() if photo and w.photo_path is None else None,
                       data=None if photo else spec, n=self.countSpin.value(),
                       variance=self.varianceCombo.currentData(), seed=self.seedSpin.value(), schedule=w.schedule)

    def _on_progress(self, p: ElboProgress | ElboStage) -> None:
        if not self._running:
            return
        if isinstance(p, ElboStage):   # a pipeline's loading stage, its encoding, its estimate
            self.estimate_note = p.note or self.estimate_note
            self._set_status(stage_line(p))
            return
        self.estimate_note = p.note or self.estimate_note
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
            self.previous = old if old.space == run.space else None   # bits/dim and bits/latent-dim differ
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
        total = self.result.evaluations if self.result is not None else 0
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
            self._set_status(schedule_changed_line(schedule))

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
        if r.T == self.window_.schedule.T and not r.latent:
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
            for item in (self.klCurve, self.decoderPoint, self.priorPoint, self.negativeDecoderPoint):
                item.setData([], [])
        else:
            self.klCurve.setData(*kl_line(shown_terms), connect="finite")
            self.decoderPoint.setData(*term_points(shown_terms, [0]))
            self.negativeDecoderPoint.setData(*term_points(-shown_terms, [0]))  # a latent L_0 < 0, drawn as |L_0|
            self.priorPoint.setData(*term_points(shown_terms, [len(shown_terms) - 1]))
        if faint is None:
            for item in (self.prevCurve, self.prevPoints):
                item.setData([], [])
        else:
            self.prevCurve.setData(*kl_line(faint.terms), connect="finite")
            self.prevPoints.setData(*term_points(faint.terms, [0, faint.T]))
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
        latent = self.result is not None and self.result.latent
        legend.addItem(self.klCurve, "L<sub>t−1</sub>, t = 2…T (KL)")
        legend.addItem(self.decoderPoint, "L<sub>0</sub> continuous decoder (t = 1)" if latent
                       else "L<sub>0</sub> decoder (t = 1)")
        if self.negativeDecoderPoint.getOriginalDataset()[0] is not None and \
                len(self.negativeDecoderPoint.getOriginalDataset()[0]):
            legend.addItem(self.negativeDecoderPoint, "−L<sub>0</sub>: L<sub>0</sub> < 0, a density (t = 1)")
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
        self.modelCombo = ModelMenu("elboModelCombo", TIPS["elboModelCombo"], oracle_photo_tip=PHOTO_ORACLE_TIP,
                                    oracle_title="Oracle over a folder of images")
        self.modelCombo.setMinimumContentsLength(18)
        if not self.modelCombo.spec().startswith("builtin:"):   # the built-in model is not installed yet
            self.modelCombo.select(PHOTO)
        self.modelCombo.specChanged.connect(self._update_model_note)
        self.modelNote = named(QLabel(""), "elboModelNote")
        self.modelNote.setWordWrap(True)
        self.modelNote.setStyleSheet("color: #555;")
        self.promptLabel = QLabel("Prompt")
        self.promptEdit = named(QLineEdit(), "elboPromptEdit", TIPS["elboPromptEdit"])
        self.promptEdit.setPlaceholderText("empty: the unconditional model")
        self.promptEdit.returnPressed.connect(self.compute)
        self.latentNote = named(QLabel(LATENT_NOTE), "elboLatentNote", TIPS["elboLatentNote"])
        self.latentNote.setTextFormat(rich)
        self.latentNote.setWordWrap(True)
        self.latentNote.setStyleSheet("color: #555;")

        ask = [source + ("A folder of images", str) for source in SOURCES if source[1] == OPEN_FOLDER]
        self.sourceCombo = FolderMenu("elboSourceCombo", TIPS["elboSourceCombo"],
                                      [source for source in SOURCES if source[1] != OPEN_FOLDER], ask, contents=18)
        self.sourceCombo.chosen.connect(self._on_source_changed)
        self.countSpin = spin_box("elboCountSpin", TIPS["elboCountSpin"], 1, MAX_IMAGES, value=1)
        self.varianceCombo = combo_box("elboVarianceCombo", TIPS["elboVarianceCombo"], VARIANCES)
        self.seedSpin = spin_box("elboSeedSpin", TIPS["elboSeedSpin"], 0, 2**31 - 1)

        self.computeButton = button("Compute", "elboComputeButton", TIPS["elboComputeButton"], self.compute)
        self.cancelButton = button("Cancel", "elboCancelButton", "Stop computing the bound; the curve from before "
                                   "stays", self.cancel)
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

        self.totalLabel = named(QLabel(), "elboTotalLabel", TIPS["elboTotalLabel"])
        self.totalLabel.setTextFormat(rich)
        self.totalLabel.setStyleSheet("font-size: 15px;")
        self.totalLabel.setTextInteractionFlags(selectable)
        self.breakdownLabel = named(QLabel(), "elboBreakdownLabel", TIPS["elboBreakdownLabel"])
        self.breakdownLabel.setTextFormat(rich)
        self.breakdownLabel.setWordWrap(True)
        self.breakdownLabel.setStyleSheet("color: #444;")
        self.breakdownLabel.setTextInteractionFlags(selectable)

        self.plot = named(pg.PlotWidget(), "elboPlot", TIPS["elboPlot"])
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
        self.negativeDecoderPoint = pg.PlotDataItem(pen=None, symbol="s", symbolSize=11, symbolBrush=None,
                                                    symbolPen=pg.mkPen(DECODER_BRUSH.color(), width=2))
        self.priorPoint = pg.PlotDataItem(pen=None, symbol="d", symbolSize=13, symbolBrush=PRIOR_BRUSH,
                                          symbolPen=pg.mkPen("k"))
        self.hoverMarker = pg.PlotDataItem(pen=None, symbol="o", symbolSize=14, symbolBrush=None,
                                           symbolPen=pg.mkPen((0, 0, 0), width=2))
        for item in (self.prevCurve, self.prevPoints, self.klCurve, self.decoderPoint, self.negativeDecoderPoint,
                     self.priorPoint, self.hoverMarker):
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
        # every move, not sigMouseMoved (it drops moves < 1/mouseRateLimit s apart: the hover could stay behind)
        self._scene = self.plot.scene()
        self._scene.installEventFilter(self)
        self.plot.scene().sigMouseClicked.connect(self._on_mouse_clicked)

        self.hoverLabel = named(QLabel("Hover a point for its value and share of the total."), "elboHoverLabel",
                                TIPS["elboHoverLabel"])
        self.hoverLabel.setTextFormat(rich)
        self.hoverLabel.setWordWrap(True)
        self.statusLabel = named(QLabel(), "elboStatus")
        self.statusLabel.setWordWrap(True)
        self.statusLabel.setTextInteractionFlags(selectable)

        form = QGridLayout()
        form.setHorizontalSpacing(8)
        for widget, at in (("Model", (0, 0)), (self.modelCombo, (0, 1, 1, 5)), (self.modelNote, (1, 1, 1, 5)),
                           (self.promptLabel, (2, 0)), (self.promptEdit, (2, 1, 1, 5)),
                           (self.latentNote, (3, 1, 1, 5)),
                           ("Images", (4, 0)), (self.sourceCombo, (4, 1, 1, 3)), ("N", (4, 4)),
                           (self.countSpin, (4, 5)), ("Variance", (5, 0)), (self.varianceCombo, (5, 1, 1, 3)),
                           ("Seed", (5, 4)), (self.seedSpin, (5, 5))):
            form.addWidget(QLabel(widget) if isinstance(widget, str) else widget, *at)
        form.setColumnStretch(1, 2)
        form.setColumnStretch(3, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(form)
        layout.addLayout(hbox((self.computeButton, 2), (self.cancelButton, 1), self.autoCheck, self.keepCheck,
                              self.logXCheck))
        for widget in (self.progressBar, self.statusLabel, self.totalLabel, self.breakdownLabel):
            layout.addWidget(widget)
        layout.addWidget(self.plot, 1)
        layout.addWidget(self.hoverLabel)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)
        self._redraw()
