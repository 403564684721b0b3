"""The main window's widgets, menus and dialogs, built once (in the manner of Qt Designer's ``setupUi``): every
widget becomes an attribute of the window under its objectName's stem (``window.timestepSlider``, …) and is wired
to the window's slots. What the widgets do is in :mod:`ddpm_gui.main_window`."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QAction, QKeySequence, QPainter
from PySide6.QtWidgets import (QCheckBox, QComboBox, QFileDialog, QHBoxLayout, QLabel, QLineEdit, QMessageBox,
                               QProgressBar, QPushButton, QSizePolicy, QSlider, QSplitter, QTabWidget, QVBoxLayout,
                               QWidget)

from core.images import SAMPLES
from core.messages import one_line
from ddpm_gui.image_views import ImagePane, PixelHistogram
from ddpm_gui.photo_intake import SAMPLE_LABELS
from ddpm_gui.strip_view import StripView
from ddpm_gui.widgets import combo_box, named, row, spin_box

IMAGE_FILTER = "Images (*.png *.jpg *.jpeg *.bmp *.gif *.webp *.tif *.tiff *.ppm *.pgm);;All files (*)"
CLOSED, CHAIN = "closed", "chain"   # the view's modes: eq. 5 with one ε, eq. 2 step by step
CHAIN_NOTE = ("Markov chain: a fresh ε_t at every step. It agrees with the closed form in distribution, "
              "not pixel for pixel.")


def xt_title(mode: str) -> str:
    """The x_t pane's title: the equation the mode shows."""
    if mode == CHAIN:
        return ("<b>x<sub>t</sub></b> — Markov chain, eq. 2: x<sub>t</sub> = √(1−β<sub>t</sub>)·x<sub>t−1</sub> + "
                "√β<sub>t</sub>·ε<sub>t</sub>")
    return "<b>x<sub>t</sub></b> = √ᾱ<sub>t</sub>·x<sub>0</sub> + √(1−ᾱ<sub>t</sub>)·ε &nbsp;(eq. 5)"


