"""Training data: the built-in MNIST subset (``builtin:mnist``) or a folder of images, as model-ready batches.

Images come out N×C×H×W float32 in [−1, 1] (x = u8/127.5 − 1, Ho et al.'s scaling), labels int64 or None.

- ``builtin:mnist``: 5,000 28×28 digits (500 per digit) from ``resources/mnist_5k.npz`` (built by
  ``resources/build/build_mnist.py``). A fixed, stratified 10% (50 per digit) is held out for evaluation:
  ``split="train"`` never contains it, ``split="heldout"`` is only it, ``split="all"`` is both.
- A folder: every file :func:`core.images.load_image` reads (searched recursively), centre-cropped and resized to
  ``resolution``. If the images sit in two or more sub-folders, each sub-folder is a class (sorted names → 0…K−1).
  Files that fail to load are counted in ``skipped`` and reported as a warning, never fatal. Folders have no
  held-out split: ``train`` and ``all`` are the whole folder.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from core.images import ImageLoadError, from_uint8, load_image, resize_square

BUILTIN = ("builtin:mnist",)
SPLITS = ("train", "heldout", "all")
DEFAULT_FOLDER_RESOLUTION = 32
MAX_FOLDER_IMAGES = 100_000
MNIST_CLASS_NAMES = tuple(str(d) for d in range(10))


@dataclass
class Dataset:
    """``images`` N×C×H×W float32 in [−1, 1]; ``labels`` int64 (N,) or None; ``num_classes`` (0 = unlabelled);
    ``skipped``: files that could not be loaded; ``class_names`` for labelled data."""

    images: np.ndarray
    labels: np.ndarray | None = None
    num_classes: int = 0
    skipped: int = 0
    name: str = "data"
    class_names: tuple = field(default_factory=tuple)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def resolution(self) -> int:
        return int(self.images.shape[2])


def mnist_path() -> Path:
    return Path(str(resources.files("resources").joinpath("mnist_5k.npz")))


def load_mnist_arrays(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """The built-in digits as uint8 N×28×28 and labels int64 (N,) for ``split``."""
    _check_split(split)
    path = mnist_path()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: built-in MNIST is missing (run resources/build/build_mnist.py)")
    with np.load(path) as z:
        images, labels, heldout = z["images"], z["labels"].astype(np.int64), z["heldout"]
    keep = {"train": ~heldout, "heldout": heldout, "all": np.ones_like(heldout)}[split]
    return images[keep], labels[keep]


def load_dataset(spec: str, resolution: int | None = None, split: str = "train",
                 channels: int | None = None) -> Dataset:
    """``builtin:mnist`` or a folder path → :class:`Dataset` (see the module docstring).

    ``resolution``: output size (default 28 for MNIST, 32 for a folder). ``channels``: 1 (luma,
    ITU-R 601: 0.299 R + 0.587 G + 0.114 B) or 3; default: MNIST 1, a folder 1 if every image is grey else 3.
    """
    _check_split(split)
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if resolution is not None and not 4 <= int(resolution) <= 512:
        raise ValueError(f"resolution must be between 4 and 512, got {resolution}")
    spec = str(spec)
    if spec.startswith("builtin:"):
        if spec not in BUILTIN:
            raise ValueError(f"unknown built-in dataset {spec!r}; choose one of {', '.join(BUILTIN)}")
        u8, labels = load_mnist_arrays(split)
        x = from_uint8(u8)[:, None]  # N×1×28×28
        if resolution is not None and int(resolution) != 28:
            x = np.stack([resize_square(np.repeat(im.transpose(1, 2, 0), 3, axis=2), int(resolution))[..., :1]
                          .transpose(2, 0, 1) for im in x])
        if channels == 3:
            x = np.repeat(x, 3, axis=1)
        return Dataset(np.ascontiguousarray(x, dtype=np.float32), labels, 10, 0, spec, MNIST_CLASS_NAMES)
    return _load_folder(Path(spec), int(resolution or DEFAULT_FOLDER_RESOLUTION), split, channels)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")


def _load_folder(folder: Path, resolution: int, split: str, channels: int | None) -> Dataset:
    if not folder.exists():
        raise FileNotFoundError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder}: is a file, not a folder of images")
    if split == "heldout":
        raise ValueError(f"{folder}: a folder has no held-out split (only builtin:mnist does)")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    if len(files) > MAX_FOLDER_IMAGES:
        raise ValueError(f"{folder}: {len(files)} files is more than the {MAX_FOLDER_IMAGES} this tool loads")
    images, paths, skipped, unread = [], [], 0, []
    for p in files:
        try:
            images.append(resize_square(load_image(p), resolution))
            paths.append(p)
        except ImageLoadError:
            skipped += 1
            unread.append(p.relative_to(folder).as_posix())
    if not images:
        raise ValueError(f"{folder}: no readable images (skipped {skipped} file{'s' * (skipped != 1)})")
    if skipped:  # one line, naming the files (the first three): the CLI relays it as "ddpm CMD: warning: …"
        from core.messages import printable
        names = ", ".join(unread[:3]) + (f" … ({skipped} in all)" if skipped > 3 else "")
        warnings.warn(printable(f"{folder}: skipped {skipped} file{'s' * (skipped != 1)} that could not be read as "
                                f"images ({names})"), stacklevel=2)
    x = np.stack(images).transpose(0, 3, 1, 2).astype(np.float32)  # N×3×H×W
    grey = bool(np.all(x[:, 0] == x[:, 1]) and np.all(x[:, 1] == x[:, 2]))
    if channels == 1 or (channels is None and grey):
        from core.images import luma
        x = luma(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    parents = sorted({p.parent.relative_to(folder).parts[0] for p in paths if p.parent != folder})
    labels, names = None, ()
    if len(parents) >= 2 and all(p.parent != folder for p in paths):
        names = tuple(parents)
        labels = np.array([names.index(p.relative_to(folder).parts[0]) for p in paths], dtype=np.int64)
    return Dataset(np.ascontiguousarray(x), labels, len(names), skipped, str(folder), names)
