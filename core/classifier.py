"""The digit classifier that scores generated digits (``ddpm evaluate``), and the script that trains it.

A small CNN (two conv blocks, 3×3 convs + max-pool, then a 128-wide feature layer and a linear head), trained on
the built-in MNIST *training* split only. The held-out 10% is never trained on; it chose the recipe, so its
figures there are validation figures. Its 128-d penultimate features play the role Inception features play in
FID (Heusel et al. 2017).

``ddpm evaluate`` counts a sample as a recognisable digit when the top class probability is ≥ 0.9, so the
classifier's confidence has to mean something both ways:

- on real digits it should be high: random affine jitter (±10° rotation, ±10% scale, ±2 px shift) teaches the
  ordinary variation of handwriting;
- on things that are no digit at all it should be low. A plain CNN calls most pure-noise images a confident digit.
  Outlier exposure (Hendrycks et al. 2019, "Deep Anomaly Detection with Outlier Exposure", eq. 1) adds
  λ·E[H(U, p(·|x_out))] to the loss: the cross-entropy from the uniform distribution U on noise images x_out.

Weights live in ``resources/classifier/`` as ``classifier.safetensors`` + ``classifier.json`` (architecture,
training recipe and its figures: held-out accuracy, confident share of held-out digits and of noise). Retrain with
``python -m core.classifier`` (2–3 minutes on 2 CPU cores).
"""
from __future__ import annotations

import json
import math
import sys
import time
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

WEIGHTS, META = "classifier.safetensors", "classifier.json"
FEATURES = 128
CONFIDENCE = 0.9  # a sample is "a recognisable digit" when its top class probability reaches this


class DigitClassifier(nn.Module):
    """28×28×1 in [−1, 1] → 10 logits; :meth:`features` gives the 128-d penultimate activations."""

    def __init__(self, width: int = 32, features: int = FEATURES):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            nn.ReLU(), nn.MaxPool2d(2))
        self.fc = nn.Linear(2 * width * 7 * 7, features)
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(features, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fc(self.conv(x).flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))


def classifier_dir() -> Path:
    return Path(str(resources.files("resources").joinpath("classifier")))


def load_classifier(folder=None) -> DigitClassifier:
    """The shipped classifier (eval mode, CPU). One-line error if its files are missing."""
    from core.models.checkpoint import read_json, read_safetensors
    folder = Path(folder) if folder is not None else classifier_dir()
    meta_path = folder / META
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path}: the digit classifier is missing (run python -m core.classifier)")
    meta = read_json(meta_path, "classifier description")
    net = DigitClassifier(width=int(meta.get("width", 16)), features=int(meta.get("features", FEATURES)))
    net.load_state_dict(read_safetensors(folder / WEIGHTS))
    return net.eval()