def build_view(w) -> None:
    """The image area (panes, photo and noise controls, mode, slider, readout, histogram, strip), the panel tabs
    beside it and the status bar's busy indicator."""
    from ddpm_gui.latent_view import build_latent_widgets
    build_latent_widgets(w)   # the latent-space toggle, the latent channels and the generation takeover panes
    w.xtPane = ImagePane(xt_title(CLOSED), "xtPane", "x_t at the slider's t. Wheel: zoom, drag: pan, Ctrl+0: fit.")
    w.x0Pane = ImagePane("<b>x<sub>0</sub></b> — the photo", "x0Pane", "The clean photo x_0")
    w.noisePane = ImagePane("<b>ε</b> ~ N(0, I) — fixed for this photo and seed", "noisePane",
                            "The noise ε = draw_noise(shape, seed), shown with x_t's mapping "
                            "u8 = clip(127.5·x + 128): x_T ≈ ε")
    w.xtPane.viewbox.sigRangeChanged.connect(w._on_view_range)
    for pane in (w.x0Pane, w.noisePane):
        pane.link_to(w.xtPane)
        pane.hide()

    w.showX0Check = named(QCheckBox("show x₀"), "showX0Check", "Show the clean photo x_0 beside x_t")
    w.showX0Check.toggled.connect(w.x0Pane.setVisible)
    w.showNoiseCheck = named(QCheckBox("show ε"), "showNoiseCheck",
                             "Show the noise ε beside x_t (x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε)")
    w.showNoiseCheck.toggled.connect(w.noisePane.setVisible)
    for check in (w.showX0Check, w.showNoiseCheck):
        check.toggled.connect(lambda _v: QTimer.singleShot(0, w.fit_view))
    w.fitButton = named(QPushButton("Fit"), "fitViewButton", "Fit the photo to the view (Ctrl+0)")
    w.fitButton.clicked.connect(w.fit_view)

    w.modeCombo = combo_box("modeCombo", "Closed form: x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε with one ε for all t (eq. 5). "
                            "Markov chain: x_t = √(1−β_t)·x_{t−1} + √β_t·ε_t, a new ε_t every step "
                            "(eq. 2). They agree in distribution, not pixel for pixel.",
                            [("Closed form q(x_t | x_0), eq. 5 — one ε for all t", CLOSED),
                             ("Markov chain, eq. 2 — a new ε every step", CHAIN)])
    w.modeCombo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    w.modeCombo.setMinimumContentsLength(16)
    w.modeCombo.currentIndexChanged.connect(w._on_mode)

    w.seedSpin = spin_box("noiseSeedSpin",  # "seedSpin" is the Generate panel's
                          "Seed of ε (a seeded CPU torch.Generator: the same seed gives the same ε as "
                          "`ddpm noise --seed` on every machine)", 0, 2**31 - 1)
    w.seedSpin.setKeyboardTracking(False)
    w.seedSpin.valueChanged.connect(lambda _v: w._x0 is not None and w._make_noise())
    w.newNoiseButton = named(QPushButton("New noise"), "newNoiseButton", "Draw a new ε ~ N(0, I) (a random seed)")
    w.newNoiseButton.clicked.connect(w.new_noise)

    w.photoLabel = named(ElidedLabel(), "photoLabel")
    w.photoLabel.setStyleSheet("color: #555;")
    w.photoLabel.setMinimumWidth(40)
    w.photoLabel.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)

    w.modeNote = named(QLabel(CHAIN_NOTE), "modeNote")
    w.modeNote.setWordWrap(True)
    w.modeNote.setStyleSheet("color: #8a4b00;")
    w.modeNote.hide()

    w.histogram = PixelHistogram()
    w.histogram.setFixedHeight(150)

    w.playButton = named(QPushButton("▶ Play"), "playButton",
                         "Animate t from here to T−1 (about 5 s per pass); click again to pause")
    w.playButton.setCheckable(True)
    w.playButton.toggled.connect(w._on_play)
    w.timestepSlider = named(QSlider(Qt.Orientation.Horizontal), "timestepSlider",
                             "Timestep t (0…T−1): x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε. "
                             "Arrows step by 1, Page Up/Down by T/20, Home/End jump to the ends.")
    w.timestepSlider.setRange(0, 999)
    w.timestepSlider.valueChanged.connect(w._on_slider)
    w.timestepSpin = spin_box("timestepSpin", "Timestep t (0…T−1)", 0, 999)
    w.timestepSpin.valueChanged.connect(w.timestepSlider.setValue)
    w.tMaxLabel = QLabel("/ 999")

    w.readout = named(QLabel(), "timestepReadout",
                      "β_t; ᾱ_t = Π(1−β_s); √ᾱ_t and √(1−ᾱ_t), the scales of x_0 and ε in x_t; "
                      "SNR = 10·log10(ᾱ_t/(1−ᾱ_t)) dB; PSNR(x_t, x_0) = 10·log10(2²/MSE) dB on the "
                      "[−1, 1] scale, before display clipping")
    w.readout.setTextFormat(Qt.TextFormat.RichText)
    w.readout.setWordWrap(True)
    w.readout.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

    w.stripEdit = named(QLineEdit(), "stripTimesteps",
                        "Timesteps of the strip, comma-separated (default: the notes' 19, 39, 59, 79, 99 "
                        "scaled to T). The strip uses the closed form with this photo's ε, like `ddpm noise`.")
    w.stripEdit.editingFinished.connect(w._on_strip_edited)
    w.exportStripButton = named(QPushButton("Export strip…"), "exportStripButton",
                                "Save x_0 and x_t at the strip's timesteps as one PNG, at full resolution "
                                "(the same pixels as `ddpm noise IMAGE --seed S`)")
    w.exportStripButton.clicked.connect(lambda: export_strip_dialog(w))
    w.stripView = StripView()

    left = named(QWidget(), "imageArea")
    lv = QVBoxLayout(left)
    lv.setContentsMargins(6, 6, 6, 6)
    panes = QHBoxLayout()   # a layout, not a row widget: a pane's view drawn inside one samples the photo differently
    panes.setSpacing(6)
    for pane in (w.xtPane, w.x0Pane, w.noisePane, w.takeoverPane):
        panes.addWidget(pane, 1)
    panes.addWidget(w.channelsPane)
    lv.addLayout(panes, 1)
    for part in (row(w.showX0Check, w.showNoiseCheck, w.fitButton, (w.photoLabel, 1), None, "Seed", w.seedSpin,
                     w.newNoiseButton),
                 row("Mode", (w.modeCombo, 1), w.latentSpaceCheck), w.modeNote,
                 row(w.playButton, "t", (w.timestepSlider, 1), w.timestepSpin, w.tMaxLabel),
                 w.readout, w.histogram,
                 row("Strip at t =", (w.stripEdit, 1), w.exportStripButton), w.stripView):
        lv.addWidget(part)

    w.panelTabs = named(QTabWidget(), "panelTabs")
    w.panelTabs.setToolTip("")
    w.panelTabs.addTab(w.schedule_panel, "Schedule")

    w.splitter = named(QSplitter(Qt.Orientation.Horizontal), "mainSplitter")
    w.splitter.addWidget(left)
    w.splitter.addWidget(w.panelTabs)
    w.splitter.setStretchFactor(0, 3)
    w.splitter.setStretchFactor(1, 2)
    w.splitter.setSizes([840, 600])
    w.setCentralWidget(w.splitter)
    w.statusBar().setObjectName("statusBar")
    w.photoBusy = named(QProgressBar(), "photoBusy",
                        "Opening a photo (decoded and downscaled on a worker; the window stays usable)")
    w.photoBusy.setRange(0, 0)   # busy: no percentage (a decoder says nothing about its progress)
    w.photoBusy.setMaximumWidth(120)
    w.photoBusy.setMaximumHeight(14)
    w.photoBusy.setTextVisible(False)
    w.statusBar().addPermanentWidget(w.photoBusy)
    w.photoBusy.hide()


