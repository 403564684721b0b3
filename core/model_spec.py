"""The model SPEC grammar, once: what ``--model`` and every model menu of the window take.

    builtin:NAME     a model folder shipped in resources/models/NAME/
    oracle:TARGET    the exact denoiser E[x_0 | x_t] of a set of images; TARGET is an image file, a folder of
                     images, or builtin:mnist (the built-in digits' training split)
    photo            the oracle over the photo loaded in the window (the window resolves it to oracle:FILE, or to
                     the pasted pixels when the photo has no file)
    PATH             one of our model folders, a diffusers UNet2DModel folder or a pipeline folder

:func:`parse_spec` and :meth:`ModelSpec.__str__` are inverses; :func:`cache_key` names a loaded model so that two
different models never share a key (paths are resolved and carry their modification time; pixels without a file
are named by a hash of their bytes, never by ``id()``, which Python reuses). :class:`ModelCache` holds the model
a panel last used.
"""
from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

BUILTIN, ORACLE, PHOTO, FOLDER = "builtin", "oracle", "photo", "folder"
KINDS = (BUILTIN, ORACLE, PHOTO, FOLDER)
DEFAULT_SPEC = "builtin:mnist"


@dataclass(frozen=True)
class ModelSpec:
    """One parsed SPEC: ``kind`` (builtin, oracle, photo, folder) and ``value`` (the name, target or path)."""

    kind: str
    value: str | None = None

    def __str__(self) -> str:
        if self.kind == PHOTO:
            return PHOTO
        if self.kind == FOLDER:
            return str(self.value)
        return f"{self.kind}:{self.value}"

    @property
    def label(self) -> str:
        """How a model menu shows it."""
        if self.kind == BUILTIN:
            return f"Built-in — {self.value}"
        if self.kind == PHOTO:
            return "Oracle — the loaded photo"
        if self.kind == ORACLE:
            target = "built-in digits" if self.value == DEFAULT_SPEC else (Path(self.value).name or self.value)
            return f"Oracle — {target}"
        return f"Model — {Path(self.value).name or self.value}"

    @property
    def is_path(self) -> bool:
        """True when the spec names something on disk (a folder, or an oracle's photo or folder)."""
        return self.kind == FOLDER or (self.kind == ORACLE and not str(self.value).startswith("builtin:"))

    @property
    def path(self) -> Path | None:
        return Path(self.value).expanduser() if self.is_path else None


def parse_spec(text: str | None) -> ModelSpec:
    """``text`` → :class:`ModelSpec` (empty → the built-in model). Raises ``ValueError`` with one line for an
    empty ``builtin:``/``oracle:`` target."""
    text = (text or DEFAULT_SPEC).strip()
    if text == PHOTO:
        return ModelSpec(PHOTO)
    for kind in (BUILTIN, ORACLE):
        if text.startswith(f"{kind}:"):
            value = text[len(kind) + 1:].strip()
            if not value:
                raise ValueError(f"{kind}: needs a " + ("NAME" if kind == BUILTIN else
                                                       "PATH (an image, a folder of images, or builtin:mnist)"))
            return ModelSpec(kind, value)
    return ModelSpec(FOLDER, text)


def pixels_token(x: np.ndarray) -> str:
    """A name for an image that has no file: a hash of its shape, type and bytes (equal pixels, equal token)."""
    x = np.ascontiguousarray(x)
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((x.shape, x.dtype.str)).encode())
    h.update(memoryview(x).cast("B"))
    return h.hexdigest()


def cache_key(spec: ModelSpec | str, device: str = "cpu", pixels: np.ndarray | None = None, **options) -> tuple:
    """A key that differs whenever the loaded model would: the kind, the resolved path and its modification time
    (a folder retrained in place is loaded again), the pixels' hash for a photo without a file, the device, and
    any loading ``options`` (e.g. ``resolution``)."""
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    where: object = spec.value
    if spec.kind == PHOTO:
        if pixels is None:
            raise ValueError("open a photo first (File ▸ Open image)")
        where = pixels_token(pixels)
    elif spec.is_path:
        path = spec.path
        try:
            resolved = path.resolve()
            stamp = max((p.stat().st_mtime_ns for p in (resolved, *_config_files(resolved))), default=0)
        except OSError:
            resolved, stamp = path, 0
        where = (str(resolved), stamp)
    return (spec.kind, where, str(device), tuple(sorted(options.items())))


def _config_files(folder: Path):
    if folder.is_dir():
        for name in ("config.json", "model_index.json", "model.safetensors"):
            p = folder / name
            if p.exists():
                yield p


class ModelCache:
    """Holds the one model a panel last used, so a second click does not load it again. Thread-safe: the worker
    loads under the lock; the UI thread only peeks, never blocking on a load in progress."""

    def __init__(self):
        self._lock = threading.Lock()
        self._key: tuple | None = None
        self._model = None

    def get(self, key: tuple, loader: Callable[[], object]):
        with self._lock:
            if self._key == key and self._model is not None:
                return self._model
            self._drop()
            model = loader()
            self._key, self._model = key, model
            return model

    def peek(self, key: tuple):
        """The model for ``key`` if it is loaded, else None."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            return self._model if self._key == key else None
        finally:
            self._lock.release()

    def clear(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        model, self._key, self._model = self._model, None, None
        on_gpu = model is not None and getattr(getattr(model, "device", None), "type", "cpu") == "cuda"
        del model
        if on_gpu:
            import torch
            torch.cuda.empty_cache()
