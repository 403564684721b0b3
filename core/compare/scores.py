"""A cell's scores where a ground truth exists: the built-in digit classifier's confident and on-label shares for
1×28×28 digits (as ``ddpm evaluate`` counts them), and for the oracle the pixel L2 distance of each sample to its
nearest training image (0 = a copy: the oracle's lesson)."""
from __future__ import annotations

import numpy as np

# the figures a cell can carry, for menus, CSV columns and the plot: key → (label, higher is better)
SCORES = {"confident_share": ("confident share (classifier p ≥ 0.9)", True),
          "on_label_share": ("on-label share", True),
          "nearest_train_distance": ("mean distance to the nearest training image", False),
          "seconds": ("seconds (the cell's share of the calls)", False),
          "model_calls": ("model calls", False)}


class Scorer:
    """Scores finished cells; loads the classifier once, on first use."""

    def __init__(self):
        self._net = None
        self._missing: str | None = None

    def __call__(self, images: np.ndarray, denoiser, labels) -> dict:
        out: dict = {}
        from core.models.oracle import OracleDenoiser
        if isinstance(denoiser, OracleDenoiser) and tuple(denoiser.images.shape[1:]) == tuple(images.shape[1:]):
            from core.evaluate import nearest_train_distances
            train = denoiser.images.detach().float().cpu().numpy()
            d = nearest_train_distances(images, train, k=1)[:, 0]
            out["nearest_train_distance"] = float(d.mean())
            out["nearest_train_distances"] = [float(v) for v in d]
        if tuple(images.shape[1:]) == (1, 28, 28):
            net = self._classifier()
            if net is not None:
                from core.classifier import CONFIDENCE, classify
                probs, _ = classify(net, images)
                out["confident_share"] = float((probs.max(1) >= CONFIDENCE).mean())
                if labels is not None:
                    y = np.broadcast_to(np.asarray(labels, np.int64).reshape(-1), (len(images),))
                    keep = y >= 0
                    if keep.any():
                        out["on_label_share"] = float((probs.argmax(1)[keep] == y[keep]).mean())
        return out

    def _classifier(self):
        if self._net is None and self._missing is None:
            try:
                from core.classifier import load_classifier
                self._net = load_classifier()
            except (OSError, ValueError) as e:  # no classifier files: no classifier scores
                self._missing = str(e)
        return self._net
