"""Photos for the window's interactive view: decoded at a working size, downscaled while decoding (no Qt here).

The interactive view works on at most :data:`WORK_MAX_PIXELS` = 2048 × 2048 ≈ 4.2 megapixels (a pixel budget,
whatever the aspect ratio). A file within the budget is read exactly as :func:`core.images.load_image` reads it
(so the window and ``ddpm noise`` see the same pixels). A larger one is never decoded to float at full size:

- a JPEG is decoded by libjpeg's DCT scaling (``Image.draft``) at the smallest 1/2, 1/4 or 1/8 scale that is still
  at least the working size — an 8000 × 8000 JPEG is decoded at 4000 × 4000;
- then it is resized to the working size (Lanczos, after a box ``reduce`` by whole factors: ``reducing_gap``), in
  the file's own mode (8 bits per channel for most photos), and only then converted to float.

An 8000 × 8000 photo costs about 0.25 GB at its peak instead of about 3 GB (a full-size float32 copy, twice).
:attr:`Photo.note` says what was downscaled (``photo 8000×8000 shown at 2048×2048``).

:func:`load_steps` is the same as :func:`load_photo` as a generator that yields the name of each stage before it
starts (for a worker thread: progress and cancel points between stages). Every failure is an
:class:`~core.images.ImageLoadError` with one line naming the file, whatever the decoder raised.

What the view keeps of a photo and its seed — ε, the slider's :class:`~core.forward.ForwardPreview`, the
histogram's sample, the PSNR's moments, the display images — is a :class:`PreparedPhoto`
(:func:`prepare_photo`); :func:`photo_job` and :func:`noise_job` make one on a worker thread, for a large photo.
:func:`photo_from_array` makes a :class:`Photo` of a pasted or dropped image.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from core.forward import ForwardPreview, draw_noise
from core.images import MAX_PIXELS, ImageLoadError, _to_rgb_float, from_uint8, load_image, to_uint8
from core.jobs.threads import background_priority, one_torch_thread
from core.messages import one_line
from core.readout import histogram_index, moments

WORK_MAX_PIXELS = 2048 * 2048
RESAMPLE = Image.Resampling.LANCZOS
REDUCING_GAP = 3.0
ORIENTATION = 0x0112


@dataclass(frozen=True)
class Photo:
    """A photo at its working size: ``x0`` H×W×3 float32 in [−1, 1]; ``file_size`` (width, height) of the file
    itself (EXIF orientation applied); ``path`` the file."""

    x0: np.ndarray
    file_size: tuple[int, int]
    path: Path

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of ``x0``."""
        return int(self.x0.shape[1]), int(self.x0.shape[0])

    @property
    def downscaled(self) -> bool:
        return self.size != tuple(self.file_size)

    @property
    def note(self) -> str:
        """``photo W×H shown at w×h`` when the file was downscaled, else ``""``."""
        if not self.downscaled:
            return ""
        (fw, fh), (w, h) = self.file_size, self.size
        return f"photo {fw}×{fh} shown at {w}×{h}"


def work_size(width: int, height: int, max_pixels: int = WORK_MAX_PIXELS) -> tuple[int, int]:
    """The working (width, height) of a width × height photo: itself within ``max_pixels``, else scaled by
    √(max_pixels / pixels) (rounded down, at least 1 pixel a side)."""
    if width * height <= max_pixels:
        return int(width), int(height)
    scale = math.sqrt(max_pixels / (width * height))
    return max(1, int(width * scale)), max(1, int(height * scale))


def _check_file(p: Path) -> None:
    if not p.exists():
        raise ImageLoadError(f"{p}: no such file")
    if p.is_dir():
        raise ImageLoadError(f"{p}: is a folder, not an image")
    if p.stat().st_size == 0:
        raise ImageLoadError(f"{p}: empty file (0 bytes)")


