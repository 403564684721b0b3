"""Widgets more than one panel uses, each written once: a menu with "choose a folder…" entries
(:class:`FolderMenu`) and the model menu built on it, the device menu, a log axis that stays legible, a text line
that repaints cheaply, one-call naming and buttons, a remembered-folders list (:class:`RecentList`), and the base of
every panel that runs a job (:class:`JobPanel`: status line, one-line failures)."""
from __future__ import annotations

import json
from pathlib import Path

import pyqtgraph as pg
from PySide6.QtCore import QSettings, QSignalBlocker, Qt, Signal
from PySide6.QtGui import QColor, QPainter, QStandardItemModel
from PySide6.QtWidgets import (QComboBox, QDoubleSpinBox, QFileDialog, QFrame, QHBoxLayout, QLabel, QPushButton,
                               QScrollArea, QSizePolicy, QSpinBox, QVBoxLayout, QWidget)

from core.device import DEVICES, available_devices
from core.model_spec import FOLDER, PHOTO, parse_spec
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


def hbox(*items, spacing: int | None = None) -> QHBoxLayout:
    """Widgets side by side (strings become labels); ``None`` is a stretch, ``(widget, n)`` a widget that takes
    ``n`` shares of the spare width. ``spacing`` None: the style's."""
    lay = QHBoxLayout()
    if spacing is not None:
        lay.setSpacing(spacing)
    for it in items:
        it, stretch = it if isinstance(it, tuple) else (it, 0)
        if it is None:
            lay.addStretch(1)
        else:
            lay.addWidget(QLabel(it) if isinstance(it, str) else it, stretch)
    return lay


def row(*items, spacing: int = 6) -> QWidget:
    """:func:`hbox` as a widget of its own, without margins."""
    box = QWidget()
    box.setLayout(hbox(*items, spacing=spacing))
    box.layout().setContentsMargins(0, 0, 0, 0)
    return box


def button(text: str, name: str, tip: str, slot, kind=QPushButton):
    """A named push button (or ``kind``, e.g. :class:`QToolButton`) showing ``text`` that calls ``slot``."""
    b = named(kind(), name, tip)
    b.setText(text)
    b.clicked.connect(slot)
    return b


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


def scrolling_page(panel: QWidget) -> QVBoxLayout:
    """The layout of a tab page whose controls are wider than the window may be: they sit in a frameless scroll
    area, so the page scrolls instead of setting the whole window's minimum width."""
    outer = QVBoxLayout(panel)
    outer.setContentsMargins(0, 0, 0, 0)
    area = QScrollArea(panel)
    area.setObjectName(f"{panel.objectName() or 'panel'}Scroll")
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    content = QWidget()
    area.setWidget(content)
    outer.addWidget(area)
    return QVBoxLayout(content)


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
        """Remember ``item`` first (moving it up if it was there), dropping the oldest beyond ``max_items``; an
        item that would not read back as an entry is not stored."""
        if self.settings is None or not self.key or self._convert(item) is None:
            return
        entries = [item] + [v for v in self.items() if v != item]
        self.settings.setValue(self.key, json.dumps(entries[:self.max_items]))
        self.settings.sync()


