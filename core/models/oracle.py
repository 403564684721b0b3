"""The exact denoiser of a finite training set — no training, any schedule.

If the data distribution is the empirical one, p(x_0) = (1/N) Σ_i δ(x_0 − x_i), then under q(x_t | x_0) =
N(√ᾱ_t·x_0, (1−ᾱ_t)·I) (eq. 5) the posterior over training images is a softmax and the ideal x̂_0 is its mean:

    w_i(x_t) = softmax_i( −‖x_t − √ᾱ_t·x_i‖² / (2(1−ᾱ_t)) ),      E[x_0 | x_t] = Σ_i w_i · x_i.

This is the minimiser of the DDPM loss over all functions (Ho et al. 2020, eq. 12, with ε̂ = (x_t − √ᾱ_t·x̂_0)/
√(1−ᾱ_t)), so sampling with it reproduces training images: the lesson that a perfect denoiser memorises.

Computation: expand ‖x_t − a·x_i‖² = ‖x_t‖² − 2a⟨x_t, x_i⟩ + a²‖x_i‖² and drop the term constant in i, after
centring on the data mean (the same logits, less float32 cancellation). The softmax runs in log space, one chunk
of training images at a time with a running maximum (online log-sum-exp), so memory stays B × chunk.
"""
from __future__ import annotations

import numpy as np
import torch

from core.models.denoiser import Denoiser

DEFAULT_CHUNK = 8192


class OracleDenoiser(Denoiser):
    """``OracleDenoiser(images)`` with images N×C×H×W in [−1, 1]; ``labels`` (N,) make it class-conditional
    (a label restricts the softmax to that class; −1 or ``num_classes`` means all images)."""

    def __init__(self, images, labels=None, num_classes: int | None = None, name: str = "oracle",
                 chunk: int = DEFAULT_CHUNK, dtype: torch.dtype = torch.float32):
        x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
        if x.ndim != 4 or x.shape[0] < 1 or x.shape[2] != x.shape[3] or x.shape[1] not in (1, 3):
            raise ValueError(f"the oracle needs N×C×H×W square images with 1 or 3 channels, got {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise ValueError("the oracle's images contain NaN or inf")
        n, c, h, _ = x.shape
        if labels is not None:
            labels = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels).long()
            if labels.shape != (n,):
                raise ValueError(f"the oracle needs one label per image: {n} images, labels of shape "
                                 f"{tuple(labels.shape)}")
            num_classes = int(labels.max()) + 1 if num_classes is None else int(num_classes)
            if labels.min() < 0 or labels.max() >= num_classes:
                raise ValueError(f"oracle labels must lie in 0…{num_classes - 1}")
        else:
            num_classes = 0
        super().__init__(resolution=h, channels=c, prediction_type="sample", num_classes=num_classes,
                         schedule=None, variance_type="fixed_small", clip_sample=True, name=name)
        self.dtype = dtype
        self.chunk = max(1, int(chunk))
        self.images = x.to(dtype)
        self.labels = labels
        self.class_counts = (torch.bincount(labels, minlength=num_classes).tolist() if labels is not None else [])
        self._prepare()

    def _prepare(self):
        flat = self.images.reshape(self.images.shape[0], -1).to(self.device)
        self._mean = flat.mean(0)
        self._flat = flat - self._mean                     # centred training images  x_i − μ
        self._sq = (self._flat * self._flat).sum(1)        # ‖x_i − μ‖²
        self._labels = self.labels.to(self.device) if self.labels is not None else None

    def to(self, device) -> "OracleDenoiser":
        super().to(device)
        self._prepare()
        return self

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def weights(self, x_t: torch.Tensor, t, schedule, class_labels=None) -> torch.Tensor:
        """The posterior w_i(x_t) over training images, B×N (for plots; :meth:`model_output` never forms it
        whole when N exceeds the chunk)."""
        logits = torch.cat([lg for lg, _ in self._logit_chunks(x_t, t, schedule, class_labels)], dim=1)
        return torch.softmax(logits, dim=1)

    def _logit_chunks(self, x_t, t, schedule, class_labels):
        if schedule is None:
            raise ValueError("the oracle works on any schedule but needs one: pass schedule=…")
        b = x_t.shape[0]
        if tuple(x_t.shape[1:]) != tuple(self.images.shape[1:]):
            raise ValueError(f"x_t has shape {tuple(x_t.shape[1:])}, the oracle's images "
                             f"{tuple(self.images.shape[1:])}")
        t = torch.as_tensor(t).reshape(-1).long().cpu().expand(b)
        ab = torch.tensor(np.asarray(schedule.alphas_cumprod), dtype=torch.float64)[t]
        a = ab.sqrt()
        inv_var = 1.0 / (1.0 - ab).clamp(min=1e-12)  # ᾱ = 0 (zero terminal SNR): equal weights, the data mean
        coef_dot = (a * inv_var).to(self.device, self.dtype)[:, None]          # a / (1−ᾱ)
        coef_sq = (0.5 * ab * inv_var).to(self.device, self.dtype)[:, None]    # a² / (2(1−ᾱ))
        xc = x_t.reshape(b, -1).to(self.dtype) - a.to(self.device, self.dtype)[:, None] * self._mean
        mask_labels = self._class_mask_labels(class_labels, b)
        for start in range(0, self._flat.shape[0], self.chunk):
            part = self._flat[start:start + self.chunk]
            logits = (xc @ part.T) * coef_dot - self._sq[start:start + self.chunk][None] * coef_sq
            if mask_labels is not None:
                other = (self._labels[start:start + self.chunk][None] != mask_labels[:, None]) & (
                    mask_labels[:, None] >= 0)
                logits = logits.masked_fill(other, float("-inf"))
            yield logits, part

    def _class_mask_labels(self, class_labels, b):
        if class_labels is None or self._labels is None:
            return None
        y = torch.as_tensor(class_labels, device=self.device).long().reshape(-1).expand(b)
        y = torch.where(y >= self.num_classes, torch.full_like(y, -1), y)
        for k in set(y.tolist()) - {-1}:
            if self.class_counts[k] == 0:
                raise ValueError(f"the oracle has no training images of class {k}")
        return y

    def model_output(self, x_t, t, class_labels=None, schedule=None) -> torch.Tensor:
        """E[x_0 | x_t] (prediction type ``sample``), by an online log-sum-exp over chunks of training images."""
        b = x_t.shape[0]
        n = self._flat.shape[0]
        m = l = acc = None
        for logits, part in self._logit_chunks(x_t, t, schedule, class_labels):
            if part.shape[0] == n:  # one chunk: a plain softmax
                acc = torch.softmax(logits, dim=1) @ part
                break
            if m is None:
                m = torch.full((b,), float("-inf"), dtype=self.dtype, device=self.device)
                l = torch.zeros(b, dtype=self.dtype, device=self.device)
                acc = torch.zeros(b, part.shape[1], dtype=self.dtype, device=self.device)
            m_new = torch.maximum(m, logits.max(dim=1).values)
            keep = torch.exp(m - m_new).nan_to_num(0.0)            # −inf − (−inf): no image of the class seen yet
            p = torch.exp(logits - m_new[:, None]).nan_to_num(0.0)
            l = l * keep + p.sum(1)
            acc = acc * keep[:, None] + p @ part
            m = m_new
        if l is not None:
            acc = acc / l[:, None]
        x0 = acc + self._mean
        return x0.reshape(b, *self.images.shape[1:]).to(x_t.dtype)
