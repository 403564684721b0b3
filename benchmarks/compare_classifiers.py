"""How lenient is each digit classifier? The confident share (p ≥ 0.9, as ``ddpm evaluate`` counts it) of each
classifier on real held-out digits, on samples of digit models, and on four kinds of non-digits — the table in the
README's "The ruler" section.

    python benchmarks/compare_classifiers.py --classifiers resources/classifier OLD_FOLDER \\
        [--models builtin:mnist RUN/model ...] [--n 1000] [--grids docs/ruler]

Samples are drawn exactly as ``ddpm evaluate`` draws them (unconditional DDIM 50, η = 0, seed 0), so the model
columns match its figures. The v1 classifier's weights are in git (``git show 8b6a225:resources/classifier/…``).
With two classifiers and ``--grids PREFIX``, it also writes PREFIX_moved.png (samples of the first model only the
first classifier accepts) and PREFIX_rejected.png (samples the first classifier rejects).

Non-digits, 500 each, from held-out digits i ≠ j of different classes: *overlays* max(x_i, x_j); *chimeras* the
top half of x_i over the bottom half of x_j; *noise* N(0, 1) clipped to [−1, 1]; *blobs* noise blurred by a 5×5 box
filter and thresholded at its 85th percentile.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
import torch.nn.functional as F

from core.classifier import CONFIDENCE, classify, confident_share, load_classifier
from core.data import load_dataset
from core.evaluate import generate
from core.images import make_grid, save_image
from core.models.load import load_model


def non_digits(held, n: int = 500, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    i, j = rng.integers(0, len(held.images), (2, 4 * n))
    keep = held.labels[i] != held.labels[j]
    i, j = i[keep][:n], j[keep][:n]
    overlays = np.maximum(held.images[i], held.images[j])
    chimeras = held.images[i].copy()
    chimeras[..., 14:, :] = held.images[j][..., 14:, :]
    noise = np.clip(rng.standard_normal((n, 1, 28, 28)), -1, 1).astype(np.float32)
    smooth = F.avg_pool2d(torch.from_numpy(rng.standard_normal((n, 1, 28, 28)).astype(np.float32)), 5, 1, 2)
    level = smooth.flatten(1).quantile(0.85, dim=1)[:, None, None, None]
    blobs = torch.where(smooth > level, 1.0, -1.0).numpy()
    return {"overlays": overlays, "chimeras": chimeras, "noise": noise, "blobs": blobs}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--classifiers", nargs="+", required=True, help="classifier folders")
    p.add_argument("--models", nargs="*", default=["builtin:mnist"], help="digit models (SPECs)")
    p.add_argument("--n", type=int, default=1000, help="samples per model")
    p.add_argument("--grids", help="with two classifiers: write PREFIX_moved.png and PREFIX_rejected.png")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    if args.grids and len(args.classifiers) != 2:
        p.error("--grids compares two classifiers: give exactly two to --classifiers")
    torch.set_num_threads(args.threads)

    held = load_dataset("builtin:mnist", split="heldout")
    sets = {"held-out real": held.images}
    for spec in args.models:
        sets[spec] = generate(load_model(spec), args.n, on_batch=lambda done, total, spec=spec: print(
            f"sampling {spec}: {done}/{total}", file=sys.stderr, flush=True))
    sets.update(non_digits(held))
    nets = [load_classifier(folder) for folder in args.classifiers]

    print("| classifier | " + " | ".join(sets) + " |")
    print("|---" * (len(sets) + 1) + "|")
    for folder, net in zip(args.classifiers, nets):
        print(f"| {folder} | " + " | ".join(f"{confident_share(net, x):.1%}" for x in sets.values()) + " |")

    if args.grids:
        x = sets[args.models[0]]
        first, second = (classify(net, x)[0].max(1) >= CONFIDENCE for net in nets)
        for name, mask in (("moved", first & ~second), ("rejected", ~first)):
            save_image(f"{args.grids}_{name}.png", make_grid(x[mask].transpose(0, 2, 3, 1), ncols=12, pad=2))
            print(f"wrote {args.grids}_{name}.png ({int(mask.sum())} samples)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
