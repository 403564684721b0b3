"""The digit classifier that scores generated digits (``ddpm evaluate``): the network, loading it, classifying.
Its training is :mod:`core.classifier.train`; ``python -m core.classifier`` retrains it.

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


def confident_share(net: DigitClassifier, images) -> float:
    """The share of images whose top class probability is ≥ :data:`CONFIDENCE` (as ``ddpm evaluate`` counts)."""
    return float((classify(net, images)[0].max(1) >= CONFIDENCE).mean())
