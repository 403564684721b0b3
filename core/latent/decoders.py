"""UNet-space latents z (B×C×h×w, z = s·E(x)) → pixels (B×3×H×W, float32, clamped to [−1, 1]) three ways, chosen
per call with :func:`make_decoder` — the previews ComfyUI (``latent_preview.py``) and AUTOMATIC1111 offer:

- ``vae`` — :class:`VaeDecoder`: the pipeline's own VAE, x = D(z/s) (exact; the slow one).
- ``taesd`` — :class:`TaesdDecoder`: TAESD (diffusers' ``AutoencoderTiny``), a distilled decoder trained on
  *unscaled-by-us* latents: its config's ``scaling_factor`` is 1.0 and diffusers divides by that, so it takes
  UNet-space latents as they are (x = D_tiny(z / s_tiny + shift_tiny), s_tiny = 1, shift_tiny = 0 for SD 1.x/2.x).
  From a folder, or from ``madebyollin/taesd`` in the Hugging Face cache (:func:`find_taesd`; never downloaded).
- ``approx`` — :class:`LinearDecoder`: RGB = W·z + b per latent pixel (3×C + 3 numbers), upsampled bilinearly to
  the image size. W and b are fitted by least squares from the pipeline's own VAE when it loads
  (:func:`fit_latent_rgb`, well under a second on a CPU) and cached in :func:`core.app_cache.cache_dir`
  ("latent-rgb"), keyed by the VAE's config and its weights file — never written into the model folder.

Every decoder has ``name`` (its ``--preview`` word), ``exact`` (True only for the VAE), ``decode(latents)`` and
``decode_step(x_t, x0)`` for a preview frame: the VAE and the linear map decode both; TAESD decodes x̂_0 and shows
x_t — mostly noise — through the linear map, one TAESD call a step as ComfyUI's preview (two would cost ≈ 28% of
a Stable Diffusion step; benchmarks/bench_sd_loop.py).
Loading failures are one-line :class:`~core.models.checkpoint.ModelLoadError`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from core.hf_cache import cache_roots, check_complete, looks_like_repo_id, resolve_repo
from core.messages import printable
from core.models.checkpoint import PICKLE_SUFFIXES, ModelLoadError, read_json, refuse_pickle

PREVIEWS = ("vae", "taesd", "approx")
TAESD_REPO = "madebyollin/taesd"
TAESD_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors")

# the least-squares fit: the built-in photos at FIT_SIDE latent pixels a side (48×48 pixels for SD), encoded by the
# VAE, plus one smooth random latent; the decoded images are average-pooled back to latent resolution
FIT_SIDE = 6
FIT_VERSION = 1  # bump when the fit changes: old cache files are then simply not found
CACHE_FOLDER = "latent-rgb"
CACHE_FORMAT = "ddpm-studio.latent-rgb"
MAX_CACHE_BYTES = 65_536


class VaeDecoder:
    """The pipeline's full VAE: ``pipe.decode`` (tiled for large images), clamped to [−1, 1]."""

    name = "vae"
    exact = True

    def __init__(self, pipe):
        self.pipe = pipe

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.pipe.decode(latents).clamp(-1.0, 1.0)

    def decode_step(self, x_t: torch.Tensor, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A preview frame's two images: decoded x_t and decoded x̂_0."""
        return self.decode(x_t), self.decode(x0)


# ----- TAESD --------------------------------------------------------------------------------------------------
class TaesdDecoder:
    """TAESD (``AutoencoderTiny``) from ``folder``, loaded offline from safetensors onto ``device`` in ``dtype``.
    ``latent_channels`` / ``scale_factor``, when given (the pipeline's), are checked against the tiny VAE's."""

    name = "taesd"
    exact = False

    def __init__(self, folder, device="cpu", dtype=torch.float32, latent_channels: int | None = None,
                 scale_factor: int | None = None):
        self.folder = Path(folder)
        self.vae = load_taesd(self.folder, device, dtype)
        cfg = self.vae.config
        channels = int(cfg.latent_channels)
        factor = int(cfg.upsampling_scaling_factor) ** (len(cfg.num_decoder_blocks) - 1)
        if latent_channels is not None and channels != latent_channels:
            raise ModelLoadError(f"{printable(self.folder)}: this TAESD decodes {channels}-channel latents; the "
                                 f"pipeline's have {latent_channels} (a TAESD for another model family?)")
        if scale_factor is not None and factor != scale_factor:
            raise ModelLoadError(f"{printable(self.folder)}: this TAESD upsamples {factor}×; the pipeline's VAE "
                                 f"{scale_factor}×")
        self.scale = float(getattr(cfg, "scaling_factor", 1.0) or 1.0)
        self.shift = float(getattr(cfg, "shift_factor", 0.0) or 0.0)

    noisy = None  # the decoder of x_t in preview frames (make_decoder sets the pipeline's linear map)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        p = next(self.vae.parameters())
        z = latents.to(p.device, p.dtype) / self.scale + self.shift
        with torch.inference_mode():
            x = self.vae.decode(z, return_dict=False)[0]
        return x.float().clamp(-1.0, 1.0)

    def decode_step(self, x_t: torch.Tensor, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x̂_0 by TAESD; x_t by the linear map (:attr:`noisy`), or by TAESD when there is none."""
        return (self.noisy or self).decode(x_t), self.decode(x0)


def find_taesd(explicit=None) -> Path | None:
    """The TAESD folder to load: ``explicit`` (a folder, or a repo id resolved in the Hugging Face cache), else
    ``madebyollin/taesd``'s snapshot in the cache, else None. An incomplete cached download is an error."""
    if explicit is not None:
        text = str(explicit)
        if looks_like_repo_id(text):
            return check_complete(resolve_repo(text))
        return Path(text).expanduser()
    try:
        snapshot = resolve_repo(TAESD_REPO)
    except ModelLoadError:
        return None
    return check_complete(snapshot)


def load_taesd(folder, device="cpu", dtype=torch.float32):
    """diffusers' ``AutoencoderTiny`` from ``folder`` (config.json + safetensors weights), checked first as the
    pipeline's parts are (class, plausible config, size on the meta device); pickles are refused unopened."""
    from core.latent.parts import Part, check_config_numbers, check_part_size, load_part, offline
    folder = Path(folder)
    shown = printable(folder)
    if not folder.is_dir():
        raise ModelLoadError(f"{shown}: no such TAESD folder")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ModelLoadError(f"{shown}: missing — no config.json (a TAESD folder in diffusers' layout has "
                             f"config.json and {TAESD_WEIGHTS[0]})")
    config = read_json(config_path, "TAESD config")
    cls = config.get("_class_name")
    if cls != "AutoencoderTiny":
        raise ModelLoadError(f"{shown}: config.json describes a {printable(str(cls))[:80]}, not an AutoencoderTiny "
                             "(TAESD)")
    check_config_numbers(config, config_path)
    weights = next((folder / n for n in TAESD_WEIGHTS if (folder / n).is_file()), None)
    if weights is None:
        pickles = sorted(p for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
        if pickles:
            raise refuse_pickle(pickles[0])
        raise ModelLoadError(f"{shown}: missing — no {TAESD_WEIGHTS[0]} (the TAESD weights)")
    part = Part("taesd", folder, "AutoencoderTiny", config, weights,
                 "fp16" if ".fp16." in weights.name else None)
    check_part_size(part)
    try:
        import diffusers
    except ImportError:
        from core.models.diffusers_adapter import EXTRA_HINT
        raise ModelLoadError(f"TAESD needs the optional 'diffusers' extra: {EXTRA_HINT}") from None
    from core.models.diffusers_adapter import one_line_library_messages
    config_log = logging.getLogger("diffusers.configuration_utils")
    quirk = _DropConfigQuirk()
    config_log.addFilter(quirk)
    try:
        with one_line_library_messages(folder), offline():
            vae = load_part(diffusers.AutoencoderTiny, part, dtype)
    finally:
        config_log.removeFilter(quirk)
    return vae.to(device).eval()


class _DropConfigQuirk(logging.Filter):
    """AutoencoderTiny writes ``block_out_channels`` into the config it saves and then warns, when it reads that
    config back, that the key is unexpected: true of every TAESD folder, so not worth a warning line."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not ("{'block_out_channels'" in text and "AutoencoderTiny" in text and "not expected" in text)


# ----- the linear latent → RGB map ----------------------------------------------------------------------------
class LinearDecoder:
    """RGB = W·z + b at each latent pixel (``weight`` 3×C, ``bias`` 3), then upsampled ``factor``× bilinearly:
    each value sits at the centre of its factor×factor block — where the average of the VAE's block it was fitted
    to is centred — so the preview is the smooth picture the VAE's colours make, not a mosaic of blocks."""

    name = "approx"
    exact = False

    def __init__(self, weight, bias, factor: int, fit_seconds: float | None = None, cached: bool = False):
        self.weight = torch.as_tensor(weight, dtype=torch.float32)
        self.bias = torch.as_tensor(bias, dtype=torch.float32)
        self.factor = int(factor)
        self.fit_seconds = fit_seconds
        self.cached = cached

    @classmethod
    def for_pipeline(cls, pipe, cache: bool = True) -> "LinearDecoder":
        """The map for ``pipe``'s VAE: from the cache when a fit for this VAE (config and weights file) is there,
        else fitted now (and cached, unless ``cache`` is False or the VAE has no weights file on disk)."""
        key = fit_key(pipe) if cache else None
        path = _cache_file(key, pipe) if key else None
        found = _read_cache(path, key, pipe) if path else None
        if found is not None:
            return cls(*found, factor=pipe.vae_scale_factor, cached=True)
        start = time.perf_counter()
        weight, bias = fit_latent_rgb(pipe)
        seconds = time.perf_counter() - start
        if path is not None:
            _write_cache(path, key, weight, bias, pipe, seconds)
        return cls(weight, bias, pipe.vae_scale_factor, fit_seconds=seconds)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        z = latents.float()
        w, b = self.weight.to(z.device), self.bias.to(z.device)
        with torch.inference_mode():
            rgb = torch.einsum("oc,bchw->bohw", w, z) + b.view(1, -1, 1, 1)
            if self.factor > 1:
                rgb = F.interpolate(rgb, scale_factor=self.factor, mode="bilinear", align_corners=False)
            return rgb.clamp(-1.0, 1.0)

    def decode_step(self, x_t: torch.Tensor, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoded x_t and x̂_0 in one call."""
        both = self.decode(torch.cat([x_t, x0]))
        return both[:len(x_t)], both[len(x_t):]


def fit_latents(pipe, side: int = FIT_SIDE, seed: int = 0) -> torch.Tensor:
    """The latents the linear map is fitted on: the built-in photos (cat, coffee, astronaut) at side×side latent
    pixels, encoded by the VAE (posterior mean), and one smooth random latent with their per-channel mean and
    spread — it spans the directions the photos' latents leave out, so W is always determined."""
    from core.images import SAMPLES, load_image, resize_square, sample_path
    f = pipe.vae_scale_factor
    photos = np.stack([resize_square(load_image(sample_path(n)), side * f) for n in SAMPLES])
    x = torch.from_numpy(np.ascontiguousarray(photos.transpose(0, 3, 1, 2)))
    z = pipe.encode_image(x, sample=False).float().cpu()
    g = torch.Generator().manual_seed(seed)
    smooth = F.interpolate(torch.randn(1, z.shape[1], 3, 3, generator=g), size=z.shape[-2:], mode="bilinear",
                           align_corners=True)
    smooth = (smooth - smooth.mean((2, 3), keepdim=True)) / smooth.std((2, 3), keepdim=True).clamp_min(1e-6)
    smooth = smooth * z.std((0, 2, 3)).view(1, -1, 1, 1) + z.mean((0, 2, 3)).view(1, -1, 1, 1)
    return torch.cat([z, smooth])


def fit_latent_rgb(pipe, latents: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(W 3×C, b 3): least squares, in float64, of the VAE's decoded colour — each latent pixel's factor×factor
    block of ``pipe.decode(latents)``, averaged — on [z, 1], over the latents' inner pixels (the outer ring is
    dropped: there the decoder's zero padding colours the edge). ``latents`` default to :func:`fit_latents`."""
    z = fit_latents(pipe) if latents is None else latents.float().cpu()
    f = pipe.vae_scale_factor
    y = F.avg_pool2d(pipe.decode(z).float(), f).cpu()
    if min(z.shape[-2:]) > 2:
        z, y = z[..., 1:-1, 1:-1], y[..., 1:-1, 1:-1]
    c = z.shape[1]
    a = torch.cat([z.permute(0, 2, 3, 1).reshape(-1, c), torch.ones(z.numel() // c, 1)], 1).double()
    sol = torch.linalg.lstsq(a, y.permute(0, 2, 3, 1).reshape(-1, y.shape[1]).double(), driver="gelsd").solution
    return sol[:c].T.float().contiguous(), sol[c].float().contiguous()


def vae_weights_file(pipe) -> Path | None:
    """The VAE weights file the pipeline loaded (``folder/vae/…safetensors``), or None when it has none on disk."""
    from core.latent.parts import PARTS
    folder = getattr(pipe, "folder", None)
    if folder is None:
        return None
    return next((Path(folder) / "vae" / n for n in PARTS["vae"][2] if (Path(folder) / "vae" / n).is_file()), None)


def fit_key(pipe) -> str | None:
    """A hash of the VAE's config, its weights file's identity (resolved path, size, mtime_ns) and the fit's
    version: a new or edited VAE gets a new key. None when there is no weights file (nothing to key on)."""
    weights = vae_weights_file(pipe)
    if weights is None:
        return None
    try:
        st = weights.stat()
        resolved = str(weights.resolve())
    except OSError:
        return None
    config = {k: v for k, v in dict(pipe.vae.config).items() if not str(k).startswith("_")}
    text = json.dumps({"fit": FIT_VERSION, "side": FIT_SIDE, "config": config,
                       "weights": [resolved, st.st_size, st.st_mtime_ns]}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _cache_file(key: str, pipe) -> Path | None:
    """Where the fit for ``key`` is cached; None (no caching) when the cache folder would be inside the model
    folder or cannot be made."""
    from core.app_cache import cache_dir, cache_root
    if _inside(cache_root() / CACHE_FOLDER, getattr(pipe, "folder", None)):
        return None  # a cache folder set inside the model folder: the model folder is never written
    try:
        return cache_dir(CACHE_FOLDER) / f"{key[:40]}.json"
    except (OSError, ValueError) as e:
        warnings.warn(f"approx preview: cannot use the cache folder ({printable(e)[:200]}); fitting every time",
                      UserWarning, stacklevel=3)
        return None


def _inside(path: Path, folder) -> bool:
    try:
        return folder is not None and path.resolve().is_relative_to(Path(folder).resolve())
    except OSError:
        return True


def _read_cache(path: Path, key: str, pipe):
    """(W, b) from a cache file, or None when it is absent, unreadable, for another key or malformed."""
    try:
        if not path.is_file() or path.stat().st_size > MAX_CACHE_BYTES:
            return None
        d = json.loads(path.read_text(encoding="utf-8"))
        c = int(pipe.vae.config.latent_channels)
        w, b = d["weight"], d["bias"]
        ok = (d.get("format") == CACHE_FORMAT and d.get("version") == FIT_VERSION and d.get("key") == key
              and isinstance(w, list) and len(w) == 3 and all(isinstance(r, list) and len(r) == c for r in w)
              and isinstance(b, list) and len(b) == 3)
        values = [v for r in w for v in r] + b
        if not ok or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                             for v in values):
            return None
        return torch.tensor(w, dtype=torch.float32), torch.tensor(b, dtype=torch.float32)
    except (OSError, ValueError, TypeError, KeyError, RecursionError, AttributeError):
        return None


def _write_cache(path: Path, key: str, weight, bias, pipe, seconds: float) -> None:
    from core.atomic import atomic_path
    d = {"format": CACHE_FORMAT, "version": FIT_VERSION, "key": key, "vae": str(vae_weights_file(pipe)),
         "weight": [[float(v) for v in row] for row in weight.tolist()], "bias": [float(v) for v in bias.tolist()],
         "fit_seconds": round(seconds, 4)}
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(d, indent=1), encoding="utf-8")
    except OSError as e:
        warnings.warn(f"approx preview: cannot write {printable(path)} ({printable(e.strerror or e)}); the fit is "
                      "redone next time", UserWarning, stacklevel=3)


# ----- choosing one -------------------------------------------------------------------------------------------
def make_decoder(pipe, kind: str, taesd=None):
    """The ``kind`` decoder (one of :data:`PREVIEWS`) for ``pipe``; ``taesd`` (a folder or repo id) is where
    TAESD is, for ``kind == "taesd"`` (else the Hugging Face cache's ``madebyollin/taesd``). One-line errors."""
    if kind not in PREVIEWS:
        raise ValueError(f"--preview {printable(str(kind))[:40]!r}: choose one of {', '.join(PREVIEWS)}")
    made = getattr(pipe, "_decoders", None)
    if made is None:  # one of each per loaded pipeline: a second run neither refits nor reloads
        made = {}
        try:
            pipe._decoders = made
        except AttributeError:
            pass
    key = (kind, str(taesd) if kind == "taesd" else None)
    if key not in made:
        made[key] = _make_decoder(pipe, kind, taesd)
    return made[key]


def _make_decoder(pipe, kind: str, taesd):
    if kind == "vae":
        return VaeDecoder(pipe)
    if kind == "approx":
        return LinearDecoder.for_pipeline(pipe)
    try:
        folder = find_taesd(taesd)
    except ModelLoadError as e:
        raise ModelLoadError(f"--preview taesd: {e}") from None
    if folder is None:
        looked = ", ".join(printable(r) for r in cache_roots())
        raise ModelLoadError(f"--preview taesd: no TAESD found (looked for {TAESD_REPO} in the Hugging Face cache: "
                             f"{looked}; nothing is downloaded); give --taesd FOLDER or use --preview approx")
    vae = pipe.vae
    try:
        decoder = TaesdDecoder(folder, device=pipe.device, dtype=next(vae.parameters()).dtype,
                               latent_channels=int(vae.config.latent_channels), scale_factor=pipe.vae_scale_factor)
    except ModelLoadError as e:
        raise ModelLoadError(f"--preview taesd: {e}") from None
    decoder.noisy = LinearDecoder.for_pipeline(pipe)
    return decoder
