"""The 2D tab's widgets and layout (:class:`ddpm_gui.lab2d_panel.Lab2DPanel` holds the behaviour): four rows of
controls over the canvas with the two reverse-process plots beside it, and the loss and quality plots below."""
from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QCheckBox, QGridLayout, QLabel, QLineEdit, QSplitter, QVBoxLayout, QWidget

from core.lab2d import data as pts
from core.lab2d.mlp import LearnConfig
from core.lab2d.run import DEFAULT_PARTICLES, MAX_PARTICLES
from ddpm_gui.lab2d_views import CloudPlot
from ddpm_gui.widgets import button, combo_box, hbox, scrolling_page, spin_box

MODES = (("DDPM vs DDIM (same start)", ("ddpm", "ddim")), ("DDPM", ("ddpm",)), ("DDIM", ("ddim",)),
         ("DPM-Solver++", ("dpmpp2m",)))


def build(p) -> None:
    """Create ``p``'s widgets (objectNames ``lab2d…``) and connect them to its slots."""
    items = [(pts.PRESET_NAMES[k], k) for k in pts.PRESETS] + [
        ("Paint with the mouse", "paint"), ("From the photo's dark pixels", "photo"), ("Open a file…", "file")]
    p.dataCombo = combo_box("lab2dDataCombo", "The point set (≤ 10,000 points)", items)
    p.dataCombo.activated.connect(lambda _i: p.set_data(p.dataCombo.currentData()))
    p.pointsSpin = spin_box("lab2dPointsSpin", "Points drawn from a preset or the photo", 1, pts.MAX_POINTS,
                               pts.DEFAULT_POINTS, 100)
    p.seedSpin = spin_box("lab2dSeedSpin", "Seed of the points, the training and the sampling noise "
                             "(ddpm lab2d --seed)", 0, 2**31 - 1, 0)
    for w in (p.pointsSpin, p.seedSpin):
        w.editingFinished.connect(p._reload)
    p.brushSpin = spin_box("lab2dBrushSpin", "Brush radius (data units)", 0.02, 1.0, 0.15, 0.05, 2)
    p.clearButton = button("Clear", "lab2dClearButton", "Remove every point", p.clear_points)
    p.undoButton = button("Undo", "lab2dUndoButton", "Undo the last stroke, clear or load", p.undo)
    p.saveButton = button("Save…", "lab2dSaveButton", "Save the points as .csv or .npz", p._save_dialog)
    p.fieldCheck = QCheckBox("Field")
    p.fieldCheck.setObjectName("lab2dFieldCheck")
    p.fieldCheck.setToolTip("Arrows of ε̂(x, t): exact (orange) and learned (cyan)")
    p.fieldCheck.setChecked(True)
    p.scoreCheck = QCheckBox("score")
    p.scoreCheck.setObjectName("lab2dScoreCheck")
    p.scoreCheck.setToolTip("Arrows of the score ∇log q(x_t) = −ε̂/√(1−ᾱ_t) instead of ε̂")
    p.heatCombo = combo_box("lab2dHeatCombo", "The heatmap", [
        ("density q(x_t)", "density"), ("‖ε̂ exact − ε̂ learned‖", "diff"), ("none", "none")])
    for w in (p.fieldCheck, p.scoreCheck):
        w.toggled.connect(p._request)
    p.heatCombo.currentIndexChanged.connect(p._request)
    p.learnButton = button("Learn", "lab2dLearnButton", "Train the MLP ε-network on a worker "
                              "(again: Stop, Resume)", p.toggle_learn)
    p.learnSpin = spin_box("lab2dLearnStepsSpin", "Training steps", 100, 1_000_000, LearnConfig().steps, 500)
    p.modeCombo = combo_box("lab2dSamplerCombo", "Sampler", [(t, d) for t, d in MODES])
    p.stepsSpin = spin_box("lab2dStepsSpin", "Sampling steps", 1, 1000, 50, 10)
    p.particlesSpin = spin_box("lab2dParticlesSpin", "Particles", 1, MAX_PARTICLES, DEFAULT_PARTICLES, 500)
    p.denoiserCombo = combo_box("lab2dDenoiserCombo", "Exact E[x_0|x_t] or the learned network",
                                   [("exact", "exact"), ("learned", "learned")])
    p.trailsCheck = QCheckBox("trails")
    p.trailsCheck.setObjectName("lab2dTrailsCheck")
    p.trailsCheck.setChecked(True)
    p.generateButton = button("Generate", "lab2dGenerateButton", "Sample the particles back", p.generate)
    p.measureButton = button("Measure", "lab2dMeasureButton", "Energy distance vs steps, every sampler, "
                                "exact (and learned)", p.measure)
    p.stepsListEdit = QLineEdit("5,10,20,50,100")
    p.stepsListEdit.setObjectName("lab2dStepsListEdit")
    p.statusLabel = QLabel("")
    p.statusLabel.setObjectName("lab2dStatus")
    p.statusLabel.setWordWrap(True)

    p.canvas = CloudPlot("lab2dCanvas")
    p.canvas.box.painter = None
    p.left = CloudPlot("lab2dReverseA", dark=False)
    p.right = CloudPlot("lab2dReverseB", dark=False)
    for plot in (p.left, p.right):
        plot.setMinimumSize(150, 150)
    p.lossPlot = pg.PlotWidget(title="loss")
    p.lossPlot.setObjectName("lab2dLossPlot")
    p.lossPlot.setLogMode(False, True)
    p.lossCurve = p.lossPlot.plot(pen=pg.mkPen(31, 119, 180))
    p.qualityPlot = pg.PlotWidget(title="energy distance vs steps")
    p.qualityPlot.setObjectName("lab2dQualityPlot")
    p.qualityPlot.setLogMode(True, True)
    p.qualityPlot.addLegend(offset=(-5, 5), labelTextSize="7pt")
    p._quality_curves: dict = {}

    form = QGridLayout()
    form.addLayout(hbox("Data", (p.dataCombo, 1), "points", p.pointsSpin, "seed", p.seedSpin), 0, 0)
    form.addLayout(hbox("Brush", p.brushSpin, p.clearButton, p.undoButton, p.saveButton, None,
                        p.fieldCheck, p.scoreCheck, p.heatCombo), 1, 0)
    form.addLayout(hbox(p.learnButton, p.learnSpin, "steps", None, (p.stepsListEdit, 1),
                        p.measureButton), 2, 0)
    form.addLayout(hbox((p.modeCombo, 1), p.stepsSpin, "steps", p.particlesSpin, p.denoiserCombo,
                        p.trailsCheck, p.generateButton), 3, 0)
    side = QWidget()
    sl = QVBoxLayout(side)
    sl.setContentsMargins(0, 0, 0, 0)
    sl.addWidget(p.left)
    sl.addWidget(p.right)
    top = QSplitter(Qt.Orientation.Horizontal)
    top.addWidget(p.canvas)
    top.addWidget(side)
    top.setSizes([400, 200])
    bottom = QSplitter(Qt.Orientation.Horizontal)
    bottom.addWidget(p.lossPlot)
    bottom.addWidget(p.qualityPlot)
    split = QSplitter(Qt.Orientation.Vertical)
    split.addWidget(top)
    split.addWidget(bottom)
    split.setSizes([520, 170])
    lay = scrolling_page(p)
    lay.addLayout(form)
    lay.addWidget(split, 1)
    lay.addWidget(p.statusLabel)