def build_menus(w) -> None:
    """File, Schedule, View and Help; every action is also the window's (its shortcut works anywhere in it)."""
    mb = w.menuBar()
    file_menu = mb.addMenu("&File")
    _action(w, file_menu, "&Open image…", lambda: open_dialog(w), "Ctrl+O", "openImageAction")
    samples = file_menu.addMenu("Built-in &samples")
    for name in SAMPLES:
        _action(w, samples, SAMPLE_LABELS.get(name, name), lambda _c=False, n=name: w.open_sample(n),
                None, f"sample{name.capitalize()}Action")
    _action(w, file_menu, "&Paste image", w.paste_image, "Ctrl+V", "pasteImageAction")
    file_menu.addSeparator()
    _action(w, file_menu, "&Export strip…", lambda: export_strip_dialog(w), "Ctrl+E", "exportStripAction")
    _action(w, file_menu, "Save &screenshot…", lambda: screenshot_dialog(w), None, "screenshotAction")
    file_menu.addSeparator()
    _action(w, file_menu, "&Quit", w.close, "Ctrl+Q", "quitAction")

    sched = mb.addMenu("&Schedule")
    panel = w.schedule_panel
    undo, redo = panel.make_undo_actions(w)
    for a in (undo, redo):
        sched.addAction(a)
        w.addAction(a)
    sched.addSeparator()
    _action(w, sched, "The notes' example (linear, T = 100)", panel.apply_notes_example, None, "notesExampleAction")
    _action(w, sched, "Ho et al. (linear, T = 1000)",
            lambda: panel.apply_preset("linear", T=1000, beta_start=1e-4, beta_end=0.02, zero_snr=False), None,
            "hoPresetAction")
    _action(w, sched, "&Load schedule…", panel._load_dialog, None, "loadScheduleAction")
    _action(w, sched, "&Save schedule…", panel._save_dialog, None, "saveScheduleAction")
    pin = _action(w, sched, "&Pin as reference", panel.set_pinned, None, "pinScheduleAction")
    pin.setCheckable(True)
    panel.pinButton.toggled.connect(pin.setChecked)

    view = mb.addMenu("&View")
    for check in (w.showX0Check, w.showNoiseCheck):
        a = QAction(check.text(), w, checkable=True)
        a.setObjectName(check.objectName().replace("Check", "Action"))
        a.toggled.connect(check.setChecked)
        check.toggled.connect(a.setChecked)
        view.addAction(a)
    _action(w, view, "&Fit image", w.fit_view, "Ctrl+0", "fitViewAction")
    view.addSeparator()
    view.addAction(w.takeover.action)
    w.addAction(w.takeover.action)
    _action(w, view, "&Play / pause", w.playButton.toggle, "Ctrl+Space", "playAction")

    help_menu = mb.addMenu("&Help")
    _action(w, help_menu, "&About DDPM Studio", lambda: about(w), None, "aboutAction")


def _action(w, menu, text, slot, shortcut, name) -> QAction:
    a = QAction(text, w)
    a.setObjectName(name)
    if shortcut:
        a.setShortcut(QKeySequence(shortcut))
    a.triggered.connect(slot)
    menu.addAction(a)
    w.addAction(a)
    return a


# ----- dialogs --------------------------------------------------------------------------------------------------
def open_dialog(w) -> None:
    start = str(w.photo_path.parent) if w.photo_path else ""
    path, _ = QFileDialog.getOpenFileName(w, "Open image", start, IMAGE_FILTER)
    if path:
        w.open_image(path)


def export_strip_dialog(w) -> None:
    name = (Path(w._photo_label).stem or "image") + f"_strip_seed{w.seed}.png"
    path, _ = QFileDialog.getSaveFileName(w, "Export strip", name, "PNG (*.png)")
    if path:
        if not path.lower().endswith(".png"):
            path += ".png"
        w.export_strip(path)


def screenshot_dialog(w) -> None:
    path, _ = QFileDialog.getSaveFileName(w, "Save screenshot", "ddpm-studio.png", "PNG (*.png)")
    if path:
        try:
            w.save_screenshot(path)
        except Exception as e:  # noqa: BLE001 - always one line
            w.show_error(one_line(e), title="Save screenshot")


def about(w) -> None:
    box = QMessageBox(QMessageBox.Icon.Information, "About DDPM Studio",
                      "DDPM Studio: see denoising diffusion happen. Drag t to noise the photo; drag the "
                      "schedule's points to reshape β_t.", QMessageBox.StandardButton.Ok, w)
    box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    box.open()


class ElidedLabel(QLabel):
    """A one-line label that ends in … when it is too narrow (the full text is in its tooltip)."""

    def paintEvent(self, ev):  # noqa: N802 - Qt override
        p = QPainter(self)
        p.setPen(self.palette().color(self.foregroundRole()))
        text = self.fontMetrics().elidedText(self.text(), Qt.TextElideMode.ElideRight, self.width())
        p.drawText(self.rect(), int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter), text)
        p.end()
