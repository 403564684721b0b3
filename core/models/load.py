"""One entry point from a model SPEC to a :class:`Denoiser`, for the CLI's ``--model`` and the GUI's model menu.

SPEC is one of
- ``builtin:NAME``   a model folder shipped in ``resources/models/NAME/`` (default ``builtin:mnist``);
- ``oracle:PATH``    the exact denoiser of a set of images: PATH is an image file, a folder of images, or
                     ``builtin:mnist`` (the built-in digits' training split, class-conditional);
- a path to one of our model folders, a diffusers UNet2DModel folder, or a diffusers pipeline folder;
- a Hugging Face repo id (``google/ddpm-cifar10-32``) already in the local cache (:mod:`core.hf_cache`).

Stable Diffusion pipelines (:func:`is_latent_spec`) are not a :class:`Denoiser` alone: they load with
:func:`core.latent.pipeline.load_pipeline` (``load_latent``).

Loading is offline only; every failure is a :class:`ModelLoadError` with one line.
"""
from __future__ import annotations

import itertools
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from core.device import pick_device
from core.messages import printable
from core.models.checkpoint import CONFIG, PICKLE_SUFFIXES, ModelLoadError, load_checkpoint, refuse_pickle
from core.models.denoiser import Denoiser

DEFAULT_MODEL = "builtin:mnist"
DEFAULT_ORACLE_RESOLUTION = 32


def builtin_root() -> Path:
    return Path(str(resources.files("resources").joinpath("models")))


def builtin_models() -> list[str]:
    """``builtin:NAME`` for every model folder installed in resources/models/."""
    root = builtin_root()
    if not root.is_dir():
        return []
    return [f"builtin:{p.name}" for p in sorted(root.iterdir())
            if (p / CONFIG).is_file() or (p / "model_index.json").is_file()]


def load_model(spec: str = DEFAULT_MODEL, device="cpu", resolution: int | None = None) -> Denoiser:
    """SPEC → a Denoiser on ``device`` (see the module docstring). ``resolution`` sizes an oracle over a folder
    or a photo (default: the images' own size when they are square and equal, else 32)."""
    spec = (spec or DEFAULT_MODEL).strip()
    dev = pick_device(device)
    if spec.startswith("oracle:"):
        return load_oracle(spec[len("oracle:"):], resolution=resolution).to(dev)
    if spec.startswith("builtin:"):
        folder = builtin_folder(spec)
        if (folder / "model_index.json").is_file():
            raise ModelLoadError(f"{spec} is a Stable Diffusion pipeline (text-to-image in latent space); use it "
                                 "with ddpm sample --prompt, or ddpm noise --model")
        return load_checkpoint(folder, device=dev)
    path = model_folder(spec)
    if path.is_file():
        if path.suffix.lower() in PICKLE_SUFFIXES:
            raise refuse_pickle(path)
        if path.name in (CONFIG, "model.safetensors", "diffusion_pytorch_model.safetensors", "model_index.json"):
            return load_model(str(path.parent), device=dev)
        raise ModelLoadError(f"{path}: a model is a folder (config.json + weights), not a single file")
    from core.models.diffusers_adapter import is_diffusers_folder, load_diffusers
    from core.latent.parts import is_latent_pipeline
    if is_latent_pipeline(path):
        raise ModelLoadError(f"{printable(spec)} is a Stable Diffusion pipeline (text-to-image in latent space); "
                             "use it with ddpm sample --prompt, or ddpm noise --model")
    if is_diffusers_folder(path):
        return load_diffusers(path, device=dev)
    return load_checkpoint(path, device=dev)


def builtin_folder(spec: str) -> Path:
    """``builtin:NAME`` → its folder in resources/models/ (one line if the name is bad or not installed)."""
    name = spec[len("builtin:"):]
    folder = builtin_root() / name
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ModelLoadError(f"{spec!r} is not a built-in model name")
    if not ((folder / CONFIG).is_file() or (folder / "model_index.json").is_file()):
        have = ", ".join(builtin_models()) or "none"
        raise ModelLoadError(f"built-in model {spec!r} is not installed (no resources/models/{name}/; "
                             f"installed: {have})")
    return folder


