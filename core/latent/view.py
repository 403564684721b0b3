"""The main view's latent slider without Qt: a photo encoded once, z_0 = s·E(x_0) (the VAE posterior's mean), its
fixed ε, and what the view shows at each t with the pipeline's schedule — z_t by eq. 5
(z_t = √ᾱ_t·z_0 + √(1−ᾱ_t)·ε), decoded to pixels (the linear map while the slider moves, the full VAE when it
rests), its four channels as grey tiles, the histogram's values and the latent PSNR.

ε follows the pixel view's seed rule: ``draw_noise(z0.shape, seed)`` (:func:`core.forward.draw_noise`), as
:func:`core.latent.forward.latent_noise_strip` and ``ddpm noise --model`` draw it, so a seed means the same z_t.

The latent PSNR is PSNR(z_t, z_0) = 10·log10(peak² / mean((z_t − z_0)²)) in latent units, with the peak-to-peak
:data:`LATENT_PEAK` = 6: the ±3 range the channel tiles show (scaled SD latents have σ ≈ 1), as the pixel PSNR
uses the [−1, 1] range's 2. Its MSE is the closed form of :func:`core.readout.closed_form_mse`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from core.forward import draw_noise, q_sample
from core.images import make_grid, to_uint8
from core.latent.forward import CHANNEL_RANGE, channel_view, fit_photo
from core.readout import HIST_SAMPLES, closed_form_mse, histogram_index, moments, psnr_db
from core.schedule import NoiseSchedule

LATENT_PEAK = 2 * CHANNEL_RANGE   # peak-to-peak of the latent PSNR: the ±3 the channel tiles show


@dataclass(frozen=True)
class LatentPhoto:
    """``x0`` the photo as the VAE saw it (H×W×3 in [−1, 1]: fitted to the model's size, sides floored to the
    VAE's factor); ``z0`` its latents (C×h×w float32); ``noise`` ε = draw_noise(z0.shape, seed); ``moments``
    (E[z_0²], E[z_0 ε], E[ε²]); ``hist_index`` the latents the histogram shows (None: all of them)."""

    x0: np.ndarray
    z0: np.ndarray
    seed: int
    noise: np.ndarray
    moments: tuple[float, float, float]
    hist_index: np.ndarray | None = None

    @classmethod
    def make(cls, x0: np.ndarray, z0: np.ndarray, seed: int) -> "LatentPhoto":
        z0 = np.ascontiguousarray(z0, dtype=np.float32)
        noise = draw_noise(z0.shape, seed).numpy()
        index = histogram_index(z0.size) if z0.size > HIST_SAMPLES else None
        return cls(np.asarray(x0, np.float32), z0, int(seed), noise, moments(z0, noise), index)

    def with_seed(self, seed: int) -> "LatentPhoto":
        """The same latents with the ε of another seed (no model runs)."""
        return self if int(seed) == self.seed else LatentPhoto.make(self.x0, self.z0, seed)

    def at(self, t: int, schedule: NoiseSchedule) -> np.ndarray:
        """z_t = √ᾱ_t·z_0 + √(1−ᾱ_t)·ε (eq. 5), C×h×w float32."""
        return q_sample(self.z0, schedule.check_t(t), self.noise, schedule)

    def mse(self, t: int, schedule: NoiseSchedule) -> float:
        return closed_form_mse(schedule, schedule.check_t(t), self.moments)

    def psnr(self, t: int, schedule: NoiseSchedule) -> float:
        """PSNR(z_t, z_0) in dB, latent units, peak-to-peak :data:`LATENT_PEAK` (see the module docstring)."""
        return latent_psnr(self.mse(t, schedule))

    def hist_values(self, t: int, schedule: NoiseSchedule) -> np.ndarray:
        """The values of z_t the histogram shows: every latent (or a fixed sample above 65,536 of them)."""
        z = self.at(t, schedule).reshape(-1)
        return z if self.hist_index is None else z[self.hist_index]


def latent_psnr(mse: float) -> float:
    """10·log10(:data:`LATENT_PEAK`² / MSE) dB."""
    return psnr_db(mse, peak=LATENT_PEAK)


def encode_photo(pipe, image: np.ndarray, seed: int) -> LatentPhoto:
    """``image`` (H×W×3 in [−1, 1]) as the latent slider sees it: :func:`~core.latent.forward.fit_photo` to the
    model's size, then z_0 = ``pipe.encode_image(x, sample=False)`` (the posterior's mean — no draw)."""
    from core.latent.pipeline import pixels_to_vae_input
    pixels = pixels_to_vae_input(fit_photo(image, pipe.default_size), pipe.vae_scale_factor)
    z0 = pipe.encode_image(pixels, sample=False)[0].float().cpu().numpy()
    return LatentPhoto.make(pixels[0].numpy().transpose(1, 2, 0), z0, seed)


def encode_job(pipe, image: np.ndarray, seed: int):
    """The worker's job: encode the photo once, then make the linear (approx) decoder the slider drags with
    (fitted by the VAE if no cached fit exists). Returns (:class:`LatentPhoto`, decoder); cancel points between."""
    from core.latent.decoders import make_decoder
    yield
    photo = encode_photo(pipe, image, seed)
    yield
    return photo, make_decoder(pipe, "approx")


def decode_u8(decoder, z: np.ndarray) -> np.ndarray:
    """z (C×h×w, or K×C×h×w) decoded by ``decoder`` (``.decode(latents)`` → [−1, 1]) to uint8 H×W×3 (K×H×W×3)."""
    batch = np.asarray(z, np.float32)
    one = batch.ndim == 3
    x = decoder.decode(torch.from_numpy(batch[None] if one else batch)).clamp(-1, 1).float().cpu().numpy()
    u8 = to_uint8(x.transpose(0, 2, 3, 1))
    return u8[0] if one else u8


def vae_frame_job(pipe, z: np.ndarray, t: int):
    """The worker's full-VAE frame at rest: returns (t, uint8 H×W×3 of D(z_t/s))."""
    from core.latent.decoders import VaeDecoder
    yield
    return t, decode_u8(VaeDecoder(pipe), z)