def _reason(p: Path, exc: BaseException) -> ImageLoadError:
    """Any decoder failure as one line naming the file."""
    if isinstance(exc, ImageLoadError):
        return exc
    if isinstance(exc, UnidentifiedImageError):
        return ImageLoadError(f"{p}: not an image Pillow can read")
    if isinstance(exc, Image.DecompressionBombError):
        return ImageLoadError(f"{p}: image is over the {MAX_PIXELS / 1e6:.0f}-megapixel limit")
    if isinstance(exc, MemoryError):
        return ImageLoadError(f"{p}: not enough memory to decode this image")
    if isinstance(exc, (OSError, SyntaxError, ValueError)):
        text = str(exc).strip()
        reason = text.splitlines()[0] if text else type(exc).__name__
        if "truncated" in reason.lower() or isinstance(exc, (SyntaxError, ValueError)) or "image file" in reason:
            return ImageLoadError(f"{p}: truncated or corrupt image ({one_line(exc)})")
        return ImageLoadError(f"{p}: cannot read ({one_line(exc)})")
    return ImageLoadError(f"{p}: not an image this program can decode ({one_line(exc)})")


def peek_size(path) -> tuple[int, int]:
    """(width, height) from the file's header, without decoding its pixels (EXIF orientation not applied)."""
    p = Path(path)
    try:
        _check_file(p)
        with Image.open(p) as img:
            w, h = img.size
    except Exception as e:  # noqa: BLE001 - a crafted file can make a plugin raise anything
        raise _reason(p, e) from None
    if w <= 0 or h <= 0:
        raise ImageLoadError(f"{p}: image has no pixels ({w}×{h})")
    if w * h > MAX_PIXELS:
        raise ImageLoadError(f"{p}: {w}×{h} = {w * h / 1e6:.0f} megapixels is over the "
                             f"{MAX_PIXELS / 1e6:.0f}-megapixel limit")
    return int(w), int(h)


def load_steps(path, max_pixels: int = WORK_MAX_PIXELS) -> Iterator[str]:
    """Generator: read ``path`` at its working size, yielding each stage's name (``"decoding"``,
    ``"downscaling"``, ``"converting"``) before it starts; returns a :class:`Photo`."""
    p = Path(path)
    yield "reading the header"
    w, h = peek_size(p)
    if w * h <= max_pixels:
        yield "decoding"
        try:
            x0 = load_image(p)   # exactly what `ddpm noise` reads
        except Exception as e:  # noqa: BLE001
            raise _reason(p, e) from None
        return Photo(x0, (int(x0.shape[1]), int(x0.shape[0])), p)
    try:
        yield "decoding"
        with Image.open(p) as img:
            tw, th = work_size(w, h, max_pixels)
            if img.format == "JPEG":
                img.draft("RGB" if img.mode not in ("L", "CMYK") else img.mode, (tw, th))  # DCT scaling
            img.load()
            turned = img.getexif().get(ORIENTATION) in (5, 6, 7, 8)   # EXIF: a quarter turn
            img = ImageOps.exif_transpose(img)
        fw, fh = (h, w) if turned else (w, h)
        tw, th = work_size(fw, fh, max_pixels)
        yield "downscaling"
        img = _resizable(img)
        if img.size != (tw, th):
            img = img.resize((tw, th), RESAMPLE, reducing_gap=REDUCING_GAP)
        yield "converting"
        rgb = _to_rgb_float(img)
        del img
        x0 = rgb * np.float32(2.0) - np.float32(1.0)
    except Exception as e:  # noqa: BLE001
        raise _reason(p, e) from None
    return Photo(np.ascontiguousarray(x0, dtype=np.float32), (int(fw), int(fh)), p)


def load_photo(path, max_pixels: int = WORK_MAX_PIXELS) -> Photo:
    """:func:`load_steps` run to the end."""
    steps = load_steps(path, max_pixels)
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value


