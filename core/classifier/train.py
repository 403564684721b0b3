"""Training the digit classifier (see :mod:`core.classifier` for the recipe and why): random affine jitter of the
training digits, outlier exposure on Gaussian noise (Hendrycks et al. 2019, eq. 1), Adam with a one-cycle lr."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from core.classifier import FEATURES, META, WEIGHTS, DigitClassifier, classifier_dir, classify, confident_share


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