def strip_frames_job(pipe, photo: LatentPhoto, schedule: NoiseSchedule, timesteps: list[int]):
    """The strip in latent space: D(z_0/s), then D(z_t/s) at each t, with the full VAE one image at a time
    (a cancel point between). Returns a list of uint8 H×W×3."""
    from core.latent.decoders import VaeDecoder
    vae = VaeDecoder(pipe)
    frames = []
    for z in (photo.z0, *(photo.at(t, schedule) for t in timesteps)):
        yield
        frames.append(decode_u8(vae, z))
    return frames


def strip_grid(decoded: np.ndarray, z0: np.ndarray, zt: np.ndarray) -> np.ndarray:
    """The strip as ``ddpm noise IMAGE --model SD`` writes it: D(z_0/s) then D(z_t/s) for each t (``decoded``,
    (1+K)×H×W×3 in [−1, 1]) above the latent channels of z_0 and each z_t, in one grid."""
    h, w = decoded.shape[1:3]
    bottom = [channel_view(z, h, w) for z in (z0, *zt)]
    return make_grid(list(decoded) + bottom, ncols=len(zt) + 1, pad=4)


def export_strip_job(pipe, photo: LatentPhoto, schedule: NoiseSchedule, timesteps: list[int], path):
    """Write :func:`strip_grid` for the window's latents at ``timesteps`` as a PNG (atomically)."""
    from core.images import save_image
    from core.latent.decoders import VaeDecoder
    vae = VaeDecoder(pipe)
    zt = np.stack([photo.at(t, schedule) for t in timesteps])
    decoded = []
    for z in (photo.z0, *zt):
        yield
        with torch.inference_mode():
            decoded.append(vae.decode(torch.from_numpy(z[None]))[0].float().cpu().numpy().transpose(1, 2, 0))
    save_image(path, strip_grid(np.stack(decoded), photo.z0, zt))
    return str(path)


def channel_tiles(z: np.ndarray, gap: int = 1) -> np.ndarray:
    """The channels of ``z`` (C×h×w) as grey tiles over ±:data:`~core.latent.forward.CHANNEL_RANGE`, two per row,
    ``gap`` pixels of dark grey between them: uint8 H×W×3 at one pixel per latent."""
    c, h, w = z.shape
    cols = 2 if c > 1 else 1
    rows = -(-c // cols)
    out = np.full((rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap), 40, np.uint8)
    for i in range(c):
        r, k = divmod(i, cols)
        y, x = r * (h + gap), k * (w + gap)
        out[y:y + h, x:x + w] = to_uint8(np.clip(z[i] / CHANNEL_RANGE, -1, 1))
    return np.repeat(out[..., None], 3, axis=2)

