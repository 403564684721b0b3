"""Widgets more than one panel uses, each written once: the model menu, the device menu, a log axis that stays
legible, a text line that repaints cheaply, one-call naming, a remembered-folders list (:class:`RecentList`), and
the base of every panel that runs a job (:class:`JobPanel`: status line, one-line failures)."""
from __future__ import annotations

import json

import pyqtgraph as pg
from PySide6.QtCore import QSettings, QSignalBlocker, Qt, Signal
from PySide6.QtGui import QColor, QPainter, QStandardItemModel
from PySide6.QtWidgets import QComboBox, QDoubleSpinBox, QHBoxLayout, QLabel, QSizePolicy, QSpinBox, QWidget

from core.device import DEVICES, available_devices
from core.model_spec import PHOTO, parse_spec
from core.models.load import builtin_models

ERROR_COLOR = "#b00020"


def named(widget, name: str, tip: str | None = None):
    """Give ``widget`` its objectName (lowerCamelCase, what tests and accessibility find it by) and tooltip."""
    widget.setObjectName(name)
    if tip:
        widget.setToolTip(tip)
    return widget


def spin_box(name: str, tip: str | None, low, high, value=None, step=None, decimals: int | None = None):
    """A named :class:`QSpinBox` (integer bounds) or :class:`QDoubleSpinBox` (a float bound) with its range and,
    when given, its decimals, single step and start value."""
    box = named(QDoubleSpinBox() if isinstance(low, float) or isinstance(high, float) else QSpinBox(), name, tip)
    if decimals is not None:
        box.setDecimals(decimals)
    box.setRange(low, high)
    if step is not None:
        box.setSingleStep(step)
    if value is not None:
        box.setValue(value)
    return box


def combo_box(name: str, tip: str | None, items) -> QComboBox:
    """A named :class:`QComboBox` of ``(text, data)`` or ``(text, data, tooltip)`` entries."""
    combo = named(QComboBox(), name, tip)
    for text, data, *item_tip in items:
        combo.addItem(text, data)
        if item_tip:
            combo.setItemData(combo.count() - 1, item_tip[0], Qt.ItemDataRole.ToolTipRole)
    return combo


def row(*items, spacing: int = 6) -> QWidget:
    """Widgets side by side (strings become labels); ``None`` is a stretch, ``(widget, n)`` a widget that takes
    ``n`` shares of the spare width."""
    box = QWidget()
    lay = QHBoxLayout(box)
    lay.setContentsMargins(0, 0, 0, 0)
    lay.setSpacing(spacing)
    for it in items:
        it, stretch = it if isinstance(it, tuple) else (it, 0)
        if it is None:
            lay.addStretch(1)
        else:
            lay.addWidget(QLabel(it) if isinstance(it, str) else it, stretch)
    return box


class TextLine(QWidget):
    """Text that changes often (status, step, start note) without asking for a new layout. ``QLabel.setText``
    always calls ``updateGeometry()``: on every live frame the panel was laid out again and every widget in it
    repainted (measured: ~30 paint events per frame), which cost more than the pictures themselves."""

    def __init__(self, lines: int = 1, align=Qt.AlignmentFlag.AlignLeft, color: str | None = None,
                 width: int | None = None, tooltip_follows: bool = False):
        super().__init__()
        self._text, self._color, self._error, self._tip = "", color, False, tooltip_follows
        self._align = align | Qt.AlignmentFlag.AlignVCenter | Qt.TextFlag.TextWordWrap
        self.setFixedHeight(self.fontMetrics().lineSpacing() * lines + 4)
        if width is not None:
            self.setFixedWidth(width)
        else:
            self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)

    def text(self) -> str:
        return self._text

    def setText(self, text: str, error: bool = False) -> None:  # noqa: N802 - QLabel's name
        if text != self._text or error != self._error:
            self._text, self._error = text, error
            if self._tip:
                self.setToolTip(text)
            self.update()

    def paintEvent(self, ev):  # noqa: N802 - Qt override
        p = QPainter(self)
        color = ERROR_COLOR if self._error else self._color
        p.setPen(QColor(color) if color else self.palette().windowText().color())
        p.drawText(self.rect().adjusted(2, 0, -2, 0), int(self._align), self._text)
        p.end()


class LogAxis(pg.AxisItem):
    """On a log axis, label only 1, 2 and 5 × 10^k: the eight labels between two decades crowd into each other."""

    def logTickStrings(self, values, scale, spacing):  # noqa: N802 - pyqtgraph override
        strings = super().logTickStrings(values, scale, spacing)
        out = []
        for v, s in zip(values, strings):
            mantissa = 10 ** (float(v) % 1.0)
            out.append(s if min(abs(mantissa - k) for k in (1.0, 2.0, 5.0, 10.0)) < 1e-3 else "")
        return out


