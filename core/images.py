"""Image I/O: any image Pillow reads → float32 RGB in [−1, 1], and back to uint8 / PNG, GIF, APNG (atomically).

Conventions used everywhere: arrays are H×W×3 (channels last) for photos, N×C×H×W for model batches;
x ∈ [−1, 1] ↔ u8 = ⌊clip(127.5·x + 128, 0, 255)⌋ (round half up) and x = u8 / 127.5 − 1.
"""
from __future__ import annotations

import warnings
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from core.atomic import atomic_path

MAX_PIXELS = 64_000_000
SAMPLES = ("chelsea", "coffee", "astronaut")


class ImageLoadError(ValueError):
    """An image that cannot be used; the message is one line naming the file and the reason."""


def sample_path(name: str = "chelsea") -> Path:
    """Path of a built-in sample photo (chelsea the cat, coffee, astronaut)."""
    if name not in SAMPLES:
        raise ImageLoadError(f"unknown sample {name!r}; choose one of {', '.join(SAMPLES)}")
    return Path(str(resources.files("resources").joinpath("samples", f"{name}.png")))


def _to_rgb_float(img: Image.Image) -> np.ndarray:
    """Any Pillow mode → H×W×3 float32 in [0, 1]. Transparency is composited over white."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(img, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or a.max(initial=0) > 255 else 255.0
        a = np.clip(a / top, 0.0, 1.0)
        return np.repeat(a[..., None], 3, axis=2).astype(np.float32)
    if mode == "F":
        a = np.asarray(img, dtype=np.float64)
        a = np.nan_to_num(a, nan=0.0, posinf=1.0, neginf=0.0)
        a = np.clip(a if a.max(initial=0) <= 1.0 else a / 255.0, 0.0, 1.0)
        return np.repeat(a[..., None], 3, axis=2).astype(np.float32)
    if mode == "P" and "transparency" in img.info or mode in ("PA", "RGBa", "La"):
        img = img.convert("RGBA")
    elif mode == "1":
        img = img.convert("L")
    if img.mode in ("RGBA", "LA"):
        img = img.convert("RGBA")
        bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, img)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.float32) / 255.0


def load_image(path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image file as H×W×3 float32 in [−1, 1], EXIF orientation applied.

    Raises :class:`ImageLoadError` with one line for a missing path, a folder, an empty, truncated or non-image
    file, and for images over ``max_pixels`` (decompression bombs).
    """
    p = Path(path)
    if not p.exists():
        raise ImageLoadError(f"{p}: no such file")
    if p.is_dir():
        raise ImageLoadError(f"{p}: is a folder, not an image")
    try:
        if p.stat().st_size == 0:
            raise ImageLoadError(f"{p}: empty file (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as img:
                w, h = img.size
                if w * h > max_pixels:
                    raise ImageLoadError(f"{p}: {w}×{h} = {w * h / 1e6:.0f} megapixels is over the "
                                         f"{max_pixels / 1e6:.0f}-megapixel limit")
                if w == 0 or h == 0:
                    raise ImageLoadError(f"{p}: image has no pixels ({w}×{h})")
                img.load()
                img = ImageOps.exif_transpose(img)
                rgb = _to_rgb_float(img)
    except ImageLoadError:
        raise
    except UnidentifiedImageError:
        raise ImageLoadError(f"{p}: not an image Pillow can read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageLoadError(f"{p}: image is over the {max_pixels / 1e6:.0f}-megapixel limit") from None
    except (OSError, SyntaxError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "truncated" in reason.lower() or isinstance(e, (SyntaxError, ValueError)) or "image file" in reason:
            raise ImageLoadError(f"{p}: truncated or corrupt image ({reason})") from None
        raise ImageLoadError(f"{p}: cannot read ({reason})") from None
    except MemoryError:
        raise ImageLoadError(f"{p}: not enough memory to decode this image") from None
    except Exception as e:  # a crafted file can make a decoder raise anything (NotImplementedError, struct.error …)
        from core.messages import one_line
        raise ImageLoadError(f"{p}: not an image this program can decode ({one_line(e)})") from None
    return rgb * 2.0 - 1.0


def to_uint8(x) -> np.ndarray:
    """[−1, 1] → uint8: ⌊clip(127.5·x + 128, 0, 255)⌋ (accepts numpy or torch; float math in float32)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float32)
    return np.clip(x * np.float32(127.5) + np.float32(128.0), 0.0, 255.0).astype(np.uint8)


def from_uint8(u8) -> np.ndarray:
    """uint8 → float32 in [−1, 1] as x/127.5 − 1 (the convention of Ho et al.'s evaluation)."""
    return np.asarray(u8, dtype=np.float32) / np.float32(127.5) - np.float32(1.0)


def _as_hwc_uint8(img) -> np.ndarray:
    a = np.asarray(img)
    if a.dtype != np.uint8:
        a = to_uint8(a)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[2] not in (1, 3):
        a = a.transpose(1, 2, 0)  # C×H×W → H×W×C
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    return a


def save_image(path, img) -> Path:
    """Write an H×W×3 (or H×W, or C×H×W) image, uint8 or float in [−1, 1], atomically. Format from the suffix."""
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(_as_hwc_uint8(img)).save(tmp, format=_format_for(path))
    return path


def _format_for(path: Path) -> str:
    ext = path.suffix.lower()
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".gif": "GIF", ".apng": "PNG",
           ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF"}.get(ext)
    if fmt is None:
        raise ValueError(f"{path}: unknown image format {ext!r} (use .png, .jpg, .gif, …)")
    return fmt


def save_animation(path, frames, duration_ms: int = 40, loop: int = 0) -> Path:
    """Write frames (each H×W×3 uint8 or float in [−1, 1]) as an animated GIF or APNG (by suffix), atomically."""
    path = Path(path)
    fmt = _format_for(path)
    if fmt not in ("GIF", "PNG"):
        raise ValueError(f"{path}: animations are written as .gif or .png/.apng")
    images = [Image.fromarray(_as_hwc_uint8(f)) for f in frames]
    if not images:
        raise ValueError("no frames to write")
    with atomic_path(path) as tmp:
        images[0].save(tmp, format=fmt, save_all=True, append_images=images[1:], duration=duration_ms, loop=loop,
                       **({"disposal": 1} if fmt == "GIF" else {}))
    return path


def make_grid(images, ncols: int | None = None, pad: int = 2, pad_value: int = 255) -> np.ndarray:
    """Tile N images (N×H×W×3 or N×C×H×W; uint8 or [−1, 1]) into one uint8 grid with ``pad`` pixels between."""
    imgs = [_as_hwc_uint8(im) for im in images]
    if not imgs:
        raise ValueError("no images to tile")
    imgs = [np.repeat(im[..., None], 3, axis=2) if im.ndim == 2 else im for im in imgs]
    n = len(imgs)
    ncols = ncols or int(np.ceil(np.sqrt(n)))
    nrows = int(np.ceil(n / ncols))
    h, w = imgs[0].shape[:2]
    grid = np.full((nrows * h + (nrows - 1) * pad, ncols * w + (ncols - 1) * pad, 3), pad_value, np.uint8)
    for i, im in enumerate(imgs):
        r, c = divmod(i, ncols)
        grid[r * (h + pad):r * (h + pad) + h, c * (w + pad):c * (w + pad) + w] = im
    return grid


def resize_square(x: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square and resize to size×size (Lanczos). Float [−1, 1] H×W×3 in and out."""
    h, w = x.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    crop = to_uint8(x[top:top + s, left:left + s])
    img = Image.fromarray(crop).resize((size, size), Image.Resampling.LANCZOS)
    return from_uint8(np.asarray(img))


BT601 = np.array([0.299, 0.587, 0.114], dtype=np.float32)   # ITU-R BT.601 luma weights (Pillow's "L" too)


def luma(x: np.ndarray) -> np.ndarray:
    """Grey from RGB by BT.601, channels last: H×W×3 (or …×3) float → …×1."""
    return (np.asarray(x, dtype=np.float32) @ BT601)[..., None]


def photo_to_model_input(img: np.ndarray, resolution: int, channels: int, on_uint8_grid: bool = False) -> np.ndarray:
    """A photo (H×W×3 float in [−1, 1], as :func:`load_image` gives) as a model's C×H×W input: centre crop, resize
    to ``resolution`` (Lanczos), BT.601 luma for a 1-channel model.

    ``on_uint8_grid`` keeps the result on the 8-bit grid x = u8/127.5 − 1 (grey rounded as Pillow's ``convert("L")``
    rounds it), which the bound's discretized decoder needs; otherwise grey is exact float luma (what the samplers
    start from for "denoise from here")."""
    img = np.asarray(img, dtype=np.float32)
    if img.shape[:2] != (resolution, resolution):
        img = resize_square(img, resolution)
    if on_uint8_grid:
        u8 = to_uint8(img)
        if channels == 1:
            u8 = np.asarray(Image.fromarray(u8).convert("L"))[..., None]
        x = from_uint8(u8)
    else:
        x = luma(img) if channels == 1 else img
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)


def beside(left: np.ndarray, right: np.ndarray, gap: int = 4) -> np.ndarray:
    """Two uint8 H×W×3 images of one height side by side with a white ``gap`` (x_t beside x̂_0 in every
    animation and export)."""
    pad = np.full((left.shape[0], gap, 3), 255, np.uint8)
    return np.concatenate([left, pad, right], axis=1)


def evenly_spaced(total: int, most: int) -> set[int]:
    """At most ``most`` of the indices 1…``total``, evenly spaced, always with the first and the last (which
    steps of a run an animation shows)."""
    return set(np.linspace(1, total, min(most, total)).round().astype(int).tolist())


def batch_grid(batch, scale: int = 1) -> np.ndarray:
    """A model batch (N×C×H×W tensor or array in [−1, 1]) as the uint8 grid ``ddpm sample`` writes (pad 1),
    enlarged by an integer ``scale``."""
    if hasattr(batch, "detach"):
        batch = batch.detach().float().cpu().clamp(-1, 1).numpy()
    grid = make_grid(to_uint8(np.clip(batch, -1, 1)), pad=1)
    return np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1) if scale > 1 else grid
