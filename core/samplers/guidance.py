"""One model evaluation per step, with classifier-free guidance (Ho & Salimans 2022, eq. 6):

    out = out_uncond + w · (out_cond − out_uncond)

computed in one batched call on [x_t; x_t] with [null; y] conditions. The combination is linear, so it is the same
for ε, x_0 and v outputs. The condition is a class label (null = −1; w = 1 is plain conditional sampling, one
un-doubled call) or a prompt's text embeddings (:class:`TextCondition`; null = the negative or empty prompt's
embeddings; guided only for w > 1, as diffusers' ``StableDiffusionPipeline``)."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TextCondition:
    """A cross-attention UNet's condition for a batch: the prompt's text embeddings (B×L×D) and the negative (or
    empty) prompt's, the "no condition" side of guidance."""

    embeds: torch.Tensor
    negative: torch.Tensor

    def __len__(self) -> int:
        return int(self.embeds.shape[0])


class GuidedModel:
    """Calls ``denoiser.model_output`` for a fixed batch: the condition, the doubled batch and the null condition
    are built once. ``cond`` is a (B,) label tensor or a :class:`TextCondition`, passed to the model as its third
    argument (``class_labels``, or a cross-attention UNet's ``encoder_hidden_states``)."""

    def __init__(self, denoiser, schedule, cond, guidance: float, autocast, keep_parts: bool = False):
        self.denoiser, self.schedule, self.autocast = denoiser, schedule, autocast
        self.w = float(guidance)
        self.keep_parts = keep_parts
        self.parts = None  # (unconditional, conditional) outputs of the last guided call, when keep_parts
        if isinstance(cond, TextCondition):
            self.guided = self.w > 1.0
            self.cond = torch.cat([cond.negative, cond.embeds]) if self.guided else cond.embeds
        else:
            self.guided = cond is not None and self.w != 1.0
            self.cond = torch.cat([torch.full_like(cond, -1), cond]) if self.guided else cond

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x: B×C×H×W; t: (B,) timesteps (already doubled to (2B,) by the caller when guided)."""
        with self.autocast:
            if not self.guided:
                out = self.denoiser.model_output(x, t, self.cond, schedule=self.schedule)
            else:
                both = self.denoiser.model_output(torch.cat([x, x]), t, self.cond, schedule=self.schedule)
                uncond, cond = both.chunk(2)
                out = torch.lerp(uncond.float(), cond.float(), self.w)
                if self.keep_parts:
                    self.parts = (uncond.float(), cond.float())
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
