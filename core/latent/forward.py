"""The forward process in latent space: encode a photo with the VAE, z_0 = s·E(x_0) (the posterior's mean), and
noise it by eq. 5, z_t = √ᾱ_t·z_0 + √(1−ᾱ_t)·ε, with the pipeline's own schedule — what the UNet actually sees.
One ε (seeded as :func:`core.forward.noise_strip`) serves every t, as in the pixel strip."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from core.forward import noise_strip
from core.latent.pipeline import LatentPipeline, pixels_to_vae_input

CHANNEL_RANGE = 3.0  # latent channels are shown over ±3 (Stable Diffusion's scaled latents have σ ≈ 1)


@dataclass(frozen=True)
class LatentStrip:
    """``x0`` the photo as the VAE saw it (H×W×3 in [−1, 1]); ``z0`` its latents (C×h×w); ``zt`` the noised
    latents (K×C×h×w) at ``t``; ``decoded`` D(z_0/s) then D(z_t/s) for each t (1+K)×H×W×3 in [−1, 1]."""

    x0: np.ndarray
    z0: np.ndarray
    zt: np.ndarray
    t: list[int]
    decoded: np.ndarray


def fit_photo(image: np.ndarray, side: int, height: int | None = None, width: int | None = None) -> np.ndarray:
    """A photo (H×W×3 in [−1, 1]) at the size a latent model should see: exactly ``height``×``width`` when given
    (one of them: the other keeps the aspect), else scaled down so its longer side is at most ``side`` (the
    model's trained size) — a 12-megapixel photo would otherwise make latents the UNet cannot afford."""
    h, w = image.shape[:2]
    if height or width:
        height = height or max(1, round(h * width / w))
        width = width or max(1, round(w * height / h))
    elif max(h, w) > side:
        k = side / max(h, w)
        height, width = max(1, round(h * k)), max(1, round(w * k))
    else:
        return image
    if (height, width) == (h, w):
        return image
    from PIL import Image
    u8 = ((np.clip(image, -1, 1) + 1) * 127.5).round().astype(np.uint8)
    return np.asarray(Image.fromarray(u8).resize((width, height), Image.LANCZOS), dtype=np.float32) / 127.5 - 1.0


def latent_noise_strip(pipe: LatentPipeline, image: np.ndarray, timesteps: list[int], seed: int = 0,
                       schedule=None) -> LatentStrip:
    """Encode ``image`` (H×W×3 in [−1, 1], sides floored to the VAE's factor), noise its latents to each t with
    ``schedule`` (default the pipeline's) and decode every latent with the full VAE."""
    schedule = schedule if schedule is not None else pipe.denoiser.schedule
    for t in timesteps:
        schedule.check_t(t)
    pixels = pixels_to_vae_input(image, pipe.vae_scale_factor)
    z0 = pipe.encode_image(pixels, sample=False)[0].cpu().numpy()
    zt = noise_strip(z0, schedule, list(timesteps), seed)
    with torch.inference_mode():
        decoded = pipe.decode(torch.from_numpy(np.concatenate([z0[None], zt]))).clamp(-1, 1).cpu().numpy()
    x0 = pixels[0].numpy().transpose(1, 2, 0)
    return LatentStrip(x0, z0, zt, list(timesteps), decoded.transpose(0, 2, 3, 1))


def channel_view(z: np.ndarray, height: int, width: int) -> np.ndarray:
    """The latent channels of ``z`` (C×h×w) tiled 2 per row as grey images over ±:data:`CHANNEL_RANGE`, scaled
    (nearest) to fit ``height``×``width``: H×W×3 in [−1, 1], white padding."""
    c, h, w = z.shape
    cols = 2 if c > 1 else 1
    rows = -(-c // cols)
    tiles = np.ones((rows * h, cols * w), np.float32)
    for i in range(c):
        r, k = divmod(i, cols)
        tiles[r * h:(r + 1) * h, k * w:(k + 1) * w] = np.clip(z[i] / CHANNEL_RANGE, -1, 1)
    sy, sx = max(1, height // (rows * h)), max(1, width // (cols * w))
    s = min(sy, sx)
    big = np.repeat(np.repeat(tiles, s, 0), s, 1)
    out = np.ones((height, width), np.float32)
    bh, bw = min(height, big.shape[0]), min(width, big.shape[1])
    out[:bh, :bw] = big[:bh, :bw]
    return np.repeat(out[..., None], 3, axis=2)
