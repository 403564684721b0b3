"""Training data that streams from disk: a folder of images decoded, centre-cropped and resized in DataLoader
worker processes, so a run's memory does not grow with the folder (the built-in MNIST stays in memory).

- :func:`open_folder` lists the folder (searched recursively; sub-folders = classes, as :func:`core.data.load_dataset`)
  and scans it once, in worker processes, one image at a time: files that fail to load are counted in ``skipped``
  and warned about in one line, as :func:`core.data.load_dataset` does, and the channel count is found (1 if every
  image is grey). What stays in memory is the list of names and the labels, not the pixels. Under ``torchrun`` rank 0
  scans and hands the result to the others (:func:`core.distributed.broadcast_object`).
- :class:`FolderImages` is the ``torch.utils.data.Dataset`` of those files: item ``i`` is a C×H×W float32 tensor in
  [−1, 1], made exactly as ``load_dataset`` makes it (Lanczos resize of the centre square, BT.601 luma for grey),
  so a streamed run and an in-memory run see the same pixels.
- :func:`epoch_order` / :class:`RankBatches`: the order of the data. Epoch ``e`` is a permutation of the images
  seeded by (seed, e); the run consumes it as one stream of positions, the optimizer step ``s`` taking the next
  global batch (world × per-rank batch × accumulation) and rank ``r`` the ``r``-th slice of each micro-batch, so the
  ranks draw disjoint shards of every epoch and the global batch does not depend on how it is split. The order is a
  function of the position alone: a resumed run continues it exactly.
- :func:`pack_folder` (optional, ``ddpm train --pack-shards``): the folder decoded once at the model's resolution
  into uint8 ``.npy`` shards; :func:`open_folder` on a packed folder memory-maps them (no decoding per epoch; pages
  are the file's, shared and reclaimable, so memory still does not grow with the data).
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from core.images import ImageLoadError, load_image, luma, resize_square

PACK_INDEX = "ddpm_shards.json"
PACK_FORMAT = "ddpm-studio.shards"
SHARD_IMAGES = 4096
_MASK = (1 << 63) - 1


# ----- the order of the data -------------------------------------------------------------------------------
def _mix(seed: int, epoch: int) -> int:
    """A 63-bit seed for epoch ``epoch`` of a run seeded ``seed`` (splitmix64's finaliser: nearby inputs, far seeds)."""
    z = (int(seed) * 0x9E3779B97F4A7C15 + int(epoch) + 1) & ((1 << 64) - 1)
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & ((1 << 64) - 1)
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & ((1 << 64) - 1)
    return (z ^ (z >> 31)) & _MASK


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The permutation of ``n`` images that epoch ``epoch`` of a run seeded ``seed`` walks through."""
    return torch.randperm(int(n), generator=torch.Generator().manual_seed(_mix(seed, epoch))).numpy()


class DataOrder:
    """Positions → image indices (position p is image ``epoch_order(n, seed, p // n)[p % n]``)."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed = int(n), int(seed)
        self._epoch, self._perm = -1, None

    def take(self, position: int, count: int) -> np.ndarray:
        out = np.empty(int(count), np.int64)
        done = 0
        while done < count:
            p = position + done
            epoch, offset = divmod(p, self.n)
            if epoch != self._epoch:
                self._epoch, self._perm = epoch, epoch_order(self.n, self.seed, epoch)
            k = min(count - done, self.n - offset)
            out[done:done + k] = self._perm[offset:offset + k]
            done += k
        return out


def shard_of(position: int, micro: int, world: int, rank: int, batch: int) -> int:
    """Where rank ``rank``'s ``batch`` samples of micro-batch ``micro`` start, for a step starting at ``position``."""
    return int(position) + (int(micro) * int(world) + int(rank)) * int(batch)


class RankBatches(torch.utils.data.Sampler):
    """A DataLoader ``batch_sampler``: this rank's index lists, one per micro-batch, from global ``position`` on
    (endless; the loop takes what it needs). ``accumulate`` micro-batches make one optimizer step."""

    def __init__(self, n: int, seed: int, position: int, world: int, rank: int, batch: int, accumulate: int):
        self.n, self.seed, self.position = n, seed, int(position)
        self.world, self.rank, self.batch, self.accumulate = world, rank, batch, accumulate

    def __iter__(self):
        order = DataOrder(self.n, self.seed)
        pos, step_size = self.position, self.world * self.batch * self.accumulate
        while True:
            for k in range(self.accumulate):
                yield order.take(shard_of(pos, k, self.world, self.rank, self.batch), self.batch).tolist()
            pos += step_size

    def __len__(self):  # endless; DataLoader only asks when told to
        return 1 << 62


# ----- the folder ------------------------------------------------------------------------------------------
def _to_chw(img: np.ndarray, resolution: int, channels: int) -> np.ndarray:
    x = resize_square(img, resolution)  # H×W×3 float32 in [−1, 1]
    if channels == 1:
        x = luma(x)
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)


class FolderImages(torch.utils.data.Dataset):
    """The readable images of a folder (``files`` relative to ``root``), decoded on demand → C×H×W float32; or a
    packed folder's shards (memory-mapped uint8, N×C×H×W each)."""

    def __init__(self, root, files, resolution: int, channels: int, shards=None):
        self.root, self.files = str(root), files
        self.resolution, self.channels = int(resolution), int(channels)
        self._shard_paths = shards  # [(path, count), …] for a packed folder
        self._maps = None
        if shards is not None:
            self._starts = np.cumsum([0] + [c for _, c in shards])

    def __len__(self) -> int:
        return int(self._starts[-1]) if self._shard_paths is not None else len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        if self._shard_paths is not None:
            if self._maps is None:  # opened in the worker that reads them
                self._maps = [np.load(p, mmap_mode="r") for p, _ in self._shard_paths]
            k = int(np.searchsorted(self._starts, i, "right") - 1)
            u8 = np.asarray(self._maps[k][i - self._starts[k]])
            return torch.from_numpy(u8.astype(np.float32) / 127.5 - 1.0)
        path = os.path.join(self.root, self.files[i])
        try:
            img = load_image(path)
        except ImageLoadError as e:  # it read at the scan: the file changed since
            raise ImageLoadError(f"{path}: could not be read any more during training ({e})") from None
        return torch.from_numpy(_to_chw(img, self.resolution, self.channels))


class _Scan(torch.utils.data.Dataset):
    """Item i: (readable, grey) of file i, decoded and dropped at once."""

    def __init__(self, root, files):
        self.root, self.files = str(root), files

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        try:
            x = load_image(os.path.join(self.root, self.files[i]))
        except ImageLoadError:
            return False, False
        return True, bool(np.array_equal(x[..., 0], x[..., 1]) and np.array_equal(x[..., 1], x[..., 2]))


def _collate_lists(batch):
    return batch


@dataclass
class StreamingDataset:
    """A folder as :mod:`core.train` uses it (the attributes of :class:`core.data.Dataset` but ``images``):
    ``source`` is the :class:`FolderImages`; ``labels`` int64 (N,) or None."""

    source: FolderImages
    labels: np.ndarray | None = None
    num_classes: int = 0
    skipped: int = 0
    name: str = "data"
    class_names: tuple = field(default_factory=tuple)
    streaming: bool = True

    def __len__(self) -> int:
        return len(self.source)

    @property
    def channels(self) -> int:
        return self.source.channels

    @property
    def resolution(self) -> int:
        return self.source.resolution


def default_workers() -> int:
    """DataLoader workers per rank: one per spare core, at most 8 (0 = decode in the training process)."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        import core.distributed as D
        n = max(1, n // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", D.world()))))
    except Exception:  # noqa: BLE001
        pass
    return max(0, min(8, n - 1))


def list_folder(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and not p.name.startswith(".") and p.name != PACK_INDEX
                  and not (p.parent == folder / "shards" and (folder / PACK_INDEX).is_file()))


def scan_folder(folder: Path, files: list[str], workers: int) -> tuple[np.ndarray, np.ndarray]:
    """(readable, grey) per file, decoded one at a time in ``workers`` processes."""
    ok = np.zeros(len(files), bool)
    grey = np.zeros(len(files), bool)
    loader = torch.utils.data.DataLoader(_Scan(folder, files), batch_size=256, num_workers=workers,
                                         collate_fn=_collate_lists)
    i = 0
    for chunk in loader:
        for r, g in chunk:
            ok[i], grey[i] = r, g
            i += 1
    return ok, grey


def open_folder(folder, resolution: int, channels: int | None = None, workers: int | None = None
                ) -> StreamingDataset:
    """A folder of images (or one packed by :func:`pack_folder`) as a :class:`StreamingDataset`; see the module
    docstring. Raises one-line errors as :func:`core.data.load_dataset` does."""
    import core.distributed as D
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder}: is a file, not a folder of images")
    if (folder / PACK_INDEX).is_file():
        return _open_packed(folder, resolution, channels)
    workers = default_workers() if workers is None else int(workers)
    scanned = None
    if D.is_main():
        try:
            files = list_folder(folder)
            ok, grey = scan_folder(folder, files, workers)
            scanned = (files, ok, grey)
        except BaseException as e:  # every rank fails with the same line, none waits for a scan that never comes
            scanned = e
    scanned = D.broadcast_object(scanned)
    if isinstance(scanned, BaseException):
        raise scanned
    files, ok, grey = scanned
    skipped = int((~ok).sum())
    unread = [f for f, r in zip(files, ok) if not r]
    readable = [f for f, r in zip(files, ok) if r]
    if not readable:
        raise ValueError(f"{folder}: no readable images (skipped {skipped} file{'s' * (skipped != 1)})")
    if skipped and D.is_main():
        from core.messages import printable
        names = ", ".join(unread[:3]) + (f" … ({skipped} in all)" if skipped > 3 else "")
        warnings.warn(printable(f"{folder}: skipped {skipped} file{'s' * (skipped != 1)} that could not be read as "
                                f"images ({names})"), stacklevel=2)
    if channels is None:
        channels = 1 if bool(grey[ok].all()) else 3
    labels, names = _labels(readable)
    return StreamingDataset(FolderImages(folder, readable, resolution, channels), labels, len(names), skipped,
                            str(folder), names)


def _labels(files: list[str]) -> tuple[np.ndarray | None, tuple]:
    """Sub-folders as classes (two or more, and no image at the top), as :func:`core.data.load_dataset`."""
    tops = [f.split("/", 1)[0] if "/" in f else None for f in files]
    parents = sorted({t for t in tops if t is not None})
    if len(parents) >= 2 and all(t is not None for t in tops):
        return np.array([parents.index(t) for t in tops], dtype=np.int64), tuple(parents)
    return None, ()


# ----- packed shards ---------------------------------------------------------------------------------------
def pack_folder(folder, out, resolution: int, channels: int | None = None, workers: int | None = None,
                shard_images: int = SHARD_IMAGES) -> Path:
    """Decode ``folder`` once at ``resolution`` into ``out`` (``ddpm_shards.json`` + ``shards/NNNNN.npy``, uint8
    N×C×H×W, on the 8-bit grid); returns ``out``. The result trains like the folder (same labels, same skipped
    count) with no decoding per epoch."""
    data = open_folder(folder, resolution, channels, workers)
    out = Path(out)
    (out / "shards").mkdir(parents=True, exist_ok=True)
    workers = default_workers() if workers is None else int(workers)
    loader = torch.utils.data.DataLoader(data.source, batch_size=256, num_workers=workers)
    shards, buf, count = [], np.zeros((0, data.channels, resolution, resolution), np.uint8), 0

    def write(arr):
        name = f"shards/{len(shards):05d}.npy"
        np.save(out / name, arr)
        shards.append([name, int(len(arr))])

    for x in loader:
        u8 = np.clip(np.round((x.numpy() + 1.0) * 127.5), 0, 255).astype(np.uint8)
        buf = np.concatenate([buf, u8])
        count += len(u8)
        while len(buf) >= shard_images:
            write(buf[:shard_images])
            buf = buf[shard_images:]
    if len(buf):
        write(buf)
    index = {"format": PACK_FORMAT, "resolution": int(resolution), "channels": data.channels,
             "count": count, "skipped": data.skipped, "shards": shards,
             "labels": data.labels.tolist() if data.labels is not None else None,
             "class_names": list(data.class_names), "source": str(folder)}
    (out / PACK_INDEX).write_text(json.dumps(index), encoding="utf-8")
    return out


def _open_packed(folder: Path, resolution: int, channels: int | None) -> StreamingDataset:
    index = json.loads((folder / PACK_INDEX).read_text(encoding="utf-8"))
    if index.get("format") != PACK_FORMAT:
        raise ValueError(f"{folder / PACK_INDEX}: not a DDPM Studio shard index")
    if int(index["resolution"]) != int(resolution):
        raise ValueError(f"{folder}: packed at {index['resolution']} px, not {resolution}; pack it again at "
                         f"{resolution} or train at {index['resolution']}")
    if channels is not None and int(channels) != int(index["channels"]):
        raise ValueError(f"{folder}: packed with {index['channels']} channels, not {channels}")
    labels = np.array(index["labels"], np.int64) if index.get("labels") is not None else None
    names = tuple(index.get("class_names") or ())
    shards = [(str(folder / name), int(n)) for name, n in index["shards"]]
    src = FolderImages(folder, None, int(index["resolution"]), int(index["channels"]), shards=shards)
    return StreamingDataset(src, labels, len(names), int(index.get("skipped", 0)), str(folder), names)