def device_combo(name: str = "deviceCombo") -> QComboBox:
    """Where a model runs: auto (CUDA, then MPS, then CPU) or one device; devices this machine lacks are shown
    disabled, so a CPU choice is always there even when CUDA is."""
    combo = named(QComboBox(), name, "Where the model runs: auto = CUDA, then MPS, then CPU. Noise is drawn on the "
                  "CPU, so a seed gives the same images on every device.")
    have = available_devices()
    for d in DEVICES:
        combo.addItem({"auto": f"auto ({have[0]})", "cpu": "CPU", "cuda": "CUDA", "mps": "MPS"}[d], d)
        if d != "auto" and d not in have:
            combo.model().item(combo.count() - 1).setEnabled(False)
    return combo


class RecentList:
    """Entries remembered under one settings key (folders chosen from disk), newest first, at most ``max_items``,
    stored as a JSON list. A missing, hand-edited or broken value reads as no entries, never an error.
    ``convert(raw)`` turns one stored item into an entry, or None to drop it (default: non-empty strings)."""

    def __init__(self, settings: QSettings | None, key: str | None, max_items: int = 8, convert=None):
        self.settings, self.key, self.max_items = settings, key, int(max_items)
        self._convert = convert or (lambda v: v if isinstance(v, str) and v else None)

    def items(self) -> list[str]:
        if self.settings is None or not self.key:
            return []
        try:
            raw = json.loads(self.settings.value(self.key) or "[]")
            out = []
            for it in raw if isinstance(raw, list) else []:
                v = self._convert(it)
                if v is not None and v not in out:
                    out.append(v)
            return out[:self.max_items]
        except Exception:  # noqa: BLE001 - nested too deeply, not JSON, not text, …: no remembered entries
            return []

    def add(self, item: str) -> None:
        """Remember ``item`` first (moving it up if it was there), dropping the oldest beyond ``max_items``."""
        if self.settings is None or not self.key:
            return
        entries = [item] + [v for v in self.items() if v != item]
        self.settings.setValue(self.key, json.dumps(entries[:self.max_items]))
        self.settings.sync()


