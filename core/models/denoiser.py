"""The one interface every sampler, the bound and the GUI use to talk to a model.

A :class:`Denoiser` wraps a network (our UNet, a diffusers UNet2DModel, the exact oracle …) and answers
``model_output(x_t, t, class_labels)`` in its own ``prediction_type`` (ε, x_0 or v); :mod:`core.models.prediction`
converts between them. Timesteps are indices 0…T−1 of the schedule the model was trained with.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from core.schedule import NoiseSchedule

# p_θ(x_{t−1} | x_t)'s fixed variance σ_t² (Ho et al. 2020, §3.2): β̃_t (the true posterior's) or β_t
VARIANCE_TYPES = ("fixed_small", "fixed_large")


@dataclass
class Denoiser:
    """Base class. Subclasses implement :meth:`model_output`.

    Attributes: ``resolution`` (H = W), ``channels`` (1 or 3), ``prediction_type`` ("epsilon" | "sample" |
    "v_prediction"), ``num_classes`` (0 = unconditional), ``schedule`` (the training schedule, or None when the
    model works with any schedule, as the oracle does), ``variance_type`` ("fixed_small" | "fixed_large"),
    ``clip_sample`` (default for x̂_0 clipping), ``name`` (for menus and messages).
    """

    resolution: int
    channels: int
    prediction_type: str = "epsilon"
    num_classes: int = 0
    schedule: NoiseSchedule | None = None
    variance_type: str = "fixed_small"
    clip_sample: bool = True
    name: str = "model"
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def model_output(self, x_t: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None = None,
                     schedule: NoiseSchedule | None = None) -> torch.Tensor:
        """The network's raw prediction for a batch x_t (B×C×H×W) at timesteps t (B,) — ε, x_0 or v.
        ``schedule`` is passed for models that need it (the oracle); networks ignore it."""
        raise NotImplementedError

    def to(self, device) -> "Denoiser":
        self.device = torch.device(device)
        return self


def check_training_T(denoiser, schedule) -> None:
    """Refuse a schedule whose T differs from the one ``denoiser`` was trained with (a network's timestep input
    means nothing on another grid); a model with no schedule of its own (the oracle) takes any. Behind ``ddpm elbo``
    and the bound (:func:`core.vlb.compute_bound`); :func:`core.samplers.sample` refuses with the same words."""
    own = getattr(denoiser, "schedule", None)
    if own is not None and schedule is not None and own.T != schedule.T:
        from core.messages import printable
        raise ValueError(f"{printable(getattr(denoiser, 'name', 'this model'))} was trained with T = {own.T} "
                         f"timesteps; this schedule has T = {schedule.T}")
