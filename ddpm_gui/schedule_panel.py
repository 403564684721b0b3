"""The schedule panel: a pyqtgraph plot of β_t (or ᾱ_t, √ᾱ_t, √(1−ᾱ_t), log-SNR), preset controls, and a visual
editor whose control points rebuild the schedule by monotone interpolation (:mod:`core.schedule_edit`).

The panel owns the current :class:`core.schedule.NoiseSchedule` and announces every change with
``scheduleChanged(schedule)``; every change (preset, T, β range, a drag, Load) is one undo step. A schedule from
elsewhere — a Stable Diffusion pipeline's, while the main view is in latent space — can be shown instead
(:meth:`SchedulePanel.show_override`): it is then the current one, read-only, until :meth:`~SchedulePanel.end_override`
brings back the panel's own.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QSignalBlocker, Qt, Signal
from PySide6.QtGui import QKeySequence, QUndoCommand, QUndoStack
from PySide6.QtWidgets import (QCheckBox, QComboBox, QFileDialog, QGridLayout, QLabel, QPushButton, QSizePolicy,
                               QToolButton, QVBoxLayout, QWidget)

from core.messages import one_line
from core.outputs import check_output_file, refuse_overwriting_inputs
from core.schedule import MAX_T, NOTES_BETA_END, NOTES_BETA_START, NOTES_T, PRESETS, NoiseSchedule, ScheduleError
from core.schedule_edit import (BETA, CURVE_HTML, CURVE_TIPS, CURVES, PRESET_LABELS, EditError, Knots, curve_values,
                                fit_knots, knot_points, knots_from_params, knots_in, point_added, rebuilt, space_of,
                                stretched_to, summary_html, to_space, zero_terminal)
from ddpm_gui.image_views import style_plot
from ddpm_gui.widgets import LogAxis, combo_box, finite_or_nan, named, row, spin_box

MAIN_PEN = pg.mkPen(30, 90, 200, width=2.5)
SECOND_PEN = pg.mkPen(200, 90, 30, width=2, style=Qt.PenStyle.DashLine)
PIN_PEN = pg.mkPen(120, 120, 120, 140, width=2, style=Qt.PenStyle.DotLine)
MARKER_PEN = pg.mkPen(220, 40, 40, width=2)
# where the legend leaves each curve room: (anchor on the legend, anchor on the plot, offset in pixels)
LEGEND_CORNERS = {"beta": ((0, 0), (0, 0), (10, 10)), "sqrt_alphas_cumprod": ((1, 0.5), (1, 0.5), (-10, 0)),
                  "sqrt_one_minus_alphas_cumprod": ((1, 0.5), (1, 0.5), (-10, 0))}
OTHER_SCALE = {"sqrt_alphas_cumprod": "sqrt_one_minus_alphas_cumprod",   # drawn dashed beside it
               "sqrt_one_minus_alphas_cumprod": "sqrt_alphas_cumprod"}


@dataclass(frozen=True)
class EditState:
    """What one undo step restores: the schedule and the control points it was edited with."""

    schedule: NoiseSchedule
    knots: Knots


class _Snapshot(QUndoCommand):
    def __init__(self, panel: "SchedulePanel", before: EditState, after: EditState, text: str):
        super().__init__(text)
        self.panel, self.before, self.after = panel, before, after
        self._first = True

    def redo(self):
        if self._first:  # the edit is already applied when the command is pushed
            self._first = False
            return
        self.panel._restore(self.after)

    def undo(self):
        self.panel._restore(self.before)


class ControlPoints(pg.ScatterPlotItem):
    """Draggable control points: drag moves one; right-click or Shift+click removes one."""

    def __init__(self, panel: "SchedulePanel"):
        super().__init__(size=12, pen=pg.mkPen("#222", width=1.5), brush=pg.mkBrush(255, 175, 0),
                         hoverable=True, hoverSize=15, hoverBrush=pg.mkBrush(255, 215, 80), tip=None)
        self.panel = panel
        self._drag: tuple[int, pg.Point] | None = None
        self.setZValue(10)

    def _point_at(self, pos) -> int | None:
        pts = self.pointsAt(pos)
        return int(pts[0].index()) if len(pts) else None

    def mouseDragEvent(self, ev):  # noqa: N802 - pyqtgraph override
        if ev.button() != Qt.MouseButton.LeftButton:
            ev.ignore()
            return
        if ev.isStart():
            i = self._point_at(ev.buttonDownPos())
            if i is None:
                ev.ignore()
                return
            spot = self.data[i]
            self._drag = (i, pg.Point(spot["x"], spot["y"]) - ev.buttonDownPos())
            self.panel.begin_drag()
        elif self._drag is None:
            ev.ignore()
            return
        i, offset = self._drag
        p = ev.pos() + offset
        self.panel.drag_point(i, p.x(), p.y())
        if ev.isFinish():
            self._drag = None
            self.panel.end_drag()
        ev.accept()

    def mouseClickEvent(self, ev):  # noqa: N802 - pyqtgraph override
        i = self._point_at(ev.pos())
        shift = bool(ev.modifiers() & Qt.KeyboardModifier.ShiftModifier)
        if i is not None and (ev.button() == Qt.MouseButton.RightButton or
                              (ev.button() == Qt.MouseButton.LeftButton and shift)):
            self.panel.remove_point(i)
            ev.accept()
        else:
            ev.ignore()


class SchedulePanel(QWidget):
    """Presets, the schedule plot and the visual editor. See the module docstring."""

    scheduleChanged = Signal(object)   # NoiseSchedule
    timestepDragged = Signal(int)      # the t marker was dragged
    message = Signal(str)              # a one-line note for the status bar (refused edits, …)
    error = Signal(str)                # a one-line error for a message box (a bad schedule file, …)

    def __init__(self, schedule: NoiseSchedule | None = None, parent=None):
        super().__init__(parent)
        self.setObjectName("schedulePanel")
        self._schedule = schedule or NoiseSchedule.preset("linear")
        self._curve = "beta"
        self._knots = fit_knots(self._schedule, BETA)
        self._pinned: NoiseSchedule | None = None
        self._t = 0
        self._override: NoiseSchedule | None = None   # a pipeline's schedule shown instead of ours (read-only)
        self._override_note = ""
        self._drag_before: EditState | None = None
        self._updating_marker = False
        self._last_preset = self._schedule.name if self._schedule.name in PRESETS else "linear"
        self.loaded_path: Path | None = None   # the schedule file last loaded (an input: Save never replaces it)
        self.input_paths = lambda: []          # other files Save must never replace (the window sets it: its photo)
        self.undo_stack = QUndoStack(self)
        self.undo_stack.setObjectName("scheduleUndoStack")
        self._build()
        self._sync_controls()
        self._redraw()

    # ----- public API ------------------------------------------------------------------------------------
    @property
    def schedule(self) -> NoiseSchedule:
        """The current schedule: the override while one is shown, else the panel's own (edited) one."""
        return self._override if self._override is not None else self._schedule

    @property
    def own_schedule(self) -> NoiseSchedule:
        """The panel's own schedule (the one it edits, shown again when an override ends)."""
        return self._schedule

    @property
    def overridden(self) -> bool:
        return self._override is not None

    def show_override(self, schedule: NoiseSchedule, note: str) -> None:
        """Show ``schedule`` (a pipeline's) as the current one, read-only: presets, points, Load and undo are off
        and say why (``note``, rich text, heads the summary line). ``scheduleChanged`` announces it."""
        self._override, self._override_note = schedule, note
        self._sync_controls()
        self._redraw()
        self.scheduleChanged.emit(schedule)

    def end_override(self) -> None:
        """Back to the panel's own schedule (announced by ``scheduleChanged``)."""
        if self._override is None:
            return
        self._override, self._override_note = None, ""
        self._sync_controls()
        self._redraw()
        self.scheduleChanged.emit(self._schedule)

    def _refused(self) -> bool:
        """True (and a status line) when an edit comes while an override is shown."""
        if self._override is not None:
            self.message.emit("The schedule shown is the pipeline's (read-only): turn off Latent space to edit yours")
        return self._override is not None

    @property
    def knots(self) -> Knots:
        return self._knots

    @property
    def curve(self) -> str:
        return self._curve

    def set_schedule(self, schedule: NoiseSchedule, text: str = "Change schedule") -> None:
        """Make ``schedule`` current as one undo step."""
        if self._refused():
            return
        self._commit(EditState(schedule, knots_in(space_of(self._curve), schedule, knots_from_params(schedule))), text)

    def set_curve(self, curve: str) -> None:
        i = self.curveCombo.findData(curve)
        if i < 0:
            raise KeyError(curve)
        self.curveCombo.setCurrentIndex(i)

    def set_timestep(self, t: int) -> None:
        """Move the t marker (the slider calls this; it does not emit ``timestepDragged``)."""
        self._t = int(t)
        self._updating_marker = True
        try:
            self.marker.setValue(self._t)
        finally:
            self._updating_marker = False

    def point_position(self, i: int) -> tuple[float, float]:
        """Where control point i is drawn, in plot coordinates (log10 of the value on a log axis)."""
        spot = self.points.data[i]
        return float(spot["x"]), float(spot["y"])

    def move_point(self, i: int, t: int, value: float) -> bool:
        """Move control point i to (t, value of the shown curve) as one undo step; False (and a status message)
        if the edit is refused."""
        self.begin_drag()
        ok = self._apply_point(i, t, value)
        self.end_drag()
        return ok

    def add_point(self, t: int) -> bool:
        """Add a control point on the curve at t (the schedule is unchanged until a point moves)."""
        if self._refused():
            return False
        try:
            knots = point_added(self._knots, self._schedule, t)
        except EditError as e:
            self.message.emit(str(e))
            return False
        self._commit(EditState(self._schedule, knots), "Add point")
        return True

    def remove_point(self, i: int) -> bool:
        if self._refused():
            return False
        try:
            knots = self._knots.removed(i)
            schedule = rebuilt(knots, self._schedule)
        except EditError as e:
            self.message.emit(f"Refused: {e}")
            return False
        self._commit(EditState(schedule, knots), "Remove point")
        return True

    def apply_preset(self, name: str | None = None, T: int | None = None, beta_start: float | None = None,
                     beta_end: float | None = None, zero_snr: bool | None = None) -> bool:
        """Switch to a preset (missing arguments come from the controls) as one undo step."""
        if self._refused():
            return False
        name = name or self._last_preset
        T = self.tSpin.value() if T is None else T
        beta_start = self.betaStartSpin.value() if beta_start is None else beta_start
        beta_end = self.betaEndSpin.value() if beta_end is None else beta_end
        zero_snr = self.zeroSnrCheck.isChecked() if zero_snr is None else zero_snr
        try:
            schedule = NoiseSchedule.preset(name, T=int(T), beta_start=beta_start, beta_end=beta_end,
                                            zero_snr=bool(zero_snr))
        except ScheduleError as e:
            self.message.emit(f"Refused: {e}")
            self._sync_controls()
            return False
        self._last_preset = name
        self.set_schedule(schedule, f"Preset {name}")
        return True

    def apply_notes_example(self) -> None:
        """The notes' example: linear β from 1e-4 to 0.05 with T = 100."""
        self.apply_preset("linear", T=NOTES_T, beta_start=NOTES_BETA_START, beta_end=NOTES_BETA_END, zero_snr=False)

    def load_schedule(self, path) -> bool:
        """Load a schedule JSON file as one undo step; on any failure (not JSON, nested too deeply, numbers out
        of range, …) emit ``error`` with one line naming the file and keep the current schedule."""
        if self._refused():
            return False
        try:
            schedule = NoiseSchedule.load(path)
            self.set_schedule(schedule, f"Load {Path(path).name}")
        except Exception as e:  # noqa: BLE001 - a crafted file can make the parser raise anything
            self.error.emit(_with_path(path, e))
            return False
        self.loaded_path = Path(path)
        self.message.emit(f"Loaded schedule {path} ({schedule.name}, T = {schedule.T})")
        return True

    def save_schedule(self, path) -> bool:
        """Write the schedule as JSON at ``path`` (atomically); refused with one line when ``path`` is one of the
        inputs (the loaded schedule file, the window's photo), even through a symlink: nothing is written."""
        try:
            refuse_overwriting_inputs([path], [self.loaded_path, *self.input_paths()])
            check_output_file(path)
            self.schedule.save(path)
        except Exception as e:  # noqa: BLE001 - always one line
            self.error.emit(_with_path(path, e))
            return False
        self.message.emit(f"Saved schedule to {path}")
        return True

    def set_pinned(self, on: bool) -> None:
        """Keep the current schedule as a faint reference curve (or drop it)."""
        self._pinned = self.schedule if on else None
        with QSignalBlocker(self.pinButton):
            self.pinButton.setChecked(on)
        self._redraw()

    @property
    def pinned(self) -> NoiseSchedule | None:
        return self._pinned

    # ----- editing ---------------------------------------------------------------------------------------
    def begin_drag(self) -> None:
        self._drag_before = EditState(self._schedule, self._knots)
        self.plot.getViewBox().disableAutoRange()

    def drag_point(self, i: int, x_view: float, y_view: float) -> bool:
        """A drag position in plot coordinates; applies the edit if it is valid."""
        with np.errstate(over="ignore"):
            value = float(np.power(10.0, y_view)) if self._log_y() else float(y_view)
        return self._apply_point(i, int(round(x_view)), value)

    def end_drag(self) -> None:
        before, self._drag_before = self._drag_before, None
        self.plot.getViewBox().enableAutoRange(y=True)
        if before is not None and (before.schedule is not self._schedule or before.knots != self._knots):
            self.undo_stack.push(_Snapshot(self, before, EditState(self._schedule, self._knots), "Move point"))
        self._redraw()

    def _apply_point(self, i: int, t: int, value: float) -> bool:
        if self._refused():
            return False
        try:
            new_knots = self._knots.dragged(i, t, to_space(self._curve, value))
            schedule = rebuilt(new_knots, self._schedule)
        except EditError as e:
            self.message.emit(f"Refused: {e} — kept the last valid schedule")
            return False
        self._set_state(EditState(schedule, new_knots))
        return True

    def _commit(self, state: EditState, text: str) -> None:
        before = EditState(self._schedule, self._knots)
        self._set_state(state)
        self.undo_stack.push(_Snapshot(self, before, state, text))

    def _restore(self, state: EditState) -> None:
        self._set_state(EditState(state.schedule, knots_in(space_of(self._curve), state.schedule, state.knots)))

    def _set_state(self, state: EditState) -> None:
        changed = state.schedule is not self._schedule and self._override is None  # an undo under an override
        # changes our own schedule, announced when the override ends
        self._schedule, self._knots = state.schedule, state.knots
        if self._schedule.name in PRESETS:
            self._last_preset = self._schedule.name
        self._sync_controls()
        self._redraw()
        if changed:
            self.scheduleChanged.emit(self._schedule)

    # ----- UI --------------------------------------------------------------------------------------------
    def _build(self) -> None:
        self.presetCombo = combo_box("schedulePreset", "Noise schedule preset. linear: β_t = linspace(β_start, β_end); "
                                     "scaled linear: β_t = linspace(√β_start, √β_end)²; cosine: ᾱ(t) = "
                                     "cos²((t/T + s)/(1 + s)·π/2); sigmoid; quadratic: β_start + (β_end − β_start)·u²",
                                     [(PRESET_LABELS.get(n, n), n) for n in PRESETS] + [("custom (edited)", "custom")])
        self.presetCombo.activated.connect(self._on_preset_combo)
        self.tSpin = spin_box("scheduleT", "T: the number of noising steps (timesteps run 0…T−1)", 2, MAX_T)
        self.tSpin.setKeyboardTracking(False)
        self.tSpin.valueChanged.connect(self._on_T)
        self.betaStartSpin = spin_box("betaStartSpin", "β_start: the first step's variance β_0 (Ho et al.: 1e-4)",
                                      0.00001, 0.99999, step=0.0001, decimals=5)
        self.betaEndSpin = spin_box("betaEndSpin", "β_end: the last step's variance β_{T−1} (Ho et al.: 0.02)",
                                    0.00001, 0.99999, step=0.0001, decimals=5)
        for spin in (self.betaStartSpin, self.betaEndSpin):
            spin.setKeyboardTracking(False)
            spin.valueChanged.connect(lambda _v: self.apply_preset())
        self.zeroSnrCheck = named(QCheckBox("zero terminal SNR"), "zeroSnrCheck",
                                  "Rescale √ᾱ so that ᾱ_{T−1} = 0 exactly (Lin et al. 2023): "
                                  "√ᾱ'_t = (√ᾱ_t − √ᾱ_{T−1})·√ᾱ_0/(√ᾱ_0 − √ᾱ_{T−1})")
        self.zeroSnrCheck.toggled.connect(lambda _v: self.apply_preset())
        self.notesButton = named(QPushButton("Notes' T = 100"), "notesPresetButton",
                                 "The notes' example: linear β from 1e-4 to 0.05 with T = 100")
        self.notesButton.clicked.connect(self.apply_notes_example)
        self.curveCombo = combo_box("scheduleCurve", "Which curve to plot and edit: β_t, ᾱ_t, √ᾱ_t, √(1−ᾱ_t) or "
                                    "log-SNR λ_t = log(ᾱ_t/(1−ᾱ_t))",
                                    [(label, key, CURVE_TIPS[key]) for key, (label, _space) in CURVES.items()])
        self.curveCombo.currentIndexChanged.connect(self._on_curve)
        self.logYCheck = named(QCheckBox("log y"), "scheduleLogY",
                               "Logarithmic y axis (log-SNR is already a logarithm)")
        self.logYCheck.setChecked(True)
        self.logYCheck.toggled.connect(lambda _v: self._redraw())

        self.undoButton = named(QToolButton(), "scheduleUndoButton", "Undo the last schedule change (Ctrl+Z)")
        self.undoButton.setText("↶ Undo")
        self.undoButton.clicked.connect(self.undo_stack.undo)
        self.redoButton = named(QToolButton(), "scheduleRedoButton", "Redo (Ctrl+Shift+Z)")
        self.redoButton.setText("↷ Redo")
        self.redoButton.clicked.connect(self.undo_stack.redo)
        self.undo_stack.canUndoChanged.connect(self.undoButton.setEnabled)
        self.undo_stack.canRedoChanged.connect(self.redoButton.setEnabled)
        self.undoButton.setEnabled(False)
        self.redoButton.setEnabled(False)
        self.pinButton = named(QPushButton("Pin"), "pinScheduleButton", "Keep the current schedule as a faint "
                               "dotted reference curve to compare against (click again to drop it)")
        self.pinButton.setCheckable(True)
        self.pinButton.toggled.connect(self.set_pinned)
        self.loadButton = named(QPushButton("Load…"), "loadScheduleButton",
                                "Load a schedule saved as JSON (the format of `ddpm schedule --json`)")
        self.loadButton.clicked.connect(self._load_dialog)
        self.saveButton = named(QPushButton("Save…"), "saveScheduleButton",
                                "Save the current schedule (β_0…β_{T−1}) as JSON, written atomically")
        self.saveButton.clicked.connect(self._save_dialog)

        self.plot = named(pg.PlotWidget(axisItems={"left": LogAxis("left")}), "schedulePlot",
                          "The noise schedule. Drag the orange points to reshape it (monotone interpolation keeps "
                          "ᾱ_t strictly decreasing and β_t in (0, 1)); double-click adds a point; right-click "
                          "or Shift+click removes one; drag the red line to move t.")
        self.plot.setAcceptDrops(False)
        self.plot.setMinimumHeight(260)
        style_plot(self.plot)
        self.plot.setMenuEnabled(False)
        self.plot.setLabel("bottom", "timestep t")
        pi = self.plot.getPlotItem()
        pi.addLegend(offset=(-10, 10), labelTextColor="#222", brush=pg.mkBrush(255, 255, 255, 220),
                     pen=pg.mkPen("#bbb"))
        self.pinCurve = pi.plot(pen=PIN_PEN, name="pinned")
        self.secondCurve = pi.plot(pen=SECOND_PEN, name="")
        self.mainCurve = pi.plot(pen=MAIN_PEN, name="β_t")
        self.points = ControlPoints(self)
        pi.addItem(self.points)
        self.marker = pg.InfiniteLine(0, angle=90, movable=True, pen=MARKER_PEN,
                                      hoverPen=pg.mkPen(255, 80, 80, width=4))
        self.marker.setZValue(20)
        self.marker.sigPositionChanged.connect(self._on_marker)
        pi.addItem(self.marker, ignoreBounds=True)
        self.plot.scene().sigMouseClicked.connect(self._on_scene_click)

        self.info = named(QLabel(), "scheduleInfo")
        self.info.setWordWrap(True)
        self.info.setTextFormat(Qt.TextFormat.RichText)
        hint = named(QLabel("Drag the orange points to reshape · double-click adds a point · right-click or "
                            "Shift+click removes one · Ctrl+Z / Ctrl+Shift+Z undo / redo · drag the red line to move "
                            "t"), "scheduleHint")
        hint.setWordWrap(True)
        hint.setStyleSheet("color: #555;")

        grid = QGridLayout()
        grid.setContentsMargins(0, 0, 0, 0)
        right = Qt.AlignmentFlag.AlignRight
        for w, r, c, span, *align in (("Preset", 0, 0, 1), (self.presetCombo, 0, 1, 3), (self.notesButton, 0, 4, 2),
                                      ("T", 1, 0, 1), (self.tSpin, 1, 1, 1), ("β_start", 1, 2, 1, right),
                                      (self.betaStartSpin, 1, 3, 1), ("β_end", 1, 4, 1, right),
                                      (self.betaEndSpin, 1, 5, 1), ("Curve", 2, 0, 1), (self.curveCombo, 2, 1, 1),
                                      (self.logYCheck, 2, 2, 2), (self.zeroSnrCheck, 2, 4, 2)):
            grid.addWidget(QLabel(w) if isinstance(w, str) else w, r, c, 1, span, *align)
        for c in (1, 3, 5):
            grid.setColumnStretch(c, 1)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(grid)
        layout.addWidget(row(self.undoButton, self.redoButton, None, self.pinButton, self.loadButton, self.saveButton))
        layout.addWidget(self.plot, 1)
        layout.addWidget(self.info)
        layout.addWidget(hint)
        for w in (self.presetCombo, self.curveCombo):
            w.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
            w.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            w.setMinimumContentsLength(8)
        for spin in (self.tSpin, self.betaStartSpin, self.betaEndSpin):
            spin.setMinimumWidth(70)
            spin.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def make_undo_actions(self, parent):
        """QActions for a menu: Undo (Ctrl+Z) and Redo (Ctrl+Shift+Z, also Ctrl+Y)."""
        undo = self.undo_stack.createUndoAction(parent, "Undo schedule change")
        undo.setShortcuts([QKeySequence("Ctrl+Z")])
        undo.setObjectName("undoScheduleAction")
        redo = self.undo_stack.createRedoAction(parent, "Redo schedule change")
        redo.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])
        redo.setObjectName("redoScheduleAction")
        return undo, redo

    def _sync_controls(self) -> None:
        s = self.schedule
        over = self._override is not None
        custom = s.name not in PRESETS
        p = s.params if isinstance(s.params, dict) else {}
        blockers = [QSignalBlocker(w) for w in (self.presetCombo, self.tSpin, self.betaStartSpin,
                                                self.betaEndSpin, self.zeroSnrCheck)]
        self.presetCombo.setCurrentIndex(self.presetCombo.findData("custom" if custom else s.name))
        self.tSpin.setValue(s.T)
        if not custom and "beta_start" in p:
            self.betaStartSpin.setValue(float(p["beta_start"]))
            self.betaEndSpin.setValue(float(p["beta_end"]))
        self.zeroSnrCheck.setChecked(zero_terminal(s))
        del blockers
        self.betaStartSpin.setEnabled(not over and not custom and s.name != "cosine")
        self.betaEndSpin.setEnabled(not over and not custom and s.name != "cosine")
        self.zeroSnrCheck.setEnabled(not over and not custom)
        for w in (self.presetCombo, self.tSpin, self.notesButton, self.loadButton):
            w.setEnabled(not over)
        self.info.setText(f"{self._override_note}<br>{summary_html(s, 0).rsplit(' · ', 1)[0]}" if over
                          else summary_html(s, len(self._knots)))

    def _log_y(self) -> bool:
        return self.logYCheck.isChecked() and self._curve != "log_snr"

    def _redraw(self) -> None:
        s, curve = self.schedule, self._curve
        log_y = self._log_y()
        pi = self.plot.getPlotItem()
        pi.setLogMode(x=False, y=log_y)
        self.logYCheck.setEnabled(curve != "log_snr")
        pi.legend.clear()
        self._draw(self.mainCurve, s, curve, log_y, CURVE_HTML[curve])
        pi.legend.anchor(*LEGEND_CORNERS.get(curve, ((1, 0), (1, 0), (-10, 10))))
        other = OTHER_SCALE.get(curve)
        self._draw(self.secondCurve, s if other else None, other, log_y, CURVE_HTML.get(other))
        pinned = self._pinned
        self._draw(self.pinCurve, pinned, curve, log_y, f"pinned: {pinned.name}" if pinned is not None else "")
        self.points.setData(*(([], []) if self._override is not None else knot_points(self._knots, curve, log_y)))
        pi.setLabel("left", CURVE_HTML[curve])
        vb = pi.getViewBox()
        vb.setLimits(xMin=-0.02 * s.T, xMax=1.02 * (s.T - 1))
        pi.setXRange(0, s.T - 1, padding=0.02)
        if self._drag_before is None:
            vb.enableAutoRange(y=True)
        self.marker.setBounds((0, s.T - 1))

    def _draw(self, item, schedule: NoiseSchedule | None, curve: str | None, log_y: bool, label) -> None:
        """Plot ``curve`` of ``schedule`` with ``item`` and name it in the legend; no schedule hides the item."""
        if schedule is None:
            item.setData([], [])
            item.hide()
            return
        item.setData(np.arange(schedule.T), finite_or_nan(curve_values(schedule, curve), log_y))
        item.show()
        self.plot.getPlotItem().legend.addItem(item, label)

    # ----- slots -----------------------------------------------------------------------------------------
    def _on_preset_combo(self, index: int) -> None:
        name = self.presetCombo.itemData(index)
        if name == "custom":
            self._sync_controls()
            return
        self.apply_preset(name)

    def _on_T(self, T: int) -> None:
        if self._refused():
            return
        if self._schedule.name in PRESETS:
            self.apply_preset(T=T)
            return
        try:  # an edited schedule: its control points stretched to the new T
            knots, schedule = stretched_to(self._knots, self._schedule, T)
        except EditError as e:
            self.message.emit(f"Refused: {e}")
            self._sync_controls()
            return
        self._commit(EditState(schedule, knots), f"T = {T}")

    def _on_curve(self, _index: int) -> None:
        curve = self.curveCombo.currentData()
        if curve == self._curve:
            return
        self._curve = curve
        self.curveCombo.setToolTip(CURVE_TIPS[curve])
        self._knots = knots_in(space_of(curve), self._schedule, self._knots)
        with QSignalBlocker(self.logYCheck):
            self.logYCheck.setChecked(curve == "beta")
        self._sync_controls()
        self._redraw()

    def _on_marker(self) -> None:
        if self._updating_marker:
            return
        t = int(round(self.marker.value()))
        t = min(max(t, 0), self.schedule.T - 1)
        if t != self._t:
            self._t = t
            self.timestepDragged.emit(t)

    def _on_scene_click(self, ev) -> None:
        if not ev.double() or ev.button() != Qt.MouseButton.LeftButton:
            return
        vb = self.plot.getViewBox()
        if not vb.sceneBoundingRect().contains(ev.scenePos()):
            return
        p = vb.mapSceneToView(ev.scenePos())
        if self.add_point(int(round(p.x()))):
            self.message.emit(f"Added a point at t = {int(round(p.x()))}: drag it to reshape the schedule")
        ev.accept()

    def _load_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load schedule", "", "Schedule JSON (*.json);;All files (*)")
        if path:
            self.load_schedule(path)

    def _save_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save schedule", "schedule.json", "Schedule JSON (*.json)")
        if path:
            self.save_schedule(path)


def _with_path(path, exc: BaseException) -> str:
    """``one_line(exc)``, led by ``path`` unless the message names it already."""
    msg = one_line(exc)
    return msg if str(path) in msg else f"{path}: {msg}"
