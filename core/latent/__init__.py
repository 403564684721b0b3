"""Latent diffusion (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models"): the same
schedules, closed form q(x_t|x_0) and samplers as in pixel space, run on a VAE's latents z = s·E(x) (s the VAE's
``scaling_factor``) with a text-conditioned UNet ε_θ(z_t, t, τ(prompt)).

- :mod:`core.latent.pipeline` — a Stable Diffusion pipeline folder (diffusers layout), loaded offline: UNet, VAE,
  CLIP text encoder and tokenizer, the scheduler config as the samplers' defaults.
- :mod:`core.latent.generate` — text-to-image and image-to-image as generators of latent sampler steps.
- :mod:`core.latent.decoders` — latents → pixels three ways: the full VAE, TAESD, a fitted linear map.
"""
