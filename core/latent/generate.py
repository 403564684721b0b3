"""Text-to-image and image-to-image on a :class:`~core.latent.pipeline.LatentPipeline`, as generators of
:class:`~core.samplers.SamplerStep` over latents — the samplers of :mod:`core.samplers`, unchanged, driving the
text-conditioned UNet with classifier-free guidance ε̃ = ε(z_t, τ(∅ or negative)) + w·(ε(z_t, τ(c)) − ε(z_t, τ(∅)))
in one batched call (Ho & Salimans 2022, eq. 6).

Each step yields x_t and x̂_0 as latents; decoding them is the caller's choice (:mod:`core.latent.decoders`).
Random draws follow diffusers' ``StableDiffusionPipeline`` / ``StableDiffusionImg2ImgPipeline`` with a CPU
generator seeded with ``seed``: (img2img: the VAE posterior's sample, then) the initial latents (init noise
σ = 1 for DDPM, DDIM and DPM-Solver++), then each step's noise — so the same seed gives the same image.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from core.latent.pipeline import LatentPipeline, pixels_to_vae_input
from core.samplers import SamplerError, SamplerStep, default_steps, plan_timesteps, sample

DEFAULT_SAMPLER = "ddim"
DEFAULT_GUIDANCE = 7.5


def text_to_image(pipe: LatentPipeline, prompt, negative_prompt=None, guidance: float = DEFAULT_GUIDANCE,
                  height: int | None = None, width: int | None = None, n: int = 1, seed: int = 0,
                  sampler: str = DEFAULT_SAMPLER, steps: int | None = None, eta: float = 0.0,
                  init_image: np.ndarray | None = None, t_start: int | None = None, strength: float | None = None,
                  **options) -> Iterator[SamplerStep]:
    """Sample ``n`` latents for ``prompt`` (one text, or one per group of images); returns a generator of latent
    steps (the last ``x_t`` is the result; decode it with ``pipe.decode``).

    - ``guidance`` w: classifier-free guidance; w ≤ 1 runs the prompt alone (one un-doubled call), as diffusers.
    - ``height``/``width``: pixels, multiples of the VAE's factor (default: the UNet's trained size).
    - ``init_image`` (H×W×3, uint8 or float in [−1, 1]) with ``t_start``: encode it with the VAE, noise its
      latents to t_start by eq. 5 and denoise from there (SDEdit spacing, as pixel models do); or with
      ``strength`` s ∈ (0, 1]: diffusers' img2img — the last ⌊s·steps⌋ timesteps of the usual spacing.
    - ``options`` go to :func:`core.samplers.sample` (``clip_sample``, ``timestep_spacing``, ``variance_type``,
      ``use_clipped_model_output`` …).
    """
    den = pipe.denoiser
    gen = torch.Generator().manual_seed(int(seed)) if not isinstance(seed, bool) and isinstance(seed, int) else None
    if gen is None:
        raise SamplerError(f"seed must be an integer, got {seed!r}")
    x_start = timesteps = None
    if init_image is not None:
        if (t_start is None) == (strength is None):
            raise SamplerError("an init image needs either t_start (a timestep) or strength (0 < s ≤ 1)")
        pixels = pixels_to_vae_input(init_image, pipe.vae_scale_factor)
        height, width = pixels.shape[-2:]
        x_start = pipe.encode_image(pixels, generator=gen).cpu()  # the posterior's draw comes first
        if strength is not None:
            timesteps = img2img_timesteps(den, sampler, steps, strength, options.get("timestep_spacing"))
            t_start = int(timesteps[0])
    elif t_start is not None or strength is not None:
        raise SamplerError("t_start and strength need an init image")
    size = pipe.latent_size(height, width)
    cond = pipe.encode_prompt(prompt, negative_prompt, n=n)
    return sample(den, sampler=sampler, steps=None if timesteps is not None else steps, eta=eta, n=n,
                  guidance=guidance, condition=cond, size=size, x_start=x_start, t_start=t_start,
                  timesteps=timesteps, generator=gen, device=pipe.device, **options)


def img2img_timesteps(denoiser, sampler: str, steps: int | None, strength: float,
                      timestep_spacing: str | None = None) -> np.ndarray:
    """diffusers' img2img ``get_timesteps``: the usual spacing for ``steps``, keeping its last
    min(⌊strength·steps⌋, steps) timesteps (so the chain starts near strength·T)."""
    strength = float(strength)
    if not 0.0 < strength <= 1.0:
        raise SamplerError(f"strength must be in (0, 1], got {strength}")
    T = denoiser.schedule.T
    steps = default_steps(sampler, T) if steps is None else steps
    spacing = timestep_spacing or getattr(denoiser, "timestep_spacing", None)
    full = plan_timesteps(T, sampler, steps, spacing, getattr(denoiser, "steps_offset", 0))
    keep = min(int(steps * strength), steps)
    if keep < 1:
        raise SamplerError(f"strength {strength} × {steps} steps leaves no step to run; raise either")
    return full[steps - keep:]
