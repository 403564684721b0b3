"""Atomic file writes: write to a temporary file in the target's folder, then ``os.replace`` it into place.

A killed process or a failed write never leaves a half-written file under the final name. The result gets the
permissions a plain ``open(path, "w")`` would give (the umask's, or those of the file it replaces), not the
owner-only ones ``tempfile`` uses for its own files.

Folders (:func:`atomic_dir`: a model folder, a training checkpoint) are written into a temporary folder beside the
target, every file and the folder itself are fsynced, and then the new folder takes the old one's place:

* where the system can swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``, macOS
  ``renamex_np(RENAME_SWAP)``) it does, so the name always holds a complete folder, the old or the new one, even
  for a reader at that instant or after a kill at any point;
* elsewhere (and on file systems without the swap) it takes three renames — the temporary folder becomes
  ``.NAME.<pid>-<x>.ready`` (complete), the old folder ``.NAME.old-<pid>-<x>``, the ready one NAME — and a kill
  between two of them leaves complete folders that :func:`recover_dir` puts back (the new one if it got that far,
  else the old one) and :func:`resolve_dir` finds without changing anything.

The folder users see keeps its name and stays a real folder (no symlinks, no versioned names). Leftovers of killed
runs (``.NAME.*.tmp``, ``.NAME.*.ready``, ``.NAME.old-*``) whose process is gone are removed by :func:`recover_dir`,
which the training loop calls when it starts.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _mode_for(path: Path, default: int) -> int:
    """The mode ``path`` has now if it exists, else ``default`` filtered by the umask."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        return default & ~_UMASK


