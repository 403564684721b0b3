"""One model evaluation per step, with classifier-free guidance (Ho & Salimans 2022, eq. 6):

    out = out_uncond + w · (out_cond − out_uncond)

computed in one batched call on [x_t; x_t] with [null; y] labels. The combination is linear, so it is the same for
ε, x_0 and v outputs. w = 1 is plain conditional sampling (one un-doubled call)."""
from __future__ import annotations

import torch


class GuidedModel:
    """Calls ``denoiser.model_output`` for a fixed batch: labels, the doubled batch and null labels are built once."""

    def __init__(self, denoiser, schedule, labels: torch.Tensor | None, guidance: float, autocast):
        self.denoiser, self.schedule, self.autocast = denoiser, schedule, autocast
        self.labels = labels
        self.guided = labels is not None and guidance != 1.0
        self.w = float(guidance)
        if self.guided:
            self.labels = torch.cat([torch.full_like(labels, -1), labels])

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x: B×C×H×W; t: (B,) timesteps (already doubled to (2B,) by the caller when guided)."""
        with self.autocast:
            if not self.guided:
                out = self.denoiser.model_output(x, t, class_labels=self.labels, schedule=self.schedule)
            else:
                both = self.denoiser.model_output(torch.cat([x, x]), t, class_labels=self.labels,
                                                  schedule=self.schedule)
                uncond, cond = both.chunk(2)
                out = torch.lerp(uncond.float(), cond.float(), self.w)
        return out if out.dtype == x.dtype else out.to(x.dtype)


def labels_each_class(n: int, num_classes: int) -> list[int]:
    """"Each class in turn": image i of a batch of ``n`` gets class i mod K (K = ``num_classes``), so every class
    appears ⌊n/K⌋ or ⌈n/K⌉ times, in order 0, 1, …, K−1, 0, 1, … (Generate's batch, the evaluation's samples, the
    training preview's grid)."""
    n, k = int(n), int(num_classes)
    if k < 1:
        raise ValueError(f"each class in turn needs a class-conditional model (K = {k})")
    if n < 0:
        raise ValueError(f"a batch of {n} images")
    return [i % k for i in range(n)]
