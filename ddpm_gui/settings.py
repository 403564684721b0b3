"""Where ``ddpm-gui`` keeps what it remembers (window geometry, last photo, schedule, t, seed).

An INI file in the user's config folder (``~/.config/DDPM Studio/ddpm-gui.ini`` on Linux), or the file named by
the environment variable ``DDPM_STUDIO_SETTINGS``. ``MainWindow()`` without ``settings=`` neither reads nor writes
it, so tests and scripts always start from the defaults.
"""
from __future__ import annotations

import os

from PySide6.QtCore import QSettings

ORGANIZATION, APPLICATION = "DDPM Studio", "ddpm-gui"


def open_settings(path: str | os.PathLike | None = None) -> QSettings:
    path = path or os.environ.get("DDPM_STUDIO_SETTINGS")
    if path:
        return QSettings(str(path), QSettings.Format.IniFormat)
    return QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, ORGANIZATION, APPLICATION)


def int_value(s: QSettings, key: str) -> int | None:
    """An int setting, or None when it is missing or not a number (a hand-edited file never crashes the app)."""
    v = s.value(key)
    try:
        return int(v) if v is not None and v != "" else None
    except (TypeError, ValueError):
        return None


def bool_value(s: QSettings, key: str) -> bool | None:
    v = s.value(key)
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "false", "1", "0"):
        return v.lower() in ("true", "1")
    return None