@contextlib.contextmanager
def atomic_path(path, suffix: str | None = None):
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed onto ``path`` (the folder
    fsynced after), on error removed: after a crash ``path`` is the old file or the new one, whole.

    ``suffix`` defaults to ``path``'s own, so writers that pick a format from the extension still work.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", suffix=path.suffix if suffix is None else suffix,
                               dir=folder)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _mode_for(path, 0o666))
        _fsync(tmp)                          # the bytes are on the disk before the name points at them
        os.replace(tmp, path)
        _fsync(folder, directory=True)       # and the rename is too
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# ----- folders ------------------------------------------------------------------------------------------------
def _fsync(path, directory: bool = False) -> None:
    """Flush ``path`` to the disk. Folders cannot be opened for that on Windows: skipped there."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if directory else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:
        if directory:
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    """fsync every file under ``folder``, then every folder (deepest first), ``folder`` last."""
    for root, dirs, files in os.walk(folder, topdown=False):
        for name in files:
            p = os.path.join(root, name)
            if not os.path.islink(p):
                _fsync(p)
        _fsync(root, directory=True)


_RENAME_EXCHANGE, _RENAME_SWAP, _AT_FDCWD = 2, 2, -100
_libc = None


def _exchange(a: Path, b: Path) -> bool:
    """Swap paths ``a`` and ``b`` in one atomic step; False where the system or the file system cannot."""
    global _libc
    if os.name != "posix":
        return False
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)  # the C library the interpreter runs on
        if sys.platform.startswith("linux") and hasattr(_libc, "renameat2"):
            rc = _libc.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
        elif sys.platform == "darwin" and hasattr(_libc, "renamex_np"):
            rc = _libc.renamex_np(os.fsencode(a), os.fsencode(b), _RENAME_SWAP)
        else:
            return False
    except (OSError, AttributeError, TypeError):
        return False
    return rc == 0  # EINVAL / ENOSYS / EOPNOTSUPP: no swap on this file system; the caller renames instead


def _tag() -> str:
    return f"{os.getpid()}-"


def _swap_in(tmp: Path, path: Path) -> None:
    """Put the complete folder ``tmp`` at ``path`` (see the module docstring); ``tmp`` is gone afterwards."""
    parent = path.parent
    if not os.path.lexists(path):
        os.rename(tmp, path)
        _fsync(parent, directory=True)
        return
    if path.is_dir() and not path.is_symlink() and _exchange(tmp, path):
        _fsync(parent, directory=True)  # the swap is on the disk; ``tmp`` now holds the old folder
        shutil.rmtree(tmp, ignore_errors=True)
        return
    stem = tmp.name[:-len(".tmp")]                       # ".NAME.<pid>-<x>"
    ready = tmp.with_name(stem + ".ready")
    old = path.with_name(f".{path.name}.old-{stem[len(path.name) + 2:]}")
    os.rename(tmp, ready)                                # complete: recovery may use it from here on
    _fsync(parent, directory=True)
    try:
        os.rename(path, old)
    except BaseException:
        with contextlib.suppress(OSError):
            os.rename(ready, tmp)                        # the caller removes it
        raise
    try:
        os.rename(ready, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.rename(old, path)
            shutil.rmtree(ready, ignore_errors=True)
        raise
    _fsync(parent, directory=True)
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.unlink(old)


@contextlib.contextmanager
def atomic_dir(path):
    """Yield a temporary folder beside ``path``; on success it takes ``path``'s place (see the module docstring:
    at no moment, and after no kill, is there no complete folder to be found), on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{_tag()}", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, _mode_for(path, 0o777) if path.is_dir() else 0o777 & ~_UMASK)
        _fsync_tree(tmp)
        _swap_in(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _leftovers(path: Path) -> list[tuple[str, int | None, Path]]:
    """Our temporary folders beside ``path``: (kind, pid or None, folder), kind "tmp" (maybe incomplete),
    "ready" (complete, newer than ``path``) or "old" (complete, the one ``path`` replaced)."""
    name = re.escape(path.name)
    patterns = (("tmp", re.compile(rf"\.{name}\.(\d+)-[A-Za-z0-9_]+\.tmp")),
                ("ready", re.compile(rf"\.{name}\.(\d+)-[A-Za-z0-9_]+\.ready")),
                ("old", re.compile(rf"\.{name}\.old-(\d+)(?:-[A-Za-z0-9_]+)?")),
                ("tmp", re.compile(rf"\.{name}\.()[A-Za-z0-9_]{{8}}\.tmp")))  # written before pids were in names
    found = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return []
    for entry in entries:
        for kind, pattern in patterns:
            m = pattern.fullmatch(entry.name)
            if m and entry.is_dir(follow_symlinks=False):
                found.append((kind, int(m.group(1)) if m.group(1) else None, Path(entry.path)))
                break
    return found


def _alive(pid: int | None) -> bool:
    """Is process ``pid`` still running (so its temporary folder may be in use)? Only known on POSIX."""
    if pid is None or os.name != "posix":
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _newest(folders: list[Path]) -> Path | None:
    def mtime(p):
        try:
            return p.stat().st_mtime_ns
        except OSError:
            return -1
    return max(folders, key=mtime, default=None)


def resolve_dir(path) -> Path | None:
    """Where the complete folder written as ``path`` is now, without changing anything: ``path`` itself, or after
    a kill between the fallback renames the complete folder left beside it; None when there is none."""
    path = Path(path)
    if path.is_dir():
        return path
    if os.path.lexists(path):
        return None
    found = _leftovers(path)
    return _newest([p for k, _, p in found if k == "ready"]) or _newest([p for k, _, p in found if k == "old"])


def recover_dir(path) -> Path | None:
    """After a kill: put the complete folder back at ``path`` if a swap was cut short (the new one if it was
    complete, else the old one) and remove the temporary folders of processes that have ended. Returns ``path``
    when it holds a folder, else None."""
    path = Path(path)
    dead = [(k, p) for k, pid, p in _leftovers(path) if not _alive(pid)]
    if not os.path.lexists(path):
        best = _newest([p for k, p in dead if k == "ready"]) or _newest([p for k, p in dead if k == "old"])
        if best is not None:
            os.rename(best, path)
            _fsync(path.parent, directory=True)
    for _, p in dead:
        if p.exists():
            shutil.rmtree(p, ignore_errors=True)
    return path if path.is_dir() else None


def write_bytes_atomic(path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))