def _resizable(img: Image.Image) -> Image.Image:
    """``img`` in a mode Pillow resizes and :func:`core.images._to_rgb_float` reads the same way: palette and
    premultiplied modes become RGBA (or RGB without transparency), 1-bit becomes L, other colour spaces RGB;
    L, RGB, RGBA, I, I;16 and F stay as they are (16-bit and float precision kept)."""
    mode = img.mode
    if mode in ("L", "RGB", "RGBA", "I", "F") or mode.startswith("I;16"):
        return img
    if mode == "P":
        return img.convert("RGBA" if "transparency" in img.info else "RGB")
    if mode in ("PA", "LA", "La", "RGBa"):
        return img.convert("RGBA")
    if mode == "1":
        return img.convert("L")
    return img.convert("RGB")


def photo_from_array(x0, label: str = "image", max_pixels: int = WORK_MAX_PIXELS) -> Photo:
    """An H×W×3 float array in [−1, 1] (a pasted or dropped image) as a :class:`Photo` named ``label``: downscaled
    to the working size (Lanczos on its display pixels) when it is over ``max_pixels``; ``ValueError`` for any
    other shape."""
    x0 = np.asarray(x0, dtype=np.float32)
    if x0.ndim != 3 or x0.shape[2] != 3 or min(x0.shape[:2]) < 1:
        raise ValueError(f"expected an H×W×3 image, got shape {x0.shape}")
    h, w = x0.shape[:2]
    if h * w > max_pixels:
        nw, nh = work_size(w, h, max_pixels)
        small = from_uint8(np.asarray(Image.fromarray(to_uint8(x0)).resize((nw, nh), RESAMPLE)))
    else:
        small = x0
    return Photo(np.ascontiguousarray(small, dtype=np.float32), (w, h), Path(label))


# ----- a photo with its noise, as the interactive view uses it --------------------------------------------------
class PreparedPhoto:
    """A photo's x_0 with its fixed noise and what the view caches from the pair (made by :func:`prepare_photo`,
    on a worker for large photos). A plain class, not a dataclass, so a worker hands it over without a copy: every
    array in it is new and no thread writes it again."""

    __slots__ = ("x0", "seed", "noise", "preview", "hist_index", "moments", "hist_x0", "hist_eps", "x0_u8",
                 "noise_u8")


def prepare_photo(x0: np.ndarray, seed: int) -> PreparedPhoto:
    """ε = draw_noise(x0.shape, seed), the slider's ForwardPreview, the histogram's samples, the moments the PSNR
    readout uses and the display images of x_0 and ε (runs on any thread)."""
    p = PreparedPhoto()
    p.x0 = x0 = np.ascontiguousarray(x0, dtype=np.float32)
    p.seed = int(seed)
    p.noise = noise = draw_noise(x0.shape, seed).numpy()
    p.preview = ForwardPreview(x0, noise)
    p.hist_index = histogram_index(x0.size)
    p.moments = moments(x0, noise)
    p.hist_x0 = x0.reshape(-1)[p.hist_index].astype(np.float64)
    p.hist_eps = noise.reshape(-1)[p.hist_index].astype(np.float64)
    p.x0_u8 = to_uint8(x0)
    p.noise_u8 = to_uint8(noise)
    return p


class LoadedPhoto:
    """What :func:`photo_job` hands back: the photo and its prepared noise (a plain object: not copied)."""

    __slots__ = ("photo", "prepared")

    def __init__(self, photo: Photo, prepared: PreparedPhoto):
        self.photo, self.prepared = photo, prepared


def photo_job(path, seed: int, max_pixels: int = WORK_MAX_PIXELS):
    """The photo worker: decode ``path`` at its working size (:func:`load_steps`, yielding each stage's name), then
    prepare its noise; returns a :class:`LoadedPhoto`. It runs at a lower CPU priority than the UI."""
    background_priority()
    photo = yield from load_steps(path, max_pixels)
    yield "preparing the noise"
    with one_torch_thread():
        prepared = prepare_photo(photo.x0, seed)
    return LoadedPhoto(photo, prepared)


def noise_job(x0: np.ndarray, seed: int):
    """The noise worker (a new seed for a large photo): returns the :class:`PreparedPhoto`."""
    background_priority()
    yield None
    with one_torch_thread():
        return prepare_photo(x0, seed)