class ModelMenu(QComboBox):
    """The model menu of Generate and ELBO: built-in models, the oracle over the loaded photo and over the
    built-in digits, folders opened from disk (remembered under ``settings_key``), and two actions that ask the
    panel for a folder. Every entry's data is its SPEC string (:mod:`core.model_spec`).

    Signals: ``specChanged(str)`` when another model is chosen, ``openRequested(str)`` with ``"folder"`` or
    ``"oracle"`` when an action entry is picked (the menu then returns to the previous model until the panel
    calls :meth:`select`)."""

    specChanged = Signal(str)
    openRequested = Signal(str)
    aboutToShowPopup = Signal()
    MAX_RECENT = 8
    _OPEN_FOLDER, _OPEN_ORACLE = "open:folder", "open:oracle"

    def __init__(self, name: str, tip: str, settings: QSettings | None = None, settings_key: str | None = None,
                 oracle_photo_tip: str = "The exact denoiser of one image: E[x_0 | x_t] is that image, so every "
                 "sample converges to the photo (32×32 unless the photo is square ≤ 256)"):
        super().__init__()
        named(self, name, tip)
        self._recent = RecentList(settings, settings_key, self.MAX_RECENT, convert=self._stored_spec)
        self._photo_tip = oracle_photo_tip
        self._previous = -1
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(20)
        self._fill()
        self.currentIndexChanged.connect(self._on_index)

    # ----- public ------------------------------------------------------------------------------------------
    def spec(self) -> str:
        """The SPEC of the chosen entry."""
        return self.currentData() or "builtin:mnist"

    def select(self, spec: str) -> None:
        """Choose the entry for ``spec`` (any SPEC :func:`core.model_spec.parse_spec` takes), adding a folder or an
        oracle folder to the remembered list if it is new."""
        text = str(parse_spec(spec))
        i = self.findData(text)
        if i < 0:
            i = self._add_recent(text)
        self.setCurrentIndex(i)

    def showPopup(self):  # noqa: N802 - Qt override
        self.aboutToShowPopup.emit()
        self._refresh_builtins()
        super().showPopup()

    # ----- entries -----------------------------------------------------------------------------------------
    def _fill(self) -> None:
        with QSignalBlocker(self):
            installed = builtin_models()
            for spec in sorted(set(installed) | {"builtin:mnist"}):
                name = spec.split(":", 1)[1]
                ok = spec in installed
                label = f"Built-in {name.upper() if name == 'mnist' else name} model"
                self._add(label if ok else f"{label} — not installed yet", spec,
                          f"{spec}: the model that ships with DDPM Studio (resources/models/{name}/)" if ok else
                          f"{spec} is not installed yet: it appears in resources/models/{name}/ once trained "
                          "(ddpm train … then install it). Until then, try an oracle or a model folder.")
                if not ok:
                    self.model().item(self.count() - 1).setEnabled(False)
            self._add("Oracle — the loaded photo", PHOTO, self._photo_tip)
            self._add("Oracle — built-in MNIST digits", "oracle:builtin:mnist",
                      "The exact denoiser of the 4,500 training digits: E[x_0 | x_t] = Σ_i softmax_i(−‖x_t − "
                      "√ᾱ_t·x_i‖² / 2(1−ᾱ_t))·x_i — it memorises")
            for spec in self._recent.items():
                self._insert_recent(spec)
            self.insertSeparator(self.count())
            self._add("Open a model folder…", self._OPEN_FOLDER, "A folder with config.json + model.safetensors "
                      "(ours) or a diffusers UNet2DModel / pipeline folder; remembered")
            self._add("Oracle over a folder of images…", self._OPEN_ORACLE, "The exact denoiser of every image in "
                      "a folder (sub-folders are classes); remembered")
            start = self.findData("builtin:mnist")
            if start < 0 or not self._enabled(start):
                start = self.findData("oracle:builtin:mnist")
            self.setCurrentIndex(start)
            self._previous = start

    def _add(self, label: str, spec: str, tip: str) -> None:
        self.addItem(label, spec)
        self.setItemData(self.count() - 1, tip, Qt.ItemDataRole.ToolTipRole)

    def _enabled(self, i: int) -> bool:
        model = self.model()
        return not isinstance(model, QStandardItemModel) or model.item(i).isEnabled()

    def _refresh_builtins(self) -> None:
        """Enable built-in entries that were installed while the app was open."""
        installed = set(builtin_models())
        for i in range(self.count()):
            spec = self.itemData(i)
            if isinstance(spec, str) and spec in installed and not self._enabled(i):
                name = spec.split(":", 1)[1]
                self.setItemText(i, f"Built-in {name.upper() if name == 'mnist' else name} model")
                self.setItemData(i, f"{spec}: the model that ships with DDPM Studio", Qt.ItemDataRole.ToolTipRole)
                self.model().item(i).setEnabled(True)

    def _insert_recent(self, spec: str) -> int:
        at = self.findData("oracle:builtin:mnist") + 1
        while at < self.count() and self._is_recent(self.itemData(at)):
            at += 1
        self.insertItem(at, parse_spec(spec).label, spec)
        self.setItemData(at, spec, Qt.ItemDataRole.ToolTipRole)
        return at

    @staticmethod
    def _is_recent(spec) -> bool:
        return isinstance(spec, str) and not spec.startswith("open:") and parse_spec(spec).is_path

    @classmethod
    def _stored_spec(cls, item):
        """A remembered folder's SPEC (the old ``[kind, value]`` pairs read too), or None."""
        if isinstance(item, list) and len(item) == 2 and isinstance(item[1], str):   # before specs were stored
            item = f"oracle:{item[1]}" if item[0] == "oracle-folder" else item[1]
        return item if isinstance(item, str) and cls._is_recent(item) else None

    def _add_recent(self, spec: str) -> int:
        with QSignalBlocker(self):
            i = self._insert_recent(spec) if self.findData(spec) < 0 else self.findData(spec)
        if self._is_recent(spec):
            self._recent.add(spec)
        return i

    def _on_index(self, i: int) -> None:
        spec = self.itemData(i)
        if spec in (self._OPEN_FOLDER, self._OPEN_ORACLE):
            with QSignalBlocker(self):
                self.setCurrentIndex(self._previous)
            self.openRequested.emit("folder" if spec == self._OPEN_FOLDER else "oracle")
            return
        self._previous = i
        self.specChanged.emit(spec)


class JobPanel(QWidget):
    """The base of a panel that runs a long job: a status line and one way to fail. Subclasses build their
    widgets, create ``self.statusLabel`` (a :class:`TextLine` or QLabel) and name their dialogs' title."""

    runFailed = Signal(str)   # the one-line reason
    TITLE = "DDPM Studio"
    STATUS_COLOR: str | None = None   # a QLabel status line's colour when it is not an error (None: the palette's)

    def __init__(self, window, parent=None):
        super().__init__(parent)
        self.window_ = window
        self.status_text = ""

    def _set_status(self, text: str, error: bool = False) -> None:
        self.status_text = text
        label = getattr(self, "statusLabel", None)
        if isinstance(label, TextLine):
            label.setText(text, error=error)
        elif label is not None:
            label.setText(text)
            label.setStyleSheet(f"color: {ERROR_COLOR};" if error else
                                f"color: {self.STATUS_COLOR};" if self.STATUS_COLOR else "")

    def _fail(self, message: str, title: str | None = None) -> None:
        self._set_status(message, error=True)
        self.window_.show_error(message, title=title or self.TITLE)
        self.runFailed.emit(message)


def finite_or_nan(y, log_y: bool = False):
    """Non-finite values (and, on a log axis, values ≤ 0) become NaN, which pyqtgraph leaves out of a curve."""
    import numpy as np
    y = np.array(y, dtype=np.float64)
    bad = ~np.isfinite(y)
    if log_y:
        bad |= y <= 0
    y[bad] = np.nan
    return y
