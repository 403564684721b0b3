"""The streaming folder loader (core.data_stream): memory that does not grow with the folder, unreadable files
skipped with a count, the same pixels as the in-memory loader, disjoint rank shards of every epoch, packed shards.

The memory test measures a child process's peak RSS (``ru_maxrss``, its own and its DataLoader worker's) while it
scans a folder and draws 2,000 training samples from it, for 1,000 and for 20,000 PNGs of 24×24 at resolution 32:
in memory, 20,000 images are 20,000 × 3×32×32 float32 = 246 MB; streamed, the peak grows by the list of names
(~2 MB) and stays within 20 MB.
"""
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.data import load_dataset
from core.data_stream import (DataOrder, RankBatches, epoch_order, open_folder, pack_folder, shard_of)

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _pngs(folder: Path, n: int, size: int = 24, start: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(start)
    for i in range(start, start + n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i:05d}.png",
                                                                                    compress_level=0)


_CHILD = r"""
import resource, sys, warnings
import torch
torch.set_num_threads(1)
from core.data_stream import RankBatches, open_folder
warnings.simplefilter("ignore")
data = open_folder(sys.argv[1], 32, workers=1)
loader = torch.utils.data.DataLoader(data.source, num_workers=1,
                                     batch_sampler=RankBatches(len(data), 0, 0, 1, 0, 50, 1))
it = iter(loader)
for _ in range(40):
    x = next(it)
del it, loader
own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(len(data), data.skipped, own, kids)
"""


def _peak_kb(folder) -> tuple[int, int, int, int]:
    out = subprocess.run([sys.executable, "-c", _CHILD, str(folder)], capture_output=True, text=True, timeout=300,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    return tuple(int(v) for v in out.stdout.split())


def test_peak_memory_stays_flat_as_the_folder_grows_from_1000_to_20000_images(tmp_path):
    small, big = tmp_path / "small", tmp_path / "big"
    _pngs(small, 1000)
    _pngs(big, 20_000)
    (big / "broken.png").write_bytes(b"\x89PNG truncated")
    n1, skip1, own1, kids1 = _peak_kb(small)
    n2, skip2, own2, kids2 = _peak_kb(big)
    assert (n1, skip1, n2, skip2) == (1000, 0, 20_000, 1)
    grow_mb = (own2 - own1) / 1024, (kids2 - kids1) / 1024
    print(f"peak RSS: 1,000 images {own1 / 1024:.0f} MB (worker {kids1 / 1024:.0f} MB), 20,000 images "
          f"{own2 / 1024:.0f} MB (worker {kids2 / 1024:.0f} MB)")
    assert grow_mb[0] < 20 and grow_mb[1] < 20, grow_mb  # in memory it would grow by 246 MB


def test_unreadable_files_are_skipped_with_a_count_and_the_pixels_are_the_in_memory_loaders(tmp_path):
    d = tmp_path / "images"
    _pngs(d, 6, size=12)
    (d / "notes.txt").write_text("not an image")
    (d / "zero.png").write_bytes(b"")
    with pytest.warns(UserWarning, match=r"skipped 2 files that could not be read as images \(notes.txt, zero.png\)"):
        data = open_folder(d, 8, workers=0)
    assert len(data) == 6 and data.skipped == 2 and data.channels == 3 and data.labels is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = load_dataset(str(d), 8)
    got = np.stack([data.source[i].numpy() for i in range(len(data))])
    assert np.array_equal(got, ref.images)


def test_grey_images_classes_and_workers(tmp_path):
    d = tmp_path / "images"
    rng = np.random.default_rng(1)
    for c in ("cats", "dogs"):
        (d / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (9, 9), dtype=np.uint8)).convert("RGB").save(d / c / f"{i}.png")
    data = open_folder(d, 8, workers=2)  # the scan runs in two worker processes
    ref = load_dataset(str(d), 8)
    assert data.channels == 1 == ref.channels and data.class_names == ("cats", "dogs") == ref.class_names
    assert np.array_equal(data.labels, ref.labels)
    assert np.array_equal(np.stack([data.source[i].numpy() for i in range(6)]), ref.images)


def test_ranks_draw_disjoint_shards_of_every_epoch_and_the_split_does_not_change_the_global_batch():
    n, seed, b = 10, 3, 2
    for world in (1, 2, 4):
        per_rank = [iter(RankBatches(n, seed, 0, world, r, b, 1)) for r in range(world)]
        seen = []
        for _ in range(n // (world * b) * 3):  # three epochs' worth (some steps straddle epochs)
            step = [next(it) for it in per_rank]
            seen.extend(i for shard in step for i in shard)
        for e in range(len(seen) // n):
            epoch = seen[e * n:(e + 1) * n]
            assert sorted(epoch) == list(range(n))  # each epoch once, split over the ranks without overlap
            assert epoch == epoch_order(n, seed, e).tolist()  # and in the same order whatever the world size
    order = DataOrder(n, seed)
    assert order.take(shard_of(40, 1, 2, 1, 2), 2).tolist() == order.take(46, 2).tolist()
    # accumulation: 1 rank × 2 micro-batches of 2 = 2 ranks × 1 of 2, sample for sample
    acc = iter(RankBatches(n, seed, 0, 1, 0, 2, 2))
    assert [next(acc), next(acc)] == [next(iter(RankBatches(n, seed, 0, 2, r, 2, 1))) for r in range(2)]


def test_packed_shards_train_like_the_folder(tmp_path):
    d = tmp_path / "images"
    _pngs(d, 7, size=12)
    (d / "bad.jpg").write_bytes(b"nope")
    with pytest.warns(UserWarning, match="skipped 1 file"):
        out = pack_folder(d, tmp_path / "packed", 8, workers=0, shard_images=3)
    index = json.loads((out / "ddpm_shards.json").read_text())
    assert index["count"] == 7 and index["skipped"] == 1 and len(index["shards"]) == 3
    packed = open_folder(out, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = open_folder(d, 8, workers=0)
    assert len(packed) == 7 and packed.skipped == 1 and packed.channels == 3
    a = np.stack([packed.source[i].numpy() for i in range(7)])
    b = np.stack([ref.source[i].numpy() for i in range(7)])
    assert np.abs(a - b).max() <= 1 / 127.5 + 1e-6  # the 8-bit grid
    with pytest.raises(ValueError, match="packed at 8 px, not 16"):
        open_folder(out, 16)


def test_a_folder_trains_from_the_stream_and_resumes_exactly(tmp_path):
    from core.train import train
    d = tmp_path / "images"
    _pngs(d, 5, size=10)
    kw = dict(data=str(d), resolution=8, model_size="tiny", batch_size=3, steps=4, sample_every=0,
              checkpoint_every=0, device="cpu", workers=1, hflip=True)
    straight = train(out=str(tmp_path / "a"), **kw)
    assert straight.streaming
    list(straight)
    first = train(out=str(tmp_path / "b"), **{**kw, "steps": 2})
    list(first)
    resumed = train(out=str(tmp_path / "b"), resume=True, **kw)
    list(resumed)
    for p, q in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.equal(p, q)
