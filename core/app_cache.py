"""The app's own cache folder, for things it can always recompute (e.g. the fitted latent→RGB preview map).

Where: ``$DDPM_STUDIO_CACHE`` if set, else ``$XDG_CACHE_HOME/ddpm-studio`` (an absolute ``XDG_CACHE_HOME`` only,
as the XDG spec says), else ``~/.cache/ddpm-studio``. Nothing is ever written into a user's model folder: callers
keep their own files here, keyed by what they were derived from.
"""
from __future__ import annotations

import os
from pathlib import Path

APP = "ddpm-studio"


def cache_root() -> Path:
    """The cache folder's path (not created)."""
    own = os.environ.get("DDPM_STUDIO_CACHE")
    if own:
        return Path(own).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and Path(xdg).expanduser().is_absolute():
        return Path(xdg).expanduser() / APP
    return Path.home() / ".cache" / APP


def cache_dir(*parts: str) -> Path:
    """``cache_root()/part/…``, created on demand (an ``OSError`` if it cannot be). Each part is one plain folder
    name — no separators, ``..`` or absolute paths — so nothing lands outside the cache."""
    folder = cache_root()
    for part in parts:
        if not part or part in (".", "..") or "/" in part or "\\" in part or "\0" in part:
            raise ValueError(f"{part!r} is not a cache folder name")
        folder = folder / part
    folder.mkdir(parents=True, exist_ok=True)
    return folder
