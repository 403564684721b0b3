"""The digit classifier that scores generated digits (``ddpm evaluate``), and the script that trains it.

A small CNN (two conv blocks, 3×3 convs + max-pool, then a 128-wide feature layer and a linear head), trained on
the built-in MNIST *training* split only (the held-out 10% stays unseen, so its accuracy there is honest). Its
128-d penultimate features play the role Inception features play in FID (Heusel et al. 2017).

Weights live in ``resources/classifier/`` as ``classifier.safetensors`` + ``classifier.json`` (architecture,
training recipe, held-out accuracy). Retrain with ``python -m core.classifier`` (about a minute on 2 CPU cores).
"""
from __future__ import annotations

import json
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


class DigitClassifier(nn.Module):
    """28×28×1 in [−1, 1] → 10 logits; :meth:`features` gives the 128-d penultimate activations."""

    def __init__(self, width: int = 16, features: int = FEATURES):
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


def random_shift(x: torch.Tensor, g: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Translate each image by up to ±max_shift pixels (background −1 fills in): cheap augmentation."""
    n = len(x)
    padded = F.pad(x, (max_shift,) * 4, value=-1.0)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=g)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=g)
    size = x.shape[-1]
    return torch.stack([padded[i, :, dy[i]:dy[i] + size, dx[i]:dx[i] + size] for i in range(n)])


def train_classifier(epochs: int = 12, batch: int = 64, lr: float = 1e-3, seed: int = 0, width: int = 16,
                     log=print) -> tuple[DigitClassifier, dict]:
    """Adam, cosine-decayed lr, ±2-pixel shifts, on the built-in training split; returns the net and its metadata
    (including accuracy on the held-out split it never saw)."""
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
            loss = F.cross_entropy(net(random_shift(x[idx], g)), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        net.eval()
        acc = float((classify(net, held.images)[0].argmax(1) == held.labels).mean())
        log(f"epoch {epoch + 1}/{epochs}: train loss {total / len(x):.4f}, held-out accuracy {acc:.4f}")
    meta = {"format": "ddpm-studio.digit-classifier", "version": 1, "width": width, "features": FEATURES,
            "trained_on": "builtin:mnist train split (4,500 digits)", "epochs": epochs, "batch": batch, "lr": lr,
            "seed": seed, "augmentation": "random ±2-pixel shifts", "heldout_accuracy": acc,
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
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    net, meta = train_classifier(epochs=args.epochs, seed=args.seed)
    folder = save_classifier(net, meta, args.out)
    print(f"wrote {folder} (held-out accuracy {meta['heldout_accuracy']:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
