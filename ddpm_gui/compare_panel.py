"""The Compare tab: one model over a grid of settings (up to three axes) from the same noise, scored, filling in as
cells finish; click a cell to open its recorded steps in Generate's replay or to copy its settings to Generate.

A view over :mod:`core.compare` (the plan, the batched lock-step run, the exports) and :mod:`core.compare.view`
(the job, the plot's series, the mapping onto Generate's widgets). ``ComparePanel.install(window)`` adds the
"Compare" tab to a :class:`~ddpm_gui.main_window.MainWindow`.
"""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QSignalBlocker, Qt, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QFileDialog, QGridLayout, QLabel, QLineEdit, QMenu,
                               QProgressBar, QSplitter, QTableWidget, QToolButton,
                               QVBoxLayout, QWidget)

from core.compare import AXES, PRESETS, GridRun, plan_grid
from core.compare.engine import CellResult, GridProgress
from core.compare.export import score_line, write_csv, write_json, write_npz, write_png
from core.compare.scores import SCORES
from core.compare.view import TIPS, CompareJob, ModelLoader, compare_cells, generate_settings, numeric_x, plot_series
from core.device import pick_device
from core.images import batch_grid
from core.messages import one_line
from core.models.load import load_model
from core.samplers import SAMPLER_NAMES, SAMPLERS
from ddpm_gui.image_views import qpixmap_from_u8
from ddpm_gui.widgets import (JobPanel, ModelMenu, TextLine, button, combo_box, device_combo, hbox, named,
                              scrolling_page, spin_box)

NONE = ""
CELL_SCALE = 2
EXPORTS = (("png", "Grid with labels (PNG)…", "PNG (*.png)", write_png), ("csv", "Scores (CSV)…", "CSV (*.csv)",
           write_csv), ("json", "Scores (JSON)…", "JSON (*.json)", write_json),
           ("npz", "Images (npz)…", "NumPy (*.npz)", write_npz))
DEFAULT_AXES = (("guidance", "1,3,5,7"), ("seed", "0..3"), (NONE, ""))
LINE_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


