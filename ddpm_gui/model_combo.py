"""The model menu of the Generate and ELBO tabs: a combo box that says when it is about to open, so its owner can
refresh the entries first (the built-in model may have been installed, or a folder deleted, since)."""
from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox


class ModelCombo(QComboBox):
    """A combo that emits ``aboutToShowPopup`` just before it opens."""

    aboutToShowPopup = Signal()

    def showPopup(self):  # noqa: N802 - Qt override
        self.aboutToShowPopup.emit()
        super().showPopup()
