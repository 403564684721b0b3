"""Checks made before any work starts: an output never replaces one of the command's own inputs, and every output
place can really be written (not under a file, not read-only), so a failure is found in the first second rather
than after minutes of work."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def same_file(a, b) -> bool:
    """True when paths ``a`` and ``b`` name the same file: the same inode when both exist (hard links, symlinks,
    ``./x`` vs ``x``), else the same fully resolved path."""
    a, b = Path(a), Path(b)
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    try:
        return a.resolve() == b.resolve()
    except (OSError, RuntimeError):
        return os.path.abspath(a) == os.path.abspath(b)


def refuse_overwriting_inputs(outputs, inputs) -> None:
    """Raise ``ValueError`` when any output path would replace any input path (``same_file``).

    ``outputs``/``inputs``: paths (``None`` entries are skipped). An input folder counts too: an output inside an
    input folder of images is allowed, but an output that *is* the folder is not."""
    ins = [Path(p) for p in inputs if p is not None and str(p)]
    for out in (Path(p) for p in outputs if p is not None and str(p)):
        for src in ins:
            if same_file(out, src):
                raise ValueError(f"{out}: this is also an input ({src}); it would be overwritten — choose another "
                                 f"output name")


def check_output_file(path) -> Path:
    """Raise a one-line error unless a file can be written at ``path``: its folder exists, is a folder and is
    writable, and ``path`` is not a folder."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a folder, not a file name")
    if not folder.exists():
        raise FileNotFoundError(f"{path}: folder {folder} does not exist")
    if not folder.is_dir():
        raise NotADirectoryError(f"{path}: {folder} is a file, not a folder")
    _probe(folder, path)
    return path


def check_output_folder(path) -> Path:
    """Make sure folder ``path`` exists (creating it and its parents) and that files can be created in it; a
    one-line error otherwise (a path under a file, a read-only place)."""
    path = Path(path)
    for parent in [path, *path.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(f"{path}: {parent} is a file, not a folder")
            break
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PermissionError(f"{path}: cannot create this folder ({e.strerror or e})") from None
    _probe(path, path)
    return path


def _probe(folder: Path, named: Path) -> None:
    try:
        fd, tmp = tempfile.mkstemp(prefix=".ddpm-write-check-", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise PermissionError(f"{named}: cannot write in {folder} ({e.strerror or e})") from None


def spec_paths(spec: str | None, limit: int = 10_000) -> list[Path]:
    """The files a model SPEC reads from disk (a model folder's files, a built-in model's, an oracle's photo or
    folder of photos), so an output can be checked against them; names that are not paths give none."""
    if not spec:
        return []
    target = spec.split(":", 1)[1] if spec.startswith("oracle:") else spec
    if target.startswith("builtin:"):
        from core.models.load import builtin_root
        name = target.split(":", 1)[1]
        if spec.startswith("oracle:"):  # the oracle over the built-in digits reads the dataset file
            from importlib import resources
            return [Path(str(p)) for p in resources.files("resources").iterdir() if str(p).endswith(".npz")]
        path = builtin_root() / name
    else:
        path = Path(target)
    if not path.exists():
        from core.models.load import model_folder
        try:  # a Hugging Face repo id: the snapshot's files
            path = model_folder(target)
        except ValueError:
            return []
    if not path.is_dir():
        return [path]
    found = [path]
    for root, _dirs, files in os.walk(path):
        found.extend(Path(root, f) for f in files)
        if len(found) > limit:
            break
    return found