def model_folder(spec: str) -> Path:
    """A folder SPEC as a path on disk: a built-in model's folder, the path itself, or a Hugging Face repo id
    resolved from the local cache (its snapshot, checked complete). One line naming where it looked otherwise."""
    from core import hf_cache
    if spec.startswith("builtin:"):
        return builtin_folder(spec)
    path = Path(spec).expanduser()
    if path.exists():
        return path
    if hf_cache.valid_repo_id(spec):
        try:
            snapshot = hf_cache.resolve_repo(spec)
        except ModelLoadError as e:
            raise ModelLoadError(f"{printable(spec)}: no such model folder, and {e}") from None
        return hf_cache.check_complete(snapshot)
    raise ModelLoadError(f"{printable(spec)}: no such model folder (give builtin:NAME, oracle:PATH, a local folder "
                         "or a Hugging Face repo id in the local cache; nothing is downloaded)")


def is_latent_spec(spec: str | None) -> bool:
    """True when SPEC names a Stable Diffusion pipeline (a folder, or a cached repo id); False for anything else,
    including a SPEC that does not resolve (its loader then says why)."""
    from core.latent.parts import is_latent_pipeline
    spec = (spec or "").strip()
    if not spec or spec.startswith("oracle:") or spec == "photo":
        return False
    try:
        return is_latent_pipeline(model_folder(spec))
    except ModelLoadError:
        return False


def load_latent(spec: str, device="cpu", precision: str | None = None):
    """A Stable Diffusion SPEC (folder or cached repo id) → a :class:`~core.latent.pipeline.LatentPipeline`."""
    from core.latent.pipeline import load_pipeline
    return load_pipeline(model_folder(spec), device=device, precision=precision)


def oracle_for_array(x0: np.ndarray, device="cpu", name: str = "oracle:pasted photo") -> Denoiser:
    """The oracle over an image that has no file (a pasted or dropped photo, H×W×3 uint8): the same model
    ``oracle:PATH`` gives for that image saved as a PNG (uint8 round-trips exactly), loaded by the same code."""
    import tempfile

    from core.images import save_image
    with tempfile.TemporaryDirectory(prefix="ddpm-oracle-") as tmp:
        path = Path(tmp) / "photo.png"
        save_image(path, x0)
        model = load_model(f"oracle:{path}", device=device)
    model.name = name
    return model


def load_oracle(target: str, resolution: int | None = None, channels: int | None = None):
    """``oracle:`` + an image file, a folder of images, or ``builtin:mnist``."""
    from core.models.oracle import OracleDenoiser
    if not target:
        raise ModelLoadError("oracle: needs a PATH (an image, a folder of images, or builtin:mnist)")
    if target.startswith("builtin:") or Path(target).expanduser().is_dir():
        from core.data import load_dataset
        spec = target if target.startswith("builtin:") else str(Path(target).expanduser())
        if resolution is None and not target.startswith("builtin:"):
            resolution = _common_size(Path(spec))
        try:
            data = load_dataset(spec, resolution=resolution, split="train", channels=channels)
        except (ValueError, OSError) as e:
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelLoadError(printable(f"oracle:{target}: {reason}")) from None
        if len(data) == 0:
            raise ModelLoadError(printable(f"oracle:{target}: no images"))
        name = printable(f"oracle:{target}")
        return OracleDenoiser(torch.from_numpy(np.ascontiguousarray(data.images, dtype=np.float32)),
                              labels=data.labels, num_classes=data.num_classes or None, name=name)
    path = Path(target).expanduser()
    if not path.exists():
        raise ModelLoadError(f"oracle:{target}: no such image or folder")
    from core.images import load_image, resize_square
    img = load_image(path)
    h, w = img.shape[:2]
    size = resolution or (h if h == w and h <= 256 else DEFAULT_ORACLE_RESOLUTION)
    img = resize_square(img, size) if (h, w) != (size, size) else img
    grey = np.allclose(img[..., 0], img[..., 1]) and np.allclose(img[..., 1], img[..., 2])
    c = channels or (1 if grey else 3)
    x = img[..., :1] if c == 1 else img
    return OracleDenoiser(torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)),
                          name=printable(f"oracle:{path.name}"))


def _common_size(folder: Path) -> int:
    """The folder's image size if every image is square and of one size ≤ 256, else the default."""
    from PIL import Image
    sizes = set()
    for p in itertools.islice(sorted(folder.rglob("*")), 2000):  # a sample is enough to decide
        if p.is_file() and not p.name.startswith("."):
            try:
                with Image.open(p) as im:
                    sizes.add(im.size)
            except Exception:  # noqa: BLE001 - not an image: load_dataset skips it too
                continue
        if len(sizes) > 1:
            break
    if len(sizes) == 1:
        (w, h), = sizes
        if w == h and w <= 256:
            return w
    return DEFAULT_ORACLE_RESOLUTION
