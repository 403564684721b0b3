"""Hugging Face repo ids resolved from the local cache: never a download, and no ``huggingface_hub`` import (so it
works without the optional extra).

The cache layout (huggingface_hub's "Manage the cache" guide, ``file_download.py``)::

    <root>/models--{org}--{name}/           one folder per repo: "/" in the repo id becomes "--"
        refs/main                           a text file holding the commit hash the branch/tag pointed to
        blobs/<sha256 or git sha1>          the file contents, stored once
        snapshots/<commit>/unet/config.json a tree of *relative* symlinks into ../../blobs/ (copies on Windows)

``<root>`` is ``$HF_HUB_CACHE``, else the legacy ``$HUGGINGFACE_HUB_CACHE``, else ``$HF_HOME/hub``, else
``$XDG_CACHE_HOME/huggingface/hub``, else ``~/.cache/huggingface/hub`` (``huggingface_hub.constants``). Datasets
and spaces (``datasets--``, ``spaces--``) live beside the models and are skipped. Every failure is a
:class:`~core.models.checkpoint.ModelLoadError` with one line.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from core.messages import printable
from core.models.checkpoint import ModelLoadError

MAX_JSON_BYTES = 1_000_000  # a model_index.json or config.json is a few kB
MAX_REPO_ID = 96  # huggingface_hub.utils.validate_repo_id
# one part of a repo id: letters, digits, "_", "-", "."; starting and ending with a letter, digit or "_"
_PART = r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?"
_REPO_ID = re.compile(rf"(?:{_PART}/)?{_PART}")
_COMMIT = re.compile(r"[0-9a-f]{40}")
_SAFE_NAME = re.compile(r"[A-Za-z0-9_.-]+")  # a commit folder name read from a refs file
KINDS = {"UNet2DModel": "unet", "UNet2DConditionModel": "unet", "AutoencoderTiny": "vae-tiny",
         "AutoencoderKL": "vae"}


@dataclass(frozen=True)
class CachedModel:
    """One model repo in the cache: its id, the snapshot folder ``resolve_repo(repo_id)`` gives, and what it
    holds — ``kind`` "pipeline" (``class_name`` from model_index.json, e.g. StableDiffusionPipeline), "unet",
    "vae-tiny", "vae" or "other" (``class_name`` from config.json, when there is one)."""

    repo_id: str
    path: Path
    kind: str
    class_name: str | None = None


def cache_roots() -> list[Path]:
    """The cache folders looked in, first the one huggingface_hub itself uses, then any other an environment
    variable or the default names (a model downloaded before ``$HF_HOME`` was set is still found); no duplicates."""
    def expand(text: str) -> Path:
        return Path(os.path.expandvars(os.path.expanduser(text)))

    env = os.environ
    home = expand(env["HF_HOME"]) if env.get("HF_HOME") else None
    xdg = expand(env["XDG_CACHE_HOME"]) / "huggingface" if env.get("XDG_CACHE_HOME") else None
    candidates = [expand(env[k]) for k in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE") if env.get(k)]
    candidates += [p / "hub" for p in (home, xdg) if p is not None]
    candidates.append(expand("~/.cache/huggingface/hub"))
    roots: list[Path] = []
    for p in candidates:
        if p not in roots:
            roots.append(p)
    return roots


def valid_repo_id(text: str) -> bool:
    """``org/name`` or ``name`` as the Hub allows (huggingface_hub's ``validate_repo_id``): letters, digits,
    ``_ - .``, at most one ``/``, no ``--`` or ``..``, each part starting and ending with a letter, digit or ``_``,
    at most 96 characters. Says nothing about the disk."""
    return (isinstance(text, str) and len(text) <= MAX_REPO_ID and _REPO_ID.fullmatch(text) is not None
            and "--" not in text and ".." not in text and not text.endswith(".git"))


def looks_like_repo_id(text: str) -> bool:
    """True when ``text`` is a valid repo id (:func:`valid_repo_id`) and *not* an existing local path: a folder
    ``runs/model`` on disk is a path, never a repo."""
    if not valid_repo_id(text):
        return False
    try:
        return not Path(text).expanduser().exists()
    except (OSError, ValueError):
        return False


def repo_folder(root: Path, repo_id: str) -> Path:
    """``<root>/models--{org}--{name}``."""
    return Path(root) / ("models--" + repo_id.replace("/", "--"))


def _snapshot(repo: Path, revision: str) -> Path | None:
    """The snapshot of ``revision`` in one repo folder, or None (see :func:`resolve_repo` for the rules)."""
    snapshots = repo / "snapshots"
    if _COMMIT.fullmatch(revision) and (snapshots / revision).is_dir():
        return snapshots / revision
    ref = repo / "refs" / revision
    if ref.is_file():
        try:
            commit = ref.read_text(encoding="ascii", errors="replace")[:200].strip()
        except OSError:
            commit = ""
        if _SAFE_NAME.fullmatch(commit) and commit not in (".", "..") and (snapshots / commit).is_dir():
            return snapshots / commit
        return None  # the ref names a snapshot that is not here: not some other commit's files
    if revision != "main":
        return None  # a branch, tag or commit asked for by name is never replaced by another one
    try:
        found = [p for p in snapshots.iterdir() if p.is_dir()]
    except OSError:
        return None
    return max(found, key=lambda p: (p.stat().st_mtime_ns, p.name)) if found else None


def resolve_repo(repo_id: str, revision: str = "main") -> Path:
    """The snapshot folder ``<root>/models--{org}--{name}/snapshots/<commit>`` of ``repo_id`` in the first root
    (:func:`cache_roots`) that has it. ``<commit>`` is ``revision`` itself when it is a 40-hex commit present under
    snapshots/, else the hash in ``refs/<revision>``; without that ref (for the default ``main`` only) the one
    snapshot there is, or the newest by modification time. Nothing is downloaded; see :func:`check_complete`."""
    shown = printable(repo_id)
    if not valid_repo_id(repo_id):
        raise ModelLoadError(f"{shown!r} is not a Hugging Face repo id (org/name)")
    if not revision or ".." in revision.split("/") or revision.startswith("/") or "\\" in revision:
        raise ModelLoadError(f"{printable(revision)!r} is not a revision (a branch, tag or commit)")
    roots = cache_roots()
    present = False
    for root in roots:
        repo = repo_folder(root, repo_id)
        try:
            if not repo.is_dir():
                continue
            present = True
            snap = _snapshot(repo, revision)
        except OSError:  # an unreadable root or repo folder: look in the next one
            continue
        if snap is not None:
            return snap
    looked = ", ".join(printable(r) for r in roots)
    what = f"{shown} at revision {printable(revision)}" if present else shown
    raise ModelLoadError(f"{what} is not in the Hugging Face cache (looked in {looked}; nothing is downloaded — "
                         f"download it with `hf download {shown}` (huggingface-cli download), or give a local folder)")


def check_complete(folder) -> Path:
    """``folder`` (a snapshot) if every symlink under it resolves; an interrupted download leaves links into
    ../../blobs/ whose blob never arrived, and those raise one line naming the first missing file."""
    folder = Path(folder)
    for dirpath, dirnames, filenames in os.walk(folder):  # does not follow links to folders
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            if p.is_symlink() and not p.exists():
                raise ModelLoadError(printable(
                    f"{folder}: incomplete download — {p.relative_to(folder).as_posix()} points to "
                    f"{os.readlink(p)}, which is missing (download the repo again)"))
    return folder


def _read_json(path: Path) -> dict | None:
    """A small JSON object from a possibly hostile file, or None: too large (> 1 MB), not a regular file,
    invalid, too deeply nested, or not an object."""
    try:
        if not path.is_file() or path.stat().st_size > MAX_JSON_BYTES:
            return None
        with open(path, "rb") as f:
            data = f.read(MAX_JSON_BYTES + 1)
        if len(data) > MAX_JSON_BYTES:
            return None
        d = json.loads(data.decode("utf-8"))
    except Exception:  # noqa: BLE001 - any fault in a file we only list means "ignore it"
        return None
    return d if isinstance(d, dict) else None


def _class_name(d: dict) -> str | None:
    name = d.get("_class_name")
    return name if isinstance(name, str) else None


def _classify(repo_id: str, snap: Path) -> CachedModel | None:
    if (snap / "model_index.json").exists():
        index = _read_json(snap / "model_index.json")
        return None if index is None else CachedModel(repo_id, snap, "pipeline", _class_name(index))
    if not (snap / "config.json").exists():
        return CachedModel(repo_id, snap, "other")
    config = _read_json(snap / "config.json")
    if config is None:
        return None
    name = _class_name(config)
    return CachedModel(repo_id, snap, KINDS.get(name, "other"), name)


def cached_models() -> list[CachedModel]:
    """Every model repo in every root, as :func:`resolve_repo` would give it (the first root holding a repo id
    wins), sorted by repo id. A repo without a snapshot, or whose model_index.json/config.json cannot be read
    safely, is left out."""
    found: dict[str, CachedModel] = {}
    for root in cache_roots():
        try:
            repos = sorted(p for p in Path(root).iterdir() if p.name.startswith("models--") and p.is_dir())
        except OSError:
            continue
        for repo in repos:
            repo_id = repo.name[len("models--"):].replace("--", "/", 1)
            if repo_id in found or not valid_repo_id(repo_id):
                continue
            try:
                snap = _snapshot(repo, "main")
                model = _classify(repo_id, snap) if snap is not None else None
            except OSError:
                model = None
            if model is not None:
                found[repo_id] = model
    return [found[k] for k in sorted(found)]


def describe(model: CachedModel) -> str:
    """One line for ``ddpm sample --list-models``: repo id, kind (class), snapshot folder."""
    what = f"{model.kind} ({model.class_name})" if model.class_name else model.kind
    return printable(f"{model.repo_id}  {what}  {model.path}")
