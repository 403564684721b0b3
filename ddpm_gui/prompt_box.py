"""The Generate tab's Stable Diffusion controls, shown for a text-conditioned model: prompt and negative prompt
(multi-line, with remembered recent prompts), guidance w (a slider with a spin box, 1…20), the image size
(multiples of the VAE's factor; presets 512², 768², the native size), the preview decoder and the
unconditional-vs-conditional x̂_0 toggle. Only widgets and their state: the run is :mod:`core.jobs.generate_latent`."""
from __future__ import annotations

from PySide6.QtCore import QSettings, QSignalBlocker, Qt
from PySide6.QtWidgets import QCheckBox, QGridLayout, QLabel, QMenu, QPlainTextEdit, QSlider, QToolButton, QWidget

from core.jobs.generate_latent import (DEFAULT_PREVIEW, GUIDANCE_RANGE, LATENT_TIPS, MAX_PROMPTS, MAX_SIDE,
                                       PREVIEW_MENU, PROMPT_HISTORY_KEY, example_prompts, remembered_prompt,
                                       size_presets, snap)
from core.latent.generate import DEFAULT_GUIDANCE
from ddpm_gui.widgets import RecentList, combo_box, hbox, named, spin_box

SLIDER_STEPS = 10   # the guidance slider moves in steps of 0.1