@torch.no_grad()
def classify(net: DigitClassifier, images, batch: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """Images N×1×28×28 in [−1, 1] (numpy or torch) → (softmax probabilities N×10, features N×128), float64."""
    x = torch.as_tensor(np.asarray(images, dtype=np.float32))
    probs, feats = [], []
    for i in range(0, len(x), batch):
        f = net.features(x[i:i + batch])
        probs.append(torch.softmax(net.head(f), dim=1).double())
        feats.append(f.double())
    return torch.cat(probs).numpy(), torch.cat(feats).numpy()


def random_affine(x: torch.Tensor, g: torch.Generator, degrees: float = 10.0, scale: float = 0.1,
                  shift: float = 2.0) -> torch.Tensor:
    """Rotate, scale and translate each image of x (N×1×H×W in [−1, 1]) at random, bilinearly; background −1."""
    n, size = len(x), x.shape[-1]
    angle = (torch.rand(n, generator=g) * 2 - 1) * math.radians(degrees)
    zoom = 1 + (torch.rand(n, generator=g) * 2 - 1) * scale
    move = (torch.rand(n, 2, generator=g) * 2 - 1) * (2 * shift / size)  # grid units: 2/size per pixel
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, move[:, 0]], 1), torch.stack([sin, cos, move[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x + 1, grid, align_corners=False, padding_mode="zeros") - 1


def noise_images(n: int, g: torch.Generator, size: int = 28) -> torch.Tensor:
    """Outliers for outlier exposure: Gaussian noise, σ uniform in [0.5, 1.5], clipped to [−1, 1]."""
    sigma = 0.5 + torch.rand(n, 1, 1, 1, generator=g)
    return (torch.randn(n, 1, size, size, generator=g) * sigma).clamp(-1, 1)


def confident_share(net: DigitClassifier, images) -> float:
    """The share of images whose top class probability is ≥ :data:`CONFIDENCE` (as ``ddpm evaluate`` counts)."""
    return float((classify(net, images)[0].max(1) >= CONFIDENCE).mean())


def train_classifier(epochs: int = 30, batch: int = 64, lr: float = 1e-3, seed: int = 0, width: int = 32,
                     outlier_weight: float = 0.1, log=print) -> tuple[DigitClassifier, dict]:
    """Adam with a one-cycle lr, random affine jitter and outlier exposure on noise (see the module docstring),
    on the built-in training split; returns the net and its metadata, with its figures on data it never saw."""
    from core.data import load_dataset
    train, held = load_dataset("builtin:mnist", split="train"), load_dataset("builtin:mnist", split="heldout")
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    net = DigitClassifier(width=width)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    x, y = torch.from_numpy(train.images), torch.from_numpy(train.labels)
    steps = epochs * ((len(x) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    start = time.perf_counter()
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(x), generator=g)
        total = 0.0
        for i in range(0, len(x), batch):
            idx = order[i:i + batch]
            loss = F.cross_entropy(net(random_affine(x[idx], g)), y[idx])
            if outlier_weight:
                # H(U, p) = −(1/10) Σ_k log p_k on noise: pushes p towards uniform where there is no digit
                outlier_logits = net(noise_images(max(1, len(idx) // 2), g))
                loss = loss - outlier_weight * F.log_softmax(outlier_logits, dim=1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        net.eval()
        acc = float((classify(net, held.images)[0].argmax(1) == held.labels).mean())
        log(f"epoch {epoch + 1}/{epochs}: train loss {total / len(x):.4f}, held-out accuracy {acc:.4f}")
    fresh_noise = noise_images(1000, torch.Generator().manual_seed(seed + 10_000))
    meta = {"format": "ddpm-studio.digit-classifier", "version": 2, "width": width, "features": FEATURES,
            "trained_on": "builtin:mnist train split (4,500 digits)", "epochs": epochs, "batch": batch, "lr": lr,
            "seed": seed, "augmentation": "random affine: ±10° rotation, ±10% scale, ±2 px shift",
            "outlier_exposure": {"weight": outlier_weight, "outliers": "Gaussian noise, σ in [0.5, 1.5], clipped"},
            "heldout_accuracy": acc, "heldout_confident_share": confident_share(net, held.images),
            "noise_confident_share": confident_share(net, fresh_noise),
            "train_seconds": round(time.perf_counter() - start, 1), "command": "python -m core.classifier"}
    return net.eval(), meta


def save_classifier(net: DigitClassifier, meta: dict, folder=None) -> Path:
    from safetensors.torch import save_file

    from core.atomic import atomic_dir
    folder = Path(folder) if folder is not None else classifier_dir()
    with atomic_dir(folder) as tmp:
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp / WEIGHTS))
        (tmp / META).write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return folder


def main(argv=None) -> int:
    import argparse
    p = argparse.ArgumentParser(prog="python -m core.classifier",
                                description="Train the digit classifier used by ddpm evaluate.")
    p.add_argument("--out", help="output folder (default resources/classifier)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=32, help="channels of the first conv block")
    p.add_argument("--outlier-weight", type=float, default=0.1,
                   help="weight λ of outlier exposure on noise (0 turns it off)")
    args = p.parse_args(argv)
    if args.epochs < 1 or args.width < 1 or args.outlier_weight < 0:
        p.error("--epochs and --width must be ≥ 1 and --outlier-weight ≥ 0")
    net, meta = train_classifier(epochs=args.epochs, seed=args.seed, width=args.width,
                                 outlier_weight=args.outlier_weight)
    folder = save_classifier(net, meta, args.out)
    print(f"wrote {folder} (held-out accuracy {meta['heldout_accuracy']:.4f}, confident on "
          f"{meta['heldout_confident_share']:.1%} of held-out digits and {meta['noise_confident_share']:.1%} of noise)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
