"""The variational bound in latent space: L_VLB of a Stable Diffusion UNet on latents z_0 = s·E(x), term by term,
in bits per latent dimension (Rombach et al. 2022 train exactly this bound's simplified form on such latents).

- z_0 is the VAE posterior's **mean** times the scaling factor s (``LatentPipeline.encode_image(sample=False)``):
  one fixed latent per image, so the number is a property of the UNet on that latent.
- L_T = KL(q(z_T | z_0) ‖ N(0, I)) and L_{t−1} = KL(q(z_{t−1} | z_t, z_0) ‖ p_θ(z_{t−1} | z_t)) are the pixel bound's
  own formulas (:func:`core.vlb.bound.bound_events`: the same noise seeds, variances and posterior mean, eq. 14),
  with the UNet's ε̂(z_t, t, τ(prompt)) — the prompt's text embeddings, or τ("") for the unconditional model.
  **Classifier-free guidance does not enter**: a guided ε̃ is not the output of one model, and the bound is of one
  model p_θ(z | c).
- L_0 = −log p_θ(z_0 | z_1) is a **continuous Gaussian density** at z_0 (:func:`~core.vlb.likelihood.
  gaussian_log_likelihood`), not the 8-bit discretized decoder: latents are real numbers, not pixel bins. Its
  variance is the pixel bound's decoder variance (β̃ one step up). A density can exceed 1, so L_0 — and the
  total — can be **negative**: the sum bounds −log₂ p_θ(z_0) per latent dimension, a differential quantity.
- What it bounds is −log p(latents), **not** −log p(pixels): the VAE decoder's own likelihood is not in it. The
  VAE's reconstruction D(z_0/s) is reported beside it as a PSNR (:func:`encode_latents`).

On a CPU a real SD UNet takes seconds a call and the bound needs N·T/batch calls, so :func:`estimate_seconds`
times one call before the run; :func:`latent_bound_events` yields that estimate before the first batch.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from core.messages import format_eta
from core.readout import psnr_db
from core.vlb.bound import DEFAULT_BATCH_SIZE, BoundProgress, BoundResult, bound_events, resolve_variance
from core.vlb.likelihood import gaussian_log_likelihood

LATENT_BATCH_ELEMENTS = 32_768  # latent pixels per UNet pass: 8 latents of 64×64 (SD 1.x at 512²), 125 tiny ones
ENCODE_BATCH = 4                # images per VAE pass
ENCODING = "encoding the images with the VAE"
BOUNDS = "−log p(latents z_0 = s·E(x)), not pixels"


def latent_batch_size(shape) -> int:
    """(z_t, t) pairs per UNet pass for latents of ``shape`` (C×h×w): :data:`LATENT_BATCH_ELEMENTS` latent
    pixels, between 1 and the pixel bound's :data:`~core.vlb.bound.DEFAULT_BATCH_SIZE`."""
    h, w = int(shape[-2]), int(shape[-1])
    return max(1, min(DEFAULT_BATCH_SIZE, LATENT_BATCH_ELEMENTS // (h * w)))


def continuous_decoder_nll(z0, mean, log_scale):
    """L_0 of continuous latents in nats per dimension: −log N(z_0; μ_θ(z_1, 1), σ_0²) — may be negative."""
    return -gaussian_log_likelihood(z0, mean, log_scale)


def encode_latents(pipe, pixels: torch.Tensor, batch: int = ENCODE_BATCH) -> tuple[torch.Tensor, np.ndarray]:
    """(z_0 = s·E(x) as float64 on the CPU, N×C×h×w — the VAE posterior's mean; the VAE's reconstruction PSNR of
    each image in dB, D(z_0/s) clamped to [−1, 1] against x) for ``pixels`` N×3×H×W in [−1, 1]."""
    zs, psnr = [], []
    for i in range(0, len(pixels), batch):
        x = pixels[i:i + batch]
        z = pipe.encode_image(x, sample=False)
        rec = pipe.decode(z).clamp(-1, 1).to("cpu", torch.float64)
        mse = ((rec - x.double()) ** 2).flatten(1).mean(1)
        psnr += [psnr_db(float(m)) for m in mse]
        zs.append(z.to("cpu", torch.float64))
    return torch.cat(zs), np.array(psnr)


def prompt_embeddings(pipe, prompt: str) -> torch.Tensor:
    """τ(prompt) (1×L×D): the condition of the one model whose bound is computed (τ("") is unconditional)."""
    return pipe.encode_prompt(prompt, n=1).embeds


def _checked(denoiser, z0, embeds, schedule, batch_size, device, clip_denoised):
    schedule = schedule if schedule is not None else denoiser.schedule
    z = torch.as_tensor(z0).detach().to("cpu", torch.float64)
    if z.ndim == 3:
        z = z[None]
    if z.ndim != 4 or len(z) == 0:
        raise ValueError(f"latents must be N×C×h×w, got shape {tuple(z.shape)}")
    if z.shape[1] != denoiser.channels:
        raise ValueError(f"latents have {z.shape[1]} channels but the UNet takes {denoiser.channels}")
    if not torch.isfinite(z).all():
        raise ValueError("latents contain NaN or infinity")
    if embeds.shape[0] not in (1, len(z)):
        raise ValueError(f"{embeds.shape[0]} prompt embeddings for {len(z)} latents")
    b = latent_batch_size(z.shape) if batch_size is None else batch_size
    if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 1:
        raise ValueError(f"batch size must be a positive integer, got {batch_size!r}")
    clip = bool(getattr(denoiser, "clip_sample", False) if clip_denoised is None else clip_denoised)
    device = torch.device(device) if device is not None else denoiser.device
    return schedule, z, int(b), clip, device


def _unet_call(denoiser, embeds, schedule, device) -> Callable:
    embeds = embeds.to(device)

    def call(z_t, t, images):
        e = embeds.expand(len(t), *embeds.shape[1:]) if embeds.shape[0] == 1 else embeds[images.to(device)]
        return denoiser.model_output(z_t.to(device), t.to(device), e, schedule=schedule)
    return call


def compute_latent_bound(denoiser, z0, embeds: torch.Tensor, schedule=None, variance: str | None = None, *,
                         batch_size: int | None = None, seed: int = 0, device=None, clip_denoised: bool | None = None):
    """Every term of the bound of a text-conditioned UNet (a :class:`~core.latent.pipeline.TextDenoiser`) on the
    latents ``z0`` (N×C×h×w), conditioned on ``embeds`` (1×L×D for every latent, or N×L×D); a generator of
    :class:`~core.vlb.BoundProgress` events and last the :class:`~core.vlb.BoundResult` (bits per latent dim).
    Defaults: the UNet's own schedule and variance, its ``clip_sample`` (False for SD), a batch of
    :func:`latent_batch_size`. Closing it between events cancels."""
    variance = resolve_variance(variance, denoiser)
    schedule, z, b, clip, device = _checked(denoiser, z0, embeds, schedule, batch_size, device, clip_denoised)
    return bound_events(_unet_call(denoiser, embeds, schedule, device), denoiser.prediction_type, z, schedule,
                        variance, b, int(seed), clip, continuous_decoder_nll)


@dataclass(frozen=True)
class BoundEstimate:
    """How long the bound will take: one timed UNet call on ``batch_size`` latents × ``calls``."""

    seconds: float
    call_seconds: float
    calls: int
    batch_size: int

    def line(self) -> str:
        return (f"estimate ≈ {format_eta(self.seconds)} ({self.seconds:.3g} s): one UNet call on {self.batch_size} "
                f"latent{'s' * (self.batch_size != 1)} took {self.call_seconds:.3g} s × {self.calls} calls")


def estimate_seconds(denoiser, shape, embeds: torch.Tensor, n_images: int, T: int, batch_size: int | None = None,
                     device=None) -> BoundEstimate:
    """Time one UNet call on a full batch of random latents of ``shape`` (C×h×w) and scale it to the N·T/batch
    calls of the bound (a fast call is timed twice, the first being a warm-up)."""
    b = latent_batch_size(shape) if batch_size is None else int(batch_size)
    b = max(1, min(b, n_images * T))
    device = torch.device(device) if device is not None else denoiser.device
    call = _unet_call(denoiser, embeds[:1], denoiser.schedule, device)
    z = torch.randn((b, *shape), generator=torch.Generator().manual_seed(0))
    t = torch.full((b,), T // 2, dtype=torch.long)
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        with torch.inference_mode():
            call(z, t, None)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
        if best > 0.25:
            break
    calls = -(-n_images * T // b)
    return BoundEstimate(best * calls, best, calls, b)


@dataclass(frozen=True, eq=False)
class LatentBound:
    """The bound of a pipeline's UNet on images' latents: ``result`` in bits per latent dimension, the prompt it
    was conditioned on, the VAE's reconstruction PSNR per image, the latents' C×h×w and the run's estimate."""

    result: BoundResult
    prompt: str
    psnr_db: np.ndarray
    latent_shape: tuple
    scaling_factor: float
    estimate: BoundEstimate | None = None

    @property
    def vae_psnr_db(self) -> float:
        return float(np.mean(self.psnr_db))

    def to_dict(self) -> dict:
        """What ``ddpm elbo --model SD --json`` prints (less the run's own keys): the pixel bound's keys, in bits
        per latent dimension, and what they are a bound of."""
        out = self.result.to_dict()
        out.update(space="latent", bounds=BOUNDS, decoder="continuous Gaussian (a density: L_0 may be negative)",
                   prompt=self.prompt, guidance="none: the bound is of one model, conditioned on the prompt",
                   latent_shape=[int(v) for v in self.latent_shape], scaling_factor=self.scaling_factor,
                   vae_psnr_db=self.vae_psnr_db, per_image_vae_psnr_db=[float(v) for v in self.psnr_db],
                   estimate_seconds=None if self.estimate is None else self.estimate.seconds)
        return out


def latent_bound_events(pipe, pixels: torch.Tensor, prompt: str = "", variance: str | None = None, *, seed: int = 0,
                        batch_size: int | None = None, clip_denoised: bool | None = None, estimate: bool = True):
    """The whole latent bound of ``pipe`` (a :class:`~core.latent.pipeline.LatentPipeline`) on ``pixels``
    (N×3×H×W in [−1, 1], sides multiples of the VAE's factor), a generator: yields :data:`ENCODING`, then (with
    ``estimate``) a :class:`BoundEstimate` before the first batch, then every BoundProgress, and last a
    :class:`LatentBound`. Closing it between events cancels."""
    den = pipe.denoiser
    resolve_variance(variance, den)  # a bad choice is refused before the VAE runs
    yield ENCODING
    z0, psnr = encode_latents(pipe, pixels)
    embeds = prompt_embeddings(pipe, prompt)
    events = compute_latent_bound(den, z0, embeds, variance=variance, batch_size=batch_size, seed=seed,
                                  clip_denoised=clip_denoised)
    est = None
    if estimate:
        est = estimate_seconds(den, tuple(z0.shape[1:]), embeds, len(z0), den.schedule.T, batch_size)
        yield est
    try:
        for ev in events:
            if isinstance(ev, BoundResult):
                yield LatentBound(ev, prompt, psnr, tuple(z0.shape[1:]), pipe.scaling_factor, est)
                return
            yield ev
    finally:
        events.close()


def latent_bound(pipe, pixels, prompt: str = "", variance: str | None = None, *,
                 on_event: Callable[[object], None] | None = None, **kwargs) -> LatentBound:
    """Blocking form of :func:`latent_bound_events` (same arguments); ``on_event`` sees every other event."""
    for ev in latent_bound_events(pipe, pixels, prompt, variance, **kwargs):
        if isinstance(ev, LatentBound):
            return ev
        if on_event is not None:
            on_event(ev)
    raise RuntimeError("the latent bound ended without a result")


__all__ = ["BOUNDS", "ENCODING", "BoundEstimate", "BoundProgress", "LatentBound", "compute_latent_bound",
           "continuous_decoder_nll", "encode_latents", "estimate_seconds", "latent_batch_size", "latent_bound",
           "latent_bound_events", "prompt_embeddings"]