class PromptBox(QWidget):
    """The text-to-image controls (objectNames ``promptEdit``, ``negativePromptEdit``, ``guidanceSlider`` …)."""

    def __init__(self, settings: QSettings | None = None, parent=None):
        super().__init__(parent)
        self.setObjectName("promptBox")
        self._history = RecentList(settings, PROMPT_HISTORY_KEY, max_items=MAX_PROMPTS, convert=remembered_prompt)
        self._factor = 8
        self.promptEdit = self._text_edit("promptEdit", "a watercolor fox in the snow", 3)
        self.negativePromptEdit = self._text_edit("negativePromptEdit", "(optional) blurry, low quality", 2)
        self.promptHistoryButton = named(QToolButton(), "promptHistoryButton", LATENT_TIPS["promptHistoryButton"])
        self.promptHistoryButton.setText("Recent ▾")
        self.promptHistoryButton.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self._history_menu = named(QMenu(self.promptHistoryButton), "promptHistoryMenu")
        self._history_menu.aboutToShow.connect(self._fill_history)
        self.promptHistoryButton.setMenu(self._history_menu)

        low, high = GUIDANCE_RANGE
        self.guidanceSlider = named(QSlider(Qt.Orientation.Horizontal), "guidanceSlider", LATENT_TIPS["guidanceSlider"])
        self.guidanceSlider.setRange(int(low * SLIDER_STEPS), int(high * SLIDER_STEPS))
        self.guidanceValueSpin = spin_box("guidanceValueSpin", LATENT_TIPS["guidanceSlider"], low, high,
                                          value=DEFAULT_GUIDANCE, step=0.5, decimals=1)
        self.guidanceSlider.setValue(round(DEFAULT_GUIDANCE * SLIDER_STEPS))
        self.guidanceSlider.valueChanged.connect(
            lambda v: self._quiet(self.guidanceValueSpin, v / SLIDER_STEPS))
        self.guidanceValueSpin.valueChanged.connect(
            lambda v: self._quiet(self.guidanceSlider, round(v * SLIDER_STEPS)))

        self.sizePresetCombo = combo_box("sizePresetCombo", LATENT_TIPS["sizePresetCombo"], [])
        self.sizePresetCombo.activated.connect(self._on_preset)
        self.widthSpin = spin_box("widthSpin", LATENT_TIPS["widthSpin"], 8, MAX_SIDE, value=512, step=8)
        self.heightSpin = spin_box("heightSpin", LATENT_TIPS["heightSpin"], 8, MAX_SIDE, value=512, step=8)
        for spin in (self.widthSpin, self.heightSpin):
            spin.editingFinished.connect(lambda s=spin: self._snap(s))
            spin.valueChanged.connect(lambda _v: self._sync_preset())

        self.previewDecoderCombo = combo_box("previewDecoderCombo", LATENT_TIPS["previewDecoderCombo"],
                                             [(text, kind, tip) for kind, text, tip in PREVIEW_MENU])
        self.guidancePartsCheck = named(QCheckBox("unconditional vs conditional x̂₀"), "guidancePartsCheck",
                                        LATENT_TIPS["guidancePartsCheck"])

        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setHorizontalSpacing(8)
        grid.addWidget(QLabel("Prompt"), 0, 0)
        grid.addWidget(self.promptEdit, 0, 1, 1, 4)
        grid.addWidget(self.promptHistoryButton, 0, 5, Qt.AlignmentFlag.AlignTop)
        grid.addWidget(QLabel("Negative"), 1, 0)
        grid.addWidget(self.negativePromptEdit, 1, 1, 1, 5)
        grid.addWidget(QLabel("Guidance w"), 2, 0)
        grid.addLayout(hbox((self.guidanceSlider, 1), (self.guidanceValueSpin, 0), spacing=4), 2, 1)
        grid.addWidget(QLabel("Size"), 2, 2)
        grid.addLayout(hbox((self.sizePresetCombo, 1), (self.widthSpin, 0), "×", (self.heightSpin, 0), spacing=4),
                       2, 3, 1, 3)
        grid.addWidget(QLabel("Preview"), 3, 0)
        grid.addWidget(self.previewDecoderCombo, 3, 1)
        grid.addWidget(self.guidancePartsCheck, 3, 2, 1, 4)
        grid.setColumnStretch(1, 2)
        grid.setColumnStretch(3, 2)

    # ----- state ---------------------------------------------------------------------------------------------
    def set_pipeline(self, pipe, taesd_found: bool) -> None:
        """A pipeline became the model: its native size (and presets), its VAE factor, whether TAESD is there."""
        f = pipe.vae_scale_factor
        self._factor = f
        self._examples = example_prompts(pipe)
        if self._examples and not self.promptEdit.toPlainText().strip():
            self.promptEdit.setPlainText(self._examples[0])
        for spin in (self.widthSpin, self.heightSpin):
            with QSignalBlocker(spin):
                spin.setRange(f, MAX_SIDE - MAX_SIDE % f)
                spin.setSingleStep(f)
                spin.setValue(pipe.default_size)
        with QSignalBlocker(self.sizePresetCombo):
            self.sizePresetCombo.clear()
            for text, side in size_presets(pipe):
                self.sizePresetCombo.addItem(text, side)
            self.sizePresetCombo.addItem("custom", None)
        self._sync_preset()
        item = self.previewDecoderCombo.model().item(self.previewDecoderCombo.findData("taesd"))
        item.setEnabled(taesd_found)
        item.setToolTip(PREVIEW_MENU[1][2] if taesd_found else "No TAESD in the Hugging Face cache "
                        "(madebyollin/taesd; nothing is downloaded)")
        if not taesd_found and self.preview() == "taesd":
            self.previewDecoderCombo.setCurrentIndex(self.previewDecoderCombo.findData(DEFAULT_PREVIEW))

    def prompt(self) -> str:
        return self.promptEdit.toPlainText()

    def negative_prompt(self) -> str | None:
        return self.negativePromptEdit.toPlainText() or None

    def guidance(self) -> float:
        return float(self.guidanceValueSpin.value())

    def set_guidance(self, w: float) -> None:
        self.guidanceValueSpin.setValue(float(w))

    def image_size(self) -> tuple[int, int]:
        """(height, width), each snapped to a multiple of the VAE's factor."""
        return snap(self.heightSpin.value(), self._factor), snap(self.widthSpin.value(), self._factor)

    def set_image_size(self, height: int, width: int) -> None:
        self.heightSpin.setValue(int(height))
        self.widthSpin.setValue(int(width))

    def preview(self) -> str:
        return self.previewDecoderCombo.currentData()

    def remember_prompt(self) -> None:
        self._history.add(self.prompt())

    def recent_prompts(self) -> list[str]:
        return self._history.items()

    # ----- reactions -------------------------------------------------------------------------------------------
    @staticmethod
    def _text_edit(name: str, placeholder: str, lines: int) -> QPlainTextEdit:
        edit = named(QPlainTextEdit(), name, LATENT_TIPS[name])
        edit.setPlaceholderText(placeholder)
        edit.setTabChangesFocus(True)
        edit.setFixedHeight(edit.fontMetrics().lineSpacing() * lines + 12)
        return edit

    @staticmethod
    def _quiet(widget, value) -> None:
        with QSignalBlocker(widget):
            widget.setValue(value)

    def _snap(self, spin) -> None:
        spin.setValue(snap(spin.value(), self._factor))

    def _on_preset(self, i: int) -> None:
        side = self.sizePresetCombo.itemData(i)
        if side:
            self.set_image_size(side, side)

    def _sync_preset(self) -> None:
        h, w = self.heightSpin.value(), self.widthSpin.value()
        i = self.sizePresetCombo.findData(h) if h == w else -1
        with QSignalBlocker(self.sizePresetCombo):
            self.sizePresetCombo.setCurrentIndex(i if i >= 0 else self.sizePresetCombo.count() - 1)

    def _fill_history(self) -> None:
        menu = self._history_menu
        menu.clear()
        prompts = self.recent_prompts()
        examples = [p for p in getattr(self, "_examples", []) if p not in prompts]
        if not prompts and not examples:
            menu.addAction("(no prompts yet)").setEnabled(False)
        if examples:
            menu.addSection("Examples for this model")
            prompts = prompts + examples
        for text in prompts:
            short = text.replace("\n", " ")
            action = menu.addAction(short if len(short) <= 60 else short[:57] + "…")
            action.setToolTip(text)
            action.triggered.connect(lambda _c=False, t=text: self.promptEdit.setPlainText(t))
