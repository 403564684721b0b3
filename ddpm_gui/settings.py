"""Where ``ddpm-gui`` keeps what it remembers (window geometry, last photo, schedule, t, seed).

An INI file in the user's config folder (``~/.config/DDPM Studio/ddpm-gui.ini`` on Linux), or the file named by
the environment variable ``DDPM_STUDIO_SETTINGS``. ``MainWindow()`` without ``settings=`` neither reads nor writes
it, so tests and scripts always start from the defaults. :func:`restore_window` and :func:`save_window` are what
the window reads and writes there.
"""
from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings, QSignalBlocker

from core.images import SAMPLES
from core.schedule import NoiseSchedule

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


def restore_window(w, s: QSettings) -> dict:
    """Restore the main window ``w`` from ``s`` (geometry, schedule and curve, seed, panes shown); returns what the
    window applies once its photo is open: ``geometry`` (True when restored), ``t``, ``photo`` (``("sample",
    name)`` or ``("path", path)``). Anything missing or garbled is left at its default."""
    out: dict = {}
    geometry = s.value("window/geometry")
    if isinstance(geometry, (QByteArray, bytes)) and w.restoreGeometry(QByteArray(geometry)):
        out["geometry"] = True
    text = s.value("schedule/json")
    if isinstance(text, str) and text:
        try:
            w.schedule_panel.set_schedule(NoiseSchedule.from_json(text), "Restore schedule")
            w.schedule_panel.undo_stack.clear()
        except Exception:  # noqa: BLE001 - a hand-edited settings file never breaks the window
            pass
    seed = int_value(s, "noise/seed")
    if seed is not None and 0 <= seed <= w.seedSpin.maximum():
        with QSignalBlocker(w.seedSpin):
            w.seedSpin.setValue(seed)
    t = int_value(s, "view/t")
    if t is not None:
        out["t"] = t
    sample = s.value("photo/sample")
    path = s.value("photo/path")
    if isinstance(sample, str) and sample in SAMPLES:
        out["photo"] = ("sample", sample)
    elif isinstance(path, str) and path and Path(path).is_file():
        out["photo"] = ("path", path)
    for key, check in (("view/showX0", w.showX0Check), ("view/showNoise", w.showNoiseCheck)):
        v = bool_value(s, key)
        if v is not None:
            check.setChecked(v)
    curve = s.value("schedule/curve")
    if isinstance(curve, str):
        try:
            w.schedule_panel.set_curve(curve)
        except KeyError:
            pass
    return out


def save_window(w, s: QSettings) -> None:
    """Write what :func:`restore_window` reads."""
    s.setValue("window/geometry", w.saveGeometry())
    s.setValue("schedule/json", w.schedule.to_json())
    s.setValue("schedule/curve", w.schedule_panel.curve)
    s.setValue("noise/seed", w.seed)
    s.setValue("view/t", w.timestep)
    s.setValue("view/showX0", w.showX0Check.isChecked())
    s.setValue("view/showNoise", w.showNoiseCheck.isChecked())
    s.setValue("photo/sample", w._sample_name or "")
    s.setValue("photo/path", str(w.photo_path) if w.photo_path and not w._sample_name else "")
    s.sync()