class FolderMenu(QComboBox):
    """Fixed ``entries`` ``(text, data, tooltip)``, folders chosen from disk (remembered under ``settings_key``),
    a separator and ``asks`` ``(text, data, tooltip, dialog title, folder → key)``. Picking an ask goes back to the
    previous choice, opens a folder dialog and selects the folder as an entry known by its key (what :meth:`select`
    takes and the list remembers; item data ``data(key)``, text ``label(key)``, default "Folder — name").
    ``chosen(data)``: another entry was chosen (never an ask); :meth:`set_quietly` chooses one without it."""

    chosen = Signal(object)

    def __init__(self, name: str, tip: str, entries, asks, settings: QSettings | None = None,
                 settings_key: str | None = None, convert=None, label=None, data=None, contents: int = 20):
        super().__init__()
        named(self, name, tip)
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(contents)
        self._recent = RecentList(settings, settings_key, convert=convert)
        self._label = label or (lambda key: f"Folder — {Path(key).name or key}")
        self._data = data or (lambda key: key)
        self._asks = {ask[1]: ask[3:] for ask in asks}
        for text, value, item_tip in entries:
            self._add(text, value, item_tip)
        self.insertSeparator(self.count())
        for text, value, item_tip, *_ in asks:
            self._add(text, value, item_tip)
        for key in self._recent.items():
            self._insert(key)
        self._previous = 0
        self.currentIndexChanged.connect(self._on_index)

    def select(self, key: str) -> None:
        """Choose the entry for ``key``, adding it as a folder entry (and remembering it) if it is new."""
        self.setCurrentIndex(self.add(key))

    def add(self, key: str) -> int:
        """The index of the entry for ``key``, a new folder entry (remembered) if there was none."""
        i = self.find(self._data(key))
        if i < 0:
            with QSignalBlocker(self):
                i = self._insert(key)
            self._recent.add(key)
        return i

    def set_quietly(self, i: int) -> None:
        """Choose entry ``i`` without emitting ``chosen`` (an ask then goes back to it)."""
        with QSignalBlocker(self):
            self.setCurrentIndex(i)
        self._previous = i

    def find(self, value) -> int:
        """The index of the entry whose data is ``value`` (``findData`` misses tuples), or −1."""
        return next((i for i in range(self.count()) if self.itemData(i) == value), -1)

    def _add(self, text: str, value, tip: str) -> None:
        self.addItem(text, value)
        self.setItemData(self.count() - 1, tip, Qt.ItemDataRole.ToolTipRole)

    def _insert(self, key: str) -> int:
        at = self.count() - len(self._asks) - 1   # before the separator
        self.insertItem(at, self._label(key), self._data(key))
        self.setItemData(at, key, Qt.ItemDataRole.ToolTipRole)
        return at

    def _on_index(self, i: int) -> None:
        ask = self._asks.get(self.itemData(i))
        if ask is None:
            self._previous = i
            self.chosen.emit(self.itemData(i))
            return
        self.set_quietly(self._previous)
        folder = QFileDialog.getExistingDirectory(self, ask[0], "")
        if folder:
            self.select(ask[1](folder))