class ComparePanel(JobPanel):
    """The Compare tab. ``run`` is the grid as far as it got (cells arrive as they finish; Cancel keeps them)."""

    TITLE = "Compare"
    runStarted = Signal()
    cellFinished = Signal(int)      # a cell's index (done or marked invalid)
    runFinished = Signal()
    runCancelled = Signal(int)      # cells finished before the stop
    runEnded = Signal()

    @classmethod
    def install(cls, window) -> "ComparePanel":
        panel = cls(window)
        window.add_panel("Compare", panel)
        return panel

    def __init__(self, window, parent=None):
        super().__init__(window, parent)
        self.setObjectName("comparePanel")
        self.runner = window.create_runner("compare")
        self.run: GridRun | None = None
        self.selected: int | None = None
        self._running = False
        self._models: dict = {}        # loaded models, kept between runs
        self._build_ui()
        self._set_running(False)
        self._set_status("Choose a model and up to three axes, then Run.")

    # ----- public API ------------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._running

    def set_axis(self, k: int, name: str, values: str | None = None) -> None:
        """Axis row ``k`` (0–2): ``name`` ("" = none) and its values (default: the preset)."""
        combo, edit, _ = self.axisRows[k]
        combo.setCurrentIndex(combo.findData(name))
        edit.setText(PRESETS.get(name, "") if values is None else values)

    def plan(self):
        """The plan the widgets describe (a one-line ValueError when they do not)."""
        axes = [f"{c.currentData()}={e.text()}" for c, e, _ in self.axisRows if c.currentData()]
        base = {"model": self.modelCombo.spec(), "sampler": self.samplerCombo.currentData(),
                "steps": self.stepsSpin.value() or None, "seed": self.seedSpin.value(), "n": self.batchSpin.value(),
                "guidance": self.guidanceSpin.value()}
        text = self.classEdit.text().strip()
        if text:
            from core.compare.axes import parse_value
            base["class"] = parse_value("class", text)[0]
        return plan_grid(axes, base)

    def start(self) -> bool:
        """Run the grid with the current settings; False (with one line) when they are not usable."""
        if self._running:
            return False
        try:
            plan = self.plan()
        except ValueError as e:
            self._fail(one_line(e))
            return False
        w = self.window_
        device = str(pick_device(self.deviceCombo.currentData() or "auto"))
        job = CompareJob(plan, ModelLoader(load_model, w.photo_path, w.x0, self._models), device,
                         {"window": w.schedule})
        self.run, self.selected = GridRun(plan), None
        self._fill_table()
        self._set_running(True)
        self.progressBar.setRange(0, 0)
        self._set_status(f"Running {len(plan.cells)} cells…")
        self.runner.start(compare_cells, job, GridRun(plan), on_yield=self._on_event, on_finished=self._on_finished,
                          on_cancelled=self._on_cancelled, on_error=lambda e: self._fail(one_line(e)),
                          on_done=self._on_done)
        self.runStarted.emit()
        return True

    def cancel(self) -> bool:
        """Stop the run at the next step; finished cells stay."""
        if not self._running:
            return False
        self.runner.cancel()
        self.cancelButton.setEnabled(False)
        self._set_status("Cancelling…")
        return True

    def select_cell(self, index: int) -> None:
        plan = self.run.plan
        cell = plan.cells[index]
        self.pageCombo.setCurrentIndex(cell.page)
        self.table.setCurrentCell(cell.row, cell.col)
        self._on_cell_clicked(cell.row, cell.col)

    def open_in_generate(self, index: int | None = None) -> bool:
        """Show cell ``index``'s recorded steps in Generate's timeline (replay, scrub, export)."""
        res = self._result(index)
        gen = getattr(self.window_, "generate_panel", None)
        if res is None or res.recording is None or not len(res.recording) or gen is None or gen.running:
            self._set_status("Choose a finished cell (and no Generate run in progress).", error=True)
            return False
        rec = res.recording
        gen.recording = rec
        slider = gen.timelineSlider
        with QSignalBlocker(slider):
            slider.setRange(0, len(rec) - 1)
            slider.setValue(0)
        for widget in (gen.timelineSlider, gen.replayButton, gen.exportButton):
            widget.setEnabled(True)
        gen.show_frame(len(rec) - 1)
        self.window_.show_panel(gen)
        self.window_.statusBar().showMessage(f"Generate shows cell {res.cell.index + 1}'s recorded steps", 6000)
        return True

    def copy_to_generate(self, index: int | None = None) -> bool:
        """Set Generate's model, sampler, steps, η, seed, batch, class and guidance to cell ``index``'s."""
        res = self._result(index)
        gen = getattr(self.window_, "generate_panel", None)
        if res is None or gen is None:
            return False
        s, missing = generate_settings(res, self.window_.schedule)
        gen.select_model(s["model"])
        gen.samplerCombo.setCurrentIndex(gen.samplerCombo.findData(s["sampler"]))
        gen.stepsSpin.setValue(s["steps"])
        gen.etaSpin.setValue(s["eta"])
        gen.seedSpin.setValue(s["seed"])
        gen.batchSpin.setValue(s["n"])
        gen.guidanceSpin.setValue(s["guidance"])

        def set_class(*_):
            i = gen.classCombo.findData(s["class"])
            if i >= 0:
                gen.classCombo.setCurrentIndex(i)
            return i >= 0
        if not set_class():
            gen.modelReady.connect(set_class, Qt.ConnectionType.SingleShotConnection)
        note = f"; Generate has no control for {', '.join(missing)}" if missing else ""
        self.window_.show_panel(gen)
        self.window_.statusBar().showMessage(f"Copied cell {res.cell.index + 1}'s settings to Generate{note}", 8000)
        self.copy_note = note
        return True

    def export(self, kind: str, path) -> bool:
        write = {k: f for k, _, _, f in EXPORTS}[kind]
        try:
            if self.run is None or not any(self.run.results):
                raise ValueError("nothing to export yet: run a grid first")
            self.window_.check_output_target(path)
            write(path, self.run)
        except Exception as e:  # noqa: BLE001 - always one line
            self._fail(f"{path}: {one_line(e)}", title="Export")
            return False
        self.window_.statusBar().showMessage(f"Wrote {path}", 8000)
        return True

    # ----- the run ---------------------------------------------------------------------------------------------
    def _on_event(self, ev) -> None:
        if isinstance(ev, GridProgress):
            if ev.ticks:
                self.progressBar.setRange(0, ev.ticks)
                self.progressBar.setValue(ev.tick)
            self._set_status(f"step {ev.tick}/{ev.ticks or '?'} · {ev.done}/{ev.cells} cells · {ev.calls} model "
                             f"calls · {ev.seconds:.1f} s")
        elif isinstance(ev, CellResult) and self.run is not None:
            self.run.results[ev.cell.index] = ev
            self._show_cell(ev.cell.index)
            self._update_plot()
            self.cellFinished.emit(ev.cell.index)

    def _on_finished(self, _run) -> None:
        done = sum(r is not None and r.status == "done" for r in self.run.results)
        bad = sum(r is not None and r.status != "done" for r in self.run.results)
        self._set_status(f"Done: {done} cells" + (f", {bad} could not run (hover them)" if bad else ""))
        self.runFinished.emit()

    def _on_cancelled(self, _n) -> None:
        kept = sum(r is not None for r in self.run.results)
        self._set_status(f"Cancelled: {kept} of {len(self.run.results)} cells finished and kept")
        self.runCancelled.emit(kept)

    def _on_done(self) -> None:
        self._set_running(False)
        self.progressBar.setRange(0, 1)
        self.progressBar.setValue(1 if self.run and self.run.results and all(self.run.results) else 0)
        self.runEnded.emit()

    def _set_running(self, on: bool) -> None:
        self._running = on
        self.runButton.setEnabled(not on)
        self.cancelButton.setEnabled(on)
        have = self.run is not None and any(self.run.results)
        self.exportButton.setEnabled(have and not on)

    # ----- the grid and the plot -------------------------------------------------------------------------------
    def _result(self, index):
        index = self.selected if index is None else index
        if self.run is None or index is None:
            return None
        return self.run.results[index]

    def _fill_table(self) -> None:
        plan = self.run.plan
        P, R, C = plan.shape
        with QSignalBlocker(self.pageCombo):
            self.pageCombo.clear()
            for p in range(P):
                self.pageCombo.addItem(f"{plan.pages.name}: {plan.pages.labels[p]}" if plan.pages else "", p)
        self.pageCombo.setVisible(P > 1)
        self.table.clear()
        self.table.setRowCount(R)
        self.table.setColumnCount(C)
        self.table.setHorizontalHeaderLabels(list(plan.cols.labels) if plan.cols else [""])
        self.table.setVerticalHeaderLabels(list(plan.rows.labels) if plan.rows else [""])
        self.titleLabel.setText(plan.title())
        for r in range(R):
            for c in range(C):
                self._show_cell(plan.cell(self._page(), r, c).index)
        self._update_plot()

    def _page(self) -> int:
        return max(0, self.pageCombo.currentIndex())

    def _show_cell(self, index: int) -> None:
        cell = self.run.plan.cells[index]
        if cell.page != self._page():
            return
        res = self.run.results[index]
        box = QWidget()
        lay = QVBoxLayout(box)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.setSpacing(1)
        pic = named(QLabel(), "compareCellPicture")
        pic.setAlignment(Qt.AlignmentFlag.AlignCenter)
        if res is not None and res.images is not None:
            grid = batch_grid(res.images)
            pic.setPixmap(qpixmap_from_u8(batch_grid(res.images, CELL_SCALE if grid.shape[0] < 48 else 1)))
        else:
            pic.setText("…" if res is None else "✗ " + (res.reason or ""))
            pic.setWordWrap(True)
            pic.setMaximumWidth(180)
            pic.setStyleSheet("color: #b22;" if res is not None else "color: #888;")
        line = score_line(res) if res is None or res.status == "done" else "could not run"
        head, _, last = line.rpartition(" · ")   # the scores over the seconds: two short lines
        text = named(QLabel(f"{head}\n{last}" if head else line), "compareCellScore")
        text.setAlignment(Qt.AlignmentFlag.AlignCenter)
        text.setStyleSheet("color: #333; font-size: 10px;")
        lay.addWidget(pic, 1)
        lay.addWidget(text)
        tip = score_line(res) if res is None or res.status == "done" else res.reason
        if res is not None and res.notes:
            tip += "\n" + "\n".join(res.notes)
        box.setToolTip(tip)
        self.table.setCellWidget(cell.row, cell.col, box)
        self.table.resizeRowsToContents()
        self.table.resizeColumnsToContents()

    def _on_page(self, _i: int) -> None:
        if self.run is not None:
            self._fill_table()

    def _on_cell_clicked(self, row: int, col: int) -> None:
        if self.run is None:
            return
        cell = self.run.plan.cell(self._page(), row, col)
        self.selected = cell.index
        res = self.run.results[cell.index]
        text = ", ".join(f"{k} {v}" for k, v in cell.axes.items())
        self.cellLabel.setText(f"cell {cell.index + 1}: {text} — " + (score_line(res) if res is None or
                                                                         res.status == "done" else res.reason))
        for b in (self.openButton, self.copyButton):
            b.setEnabled(res is not None and res.status == "done")

    def _update_plot(self) -> None:
        self.plot.clear()
        if self.run is None:
            return
        score = self.scoreCombo.currentData()
        ticks, lines = plot_series(self.run, score, self._page())
        xs = numeric_x(self.run)
        cols = self.run.plan.cols
        if cols is not None:   # the values alone under the axis; the axis's name as its label
            ticks = [t.removeprefix(f"{cols.name} ").removeprefix("w ").removeprefix("η ") for t in ticks]
        self.plot.getAxis("bottom").setTicks([list(zip(xs.tolist(), ticks))])
        self.plot.setLabel("bottom", cols.name if cols is not None else "")
        for k, (name, ys) in enumerate(lines):
            if not np.isfinite(ys).any():
                continue
            colour = LINE_COLOURS[k % len(LINE_COLOURS)]
            self.plot.plot(xs, ys, pen=pg.mkPen(colour, width=2), symbol="o", symbolBrush=colour, name=name,
                           connect="finite")
        self.plot.setLabel("left", SCORES[score][0])

    # ----- UI ----------------------------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        self.modelCombo = ModelMenu("compareModelCombo", TIPS["compareModelCombo"])
        self.samplerCombo = combo_box("compareSamplerCombo", "The sampler of cells without a sampler axis",
                                      [(SAMPLER_NAMES[s], s, None) for s in SAMPLERS])
        self.samplerCombo.setCurrentIndex(SAMPLERS.index("ddim"))
        self.stepsSpin = spin_box("compareStepsSpin", TIPS["compareStepsSpin"], 0, 1000, value=0)
        self.stepsSpin.setSpecialValueText("default")
        self.seedSpin = spin_box("compareSeedSpin", TIPS["compareSeedSpin"], 0, 2**31 - 1)
        self.batchSpin = spin_box("compareBatchSpin", TIPS["compareBatchSpin"], 1, 64, value=1)
        self.guidanceSpin = spin_box("compareGuidanceSpin", TIPS["compareGuidanceSpin"], 0.0, 20.0, value=1.0,
                                     step=0.5)
        self.classEdit = named(QLineEdit(), "compareClassEdit", TIPS["compareClassEdit"])
        self.classEdit.setPlaceholderText("auto")
        self.deviceCombo = device_combo("compareDeviceCombo")
        form = QGridLayout()
        for c, (text, w) in enumerate((("Sampler", self.samplerCombo), ("Steps", self.stepsSpin),
                                       ("Seed", self.seedSpin), ("Batch per cell", self.batchSpin))):
            form.addWidget(QLabel(text), 1, 2 * c)
            form.addWidget(w, 1, 2 * c + 1)
        for c, (text, w) in enumerate((("Class", self.classEdit), ("Guidance w", self.guidanceSpin),
                                       ("Device", self.deviceCombo))):
            form.addWidget(QLabel(text), 2, 2 * c)
            form.addWidget(w, 2, 2 * c + 1)
        form.addWidget(QLabel("Model"), 0, 0)
        form.addWidget(self.modelCombo, 0, 1, 1, 7)
        self.axisRows = []
        for k, (name, values) in enumerate(DEFAULT_AXES):
            combo = QComboBox()
            combo.setObjectName(f"compareAxis{k}Combo")
            combo.addItem("—", NONE)
            for a, (_, what) in AXES.items():
                combo.addItem(a, a)
                combo.setItemData(combo.count() - 1, what, Qt.ItemDataRole.ToolTipRole)
            edit = named(QLineEdit(values), f"compareAxis{k}Edit", "Values, comma-separated (ints also as 0..3)")
            preset = button("Preset", f"compareAxis{k}Preset", "Fill in this axis's preset values",
                            lambda _c=False, i=k: self.set_axis(i, self.axisRows[i][0].currentData()))
            combo.setCurrentIndex(combo.findData(name))
            self.axisRows.append((combo, edit, preset))
            form.addWidget(QLabel(("Rows", "Columns", "Pages")[k]), 3 + k, 0)
            form.addWidget(combo, 3 + k, 1)
            form.addWidget(edit, 3 + k, 2, 1, 5)
            form.addWidget(preset, 3 + k, 7)
        self.runButton = button("Run", "compareRunButton", "Sample every cell (cells that share the model run "
                                "batched)", self.start)
        self.cancelButton = button("Cancel", "compareCancelButton", "Stop at the next step; finished cells stay",
                                   self.cancel)
        self.exportButton = named(QToolButton(), "compareExportButton", "Save the grid (PNG with labels), the scores "
                                  "(CSV, JSON) or the images (npz)")
        self.exportButton.setText("Export ▾")
        self.exportButton.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        menu = QMenu(self.exportButton)
        for kind, text, filt, _ in EXPORTS:
            a = QAction(text, menu)
            a.triggered.connect(lambda _c=False, k=kind, f=filt: self._export_dialog(k, f))
            menu.addAction(a)
        self.exportButton.setMenu(menu)
        self.progressBar = named(QProgressBar(), "compareProgress", "Steps of the longest cell done")
        self.statusLabel = named(TextLine(lines=2, tooltip_follows=True), "compareStatus")
        self.titleLabel = named(TextLine(color="#555"), "compareTitle")
        self.pageCombo = named(QComboBox(), "comparePageCombo", "The third axis: which page of the grid")
        self.pageCombo.currentIndexChanged.connect(self._on_page)
        self.pageCombo.setVisible(False)
        self.table = named(QTableWidget(), "compareGrid", TIPS["compareGrid"])
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.cellClicked.connect(self._on_cell_clicked)
        self.table.cellDoubleClicked.connect(lambda r, c: (self._on_cell_clicked(r, c), self.open_in_generate()))
        self.cellLabel = named(TextLine(), "compareCellLabel")
        self.openButton = button("Open in Generate's replay", "compareOpenButton", "Show this cell's recorded steps "
                                 "in Generate's timeline", lambda: self.open_in_generate())
        self.copyButton = button("Copy settings to Generate", "compareCopyButton", "Set Generate's model, sampler, "
                                 "steps, η, seed, batch, class and guidance to this cell's", lambda: self.copy_to_generate())
        for b in (self.openButton, self.copyButton):
            b.setEnabled(False)
        self.scoreCombo = combo_box("compareScoreCombo", "The score the plot shows",
                                    [(text, key, None) for key, (text, _) in SCORES.items()])
        self.scoreCombo.currentIndexChanged.connect(lambda _i: self._update_plot())
        self.plot = named(pg.PlotWidget(), "comparePlot", TIPS["comparePlot"])
        self.plot.setBackground("w")
        self.plot.addLegend(offset=(-10, 10))
        side = QWidget()
        box = QVBoxLayout(side)
        box.setContentsMargins(0, 0, 0, 0)
        box.addWidget(self.scoreCombo)
        box.addWidget(self.plot, 1)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.table)
        split.addWidget(side)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        split.setSizes([600, 300])
        self.splitter = split
        layout = scrolling_page(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(form)
        layout.addLayout(hbox((self.runButton, 2), (self.cancelButton, 1), (self.exportButton, 0)))
        layout.addWidget(self.progressBar)
        layout.addWidget(self.statusLabel)
        layout.addLayout(hbox((self.titleLabel, 1), (self.pageCombo, 0)))
        layout.addWidget(split, 1)
        layout.addLayout(hbox((self.cellLabel, 1), (self.openButton, 0), (self.copyButton, 0)))

    def _export_dialog(self, kind: str, filt: str) -> None:
        chosen, _ = QFileDialog.getSaveFileName(self, "Export the grid", f"compare.{kind}", filt)
        if chosen:
            self.export(kind, chosen)