class ModelMenu(FolderMenu):
    """The model menu of Generate and ELBO: built-in models, the oracle over the loaded photo and over the
    built-in digits, folders opened from disk (remembered under ``settings_key``), and two entries that open a
    folder dialog (the oracle's titled ``oracle_title``). Every entry's data is its SPEC string
    (:mod:`core.model_spec`), with the Hugging Face cache's pipelines and pixel UNets (repo ids, offline) after the
    fixed entries. ``specChanged(str)`` when another model is chosen."""

    specChanged = Signal(str)
    aboutToShowPopup = Signal()

    def __init__(self, name: str, tip: str, settings: QSettings | None = None, settings_key: str | None = None,
                 oracle_photo_tip: str = "The exact denoiser of one image: E[x_0 | x_t] is that image, so every "
                 "sample converges to the photo (32×32 unless the photo is square ≤ 256)",
                 oracle_title: str = "A folder of images for the oracle"):
        installed = builtin_models()
        builtins = sorted(set(installed) | {"builtin:mnist"})
        entries = [self._builtin_entry(spec, spec in installed) for spec in builtins]
        entries.append(("Oracle — the loaded photo", PHOTO, oracle_photo_tip))
        entries.append(("Oracle — built-in MNIST digits", "oracle:builtin:mnist", "The exact denoiser of the 4,500 "
                        "training digits: E[x_0 | x_t] = Σ_i softmax_i(−‖x_t − √ᾱ_t·x_i‖² / 2(1−ᾱ_t))·x_i — it "
                        "memorises"))
        asks = [("Open a model folder…", "open:folder", "A folder with config.json + model.safetensors (ours) or a "
                 "diffusers UNet2DModel / pipeline folder; remembered", "Open a model folder", str),
                ("Oracle over a folder of images…", "open:oracle", "The exact denoiser of every image in a folder "
                 "(sub-folders are classes); remembered", oracle_title, lambda folder: f"oracle:{folder}")]
        self._cached = cached_entries()
        entries += self._cached
        super().__init__(name, tip, entries, asks, settings, settings_key, convert=self._stored_spec,
                         label=spec_label)
        for i, spec in enumerate(builtins):
            if spec not in installed:
                self.model().item(i).setEnabled(False)
        self.set_quietly(self.findData("builtin:mnist" if "builtin:mnist" in installed else "oracle:builtin:mnist"))
        self.chosen.connect(self.specChanged.emit)

    # ----- public ------------------------------------------------------------------------------------------
    def spec(self) -> str:
        """The SPEC of the chosen entry."""
        return self.currentData() or "builtin:mnist"

    def select(self, spec: str) -> None:
        """Choose the entry for ``spec`` (any SPEC :func:`core.model_spec.parse_spec` takes), adding a folder or an
        oracle folder to the remembered list if it is new."""
        super().select(str(parse_spec(spec)))

    def showPopup(self):  # noqa: N802 - Qt override
        self.aboutToShowPopup.emit()
        self._refresh_builtins()
        self._refresh_cached()
        super().showPopup()

    # ----- entries -----------------------------------------------------------------------------------------
    @staticmethod
    def _builtin_entry(spec: str, ok: bool) -> tuple[str, str, str]:
        name = spec.split(":", 1)[1]
        label = f"Built-in {name.upper() if name == 'mnist' else name} model"
        if ok:
            return label, spec, f"{spec}: the model that ships with DDPM Studio (resources/models/{name}/)"
        return (f"{label} — not installed yet", spec, f"{spec} is not installed yet: it appears in resources/models/"
                f"{name}/ once trained (ddpm train … then install it). Until then, try an oracle or a model folder.")

    def _enabled(self, i: int) -> bool:
        model = self.model()
        return not isinstance(model, QStandardItemModel) or model.item(i).isEnabled()

    def _refresh_builtins(self) -> None:
        """Enable built-in entries that were installed while the app was open."""
        installed = set(builtin_models())
        for i in range(self.count()):
            spec = self.itemData(i)
            if isinstance(spec, str) and spec in installed and not self._enabled(i):
                self.setItemText(i, self._builtin_entry(spec, True)[0])
                self.setItemData(i, f"{spec}: the model that ships with DDPM Studio", Qt.ItemDataRole.ToolTipRole)
                self.model().item(i).setEnabled(True)

    def _refresh_cached(self) -> None:
        """Add models that appeared in the Hugging Face cache while the app was open (after the fixed entries)."""
        at = max((i for i in range(self.count()) if self.itemData(i) in {e[1] for e in self._cached}),
                 default=self.find("oracle:builtin:mnist"))
        for text, spec, item_tip in cached_entries():
            if self.find(spec) < 0:
                at += 1
                with QSignalBlocker(self):
                    self.insertItem(at, text, spec)
                self.setItemData(at, item_tip, Qt.ItemDataRole.ToolTipRole)
                self._cached.append((text, spec, item_tip))
                if self._previous >= at:
                    self._previous += 1

    @staticmethod
    def _stored_spec(item):
        """A remembered folder's SPEC (the old ``[kind, value]`` pairs read too), or None."""
        if isinstance(item, list) and len(item) == 2 and isinstance(item[1], str):   # before specs were stored
            item = f"oracle:{item[1]}" if item[0] == "oracle-folder" else item[1]
        on_disk = isinstance(item, str) and not item.startswith("open:") and parse_spec(item).is_path
        return item if on_disk else None


def cached_entries() -> list[tuple[str, str, str]]:
    """Model menu entries (text, SPEC = repo id, tooltip) for the Hugging Face cache's pipelines and pixel UNets
    (:func:`core.hf_cache.cached_models`; offline, nothing downloaded). Never raises: an unreadable cache lists
    nothing."""
    from core import hf_cache
    try:
        found = hf_cache.cached_models()
    except Exception:  # noqa: BLE001 - a cache we cannot read lists nothing
        return []
    out = []
    for m in found:
        latent = m.kind == "pipeline" and "StableDiffusion" in (m.class_name or "")
        if m.kind == "pipeline" or (m.kind == "unet" and m.class_name == "UNet2DModel"):
            what = "Stable Diffusion" if latent else "Model"
            out.append((f"{what} — {m.repo_id} (HF cache)", m.repo_id,
                        f"{m.repo_id}: {m.class_name or m.kind} in the Hugging Face cache ({m.path}); loaded "
                        "offline"))
    return out


def spec_label(spec: str) -> str:
    """How a model menu shows a remembered SPEC: "Stable Diffusion — NAME" for a pipeline folder, else
    :attr:`core.model_spec.ModelSpec.label`."""
    parsed = parse_spec(spec)
    if parsed.kind == FOLDER:
        from core.models.load import is_latent_spec
        if is_latent_spec(spec):
            return f"Stable Diffusion — {Path(spec).name or spec}"
    return parsed.label


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
