"""A Generate run without Qt: what to sample (:class:`GenerateJob`), the generator the worker thread runs
(:func:`generate_frames`), the frames it records (:class:`Recording`) and the exports of a run.

Nothing here imports Qt, so all of it is testable headless; :mod:`ddpm_gui.generate_panel` is the view.

The sampling itself is :func:`core.samplers.sample`, called exactly as ``ddpm sample`` calls it (same defaults for
the oracle's schedule, the same start image for "denoise from here" via :func:`core.cli.cmd_sample.start_image`,
the same grids via ``cmd_sample._grid``), so the same model, sampler, steps and seed give the same images.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from core.atomic import atomic_dir
from core.cli.cmd_sample import _grid as batch_grid   # the grid `ddpm sample` writes (pad 1)
from core.cli.cmd_sample import start_image
from core.images import make_grid, resize_square, save_animation, save_image, to_uint8
from core.samplers import sample
from core.schedule import NoiseSchedule

RECORD_BUDGET_BYTES = 384 * 2**20   # beyond this a run keeps every 2nd (4th, …) step; first and last always kept
ANIMATION_MS = 80                   # per frame of an exported animation (the last one is held 1.5 s, as the CLI)
HOLD_LAST_MS = 1500
MIN_EXPORT_SIDE = 256               # exported frames are enlarged by an integer factor to at least this height


def default_oracle_schedule() -> NoiseSchedule:
    """The schedule ``ddpm sample`` gives a model that has none (the oracle): Ho et al.'s linear, T = 1000."""
    return NoiseSchedule.preset("linear", T=1000)


def model_ready(img_hwc: np.ndarray, channels: int, resolution: int) -> np.ndarray:
    """An H×W×3 photo in [−1, 1] as a model's C×H×W input: centre crop + resize, luma for 1-channel models.
    The same steps as :func:`core.cli.cmd_sample.start_image` (which reads a file); used for photos without a file
    (pasted or dropped)."""
    img = resize_square(np.asarray(img_hwc, dtype=np.float32), resolution)
    if channels == 1:
        img = (img @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None]
    return np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32)


# ----- the job ------------------------------------------------------------------------------------------------
@dataclass
class GenerateJob:
    """Everything one Generate run needs, fixed at the click (the worker never reads a widget).

    ``model_key`` names the model in the :class:`ModelCache`; ``loader()`` loads it (in the worker thread) when
    the cache does not hold it. ``schedule`` is used only when the model has none (the oracle). For "denoise from
    here" give ``t_start`` and either ``start_path`` (a photo file, read as ``ddpm sample --from`` reads it) or
    ``start_array`` (H×W×3 in [−1, 1])."""

    model_key: tuple
    loader: Callable[[], object]
    sampler: str = "ddim"
    steps: int | None = None
    eta: float = 0.0
    seed: int = 0
    n: int = 1
    class_labels: int | list | None = None
    guidance: float = 1.0
    device: str = "cpu"
    schedule: NoiseSchedule | None = None
    start_path: str | None = None
    start_array: np.ndarray | None = None
    t_start: int | None = None


class ModelCache:
    """Holds the one model the panel last used, so a second click does not load it again. Thread-safe: the
    worker loads under the lock; the UI thread only peeks."""

    def __init__(self):
        self._lock = threading.Lock()
        self._key: tuple | None = None
        self._model = None

    def get(self, key: tuple, loader: Callable[[], object]):
        with self._lock:
            if self._key == key and self._model is not None:
                return self._model
            self._drop()
            model = loader()
            self._key, self._model = key, model
            return model

    def peek(self, key: tuple):
        """The model for ``key`` if it is loaded, else None (never blocks on a load in progress)."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            return self._model if self._key == key else None
        finally:
            self._lock.release()

    def clear(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        model, self._key, self._model = self._model, None, None
        on_gpu = model is not None and getattr(getattr(model, "device", None), "type", "cpu") == "cuda"
        del model
        if on_gpu:
            torch.cuda.empty_cache()


# ----- frames and the recording ---------------------------------------------------------------------------------
@dataclass
class RunFrame:
    """After model call ``index`` of ``total`` at timestep ``t``: x_t and x̂_0 of the whole batch as uint8
    N×C×H×W (``xt_u8``, ``x0_u8``: to_uint8 of the sampler's tensors), and the seconds since the first step began.

    ``xt`` / ``x0`` are the H×W×3 grids ``ddpm sample`` writes (``cmd_sample._grid``: same pixels), made when
    asked for — the worker only converts to uint8 (a grid per step cost ~0.4 ms, 5% of a small model's step)."""

    index: int
    total: int
    t: int
    xt_u8: np.ndarray
    x0_u8: np.ndarray
    elapsed: float

    @property
    def xt(self) -> np.ndarray:
        return make_grid(self.xt_u8, pad=1)

    @property
    def x0(self) -> np.ndarray:
        return make_grid(self.x0_u8, pad=1)

    @property
    def nbytes(self) -> int:
        return int(self.xt_u8.nbytes + self.x0_u8.nbytes)


@dataclass
class Recording:
    """The frames of one run. Written by the worker thread while it runs, read by the UI after it ends.

    Every step is kept while the frames fit in ``budget`` bytes; past it, every 2nd (then 4th, …) step is kept,
    always with the first and the last."""

    budget: int = RECORD_BUDGET_BYTES
    frames: list[RunFrame] = field(default_factory=list)
    stride: int = 1
    total: int = 0
    model_name: str = ""
    schedule_T: int = 0
    final: np.ndarray | None = None        # the sample, N×C×H×W float32 (not clamped), when the run finished
    latest: RunFrame | None = None
    _bytes: int = 0

    def add(self, frame: RunFrame) -> None:
        self.latest = frame
        self.total = frame.total
        if (frame.index - 1) % self.stride:
            return
        self.frames.append(frame)
        self._bytes += frame.nbytes
        while self._bytes > self.budget and len(self.frames) > 2:
            self.stride *= 2
            self.frames = [f for f in self.frames if (f.index - 1) % self.stride == 0]
            self._bytes = sum(f.nbytes for f in self.frames)

    def close(self) -> None:
        """Make sure the newest step is recorded (a run that ended between two kept steps)."""
        if self.latest is not None and (not self.frames or self.frames[-1] is not self.latest):
            self.frames.append(self.latest)
            self._bytes += self.latest.nbytes

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def nbytes(self) -> int:
        return self._bytes


def generate_frames(job: GenerateJob, cache: ModelCache, recording: Recording) -> Iterator[RunFrame]:
    """The worker's generator: load (or reuse) the model, run the sampler, yield a :class:`RunFrame` after every
    model call (recording it), and return the final samples (N×C×H×W float32). Closing it between two steps
    cancels the run and frees the sampler's tensors (and the GPU cache) before it returns."""
    denoiser = cache.get(job.model_key, job.loader)
    schedule = denoiser.schedule if denoiser.schedule is not None else (job.schedule or default_oracle_schedule())
    x_start = None
    if job.t_start is not None:
        if job.start_path is not None:
            x_start = start_image(job.start_path, denoiser)
        elif job.start_array is not None:
            x_start = model_ready(job.start_array, denoiser.channels, denoiser.resolution)
        else:
            raise ValueError("denoise from here needs a photo")
    steps = sample(denoiser, schedule=schedule, sampler=job.sampler, steps=job.steps, eta=job.eta, seed=job.seed,
                   n=job.n, class_labels=job.class_labels, guidance=job.guidance, x_start=x_start,
                   t_start=job.t_start, device=job.device)
    recording.model_name = denoiser.name
    recording.schedule_T = schedule.T
    last = None
    try:
        start = time.perf_counter()
        for step in steps:
            frame = RunFrame(step.index, step.total, step.t, _u8(step.x_t), _u8(step.x0_pred),
                             time.perf_counter() - start)
            last = step
            recording.add(frame)
            yield frame
        final = last.x_t.detach().float().cpu().numpy().copy()
        recording.final = final
        return final
    finally:
        recording.close()
        steps.close()
        on_gpu = last is not None and last.x_t.device.type == "cuda"
        del steps, last
        if on_gpu:
            torch.cuda.empty_cache()


def _u8(x: torch.Tensor) -> np.ndarray:
    """A batch as uint8 N×C×H×W, exactly the pixels of ``cmd_sample._grid`` (to_uint8 clips as the clamp does)."""
    return to_uint8(x.detach().float().cpu().numpy())


# ----- exports --------------------------------------------------------------------------------------------------
def export_scale(frame: RunFrame) -> int:
    """The integer enlargement that makes an exported frame at least 256 pixels high (as ``ddpm sample`` GIFs)."""
    return max(1, -(-MIN_EXPORT_SIDE // frame.xt.shape[0]))


def side_by_side(frame: RunFrame, scale: int = 1, caption: bool = True) -> np.ndarray:
    """x_t (left) beside x̂_0 (right), enlarged ``scale`` times: the frame ``ddpm sample -o run.gif`` writes, with
    a caption band "step k/N · t = …" under it (which also keeps every frame distinct, so a GIF writer cannot
    merge two equal-looking steps into one frame)."""
    a, b = frame.xt, frame.x0
    if scale > 1:
        a = np.repeat(np.repeat(a, scale, axis=0), scale, axis=1)
        b = np.repeat(np.repeat(b, scale, axis=0), scale, axis=1)
    gap = np.full((a.shape[0], 4 * scale, 3), 255, np.uint8)
    img = np.concatenate([a, gap, b], axis=1)
    if not caption:
        return img
    return np.concatenate([img, _caption(f"step {frame.index}/{frame.total}  t = {frame.t}", img.shape[1])], axis=0)


def _caption(text: str, width: int) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont
    height = 16
    im = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(im)
    try:
        font = ImageFont.load_default(size=11)
    except TypeError:  # Pillow without FreeType sizes
        font = ImageFont.load_default()
    draw.text((3, 2), text, fill=(20, 20, 20), font=font)
    return np.asarray(im, dtype=np.uint8).copy()


def animation_frames(recording: Recording, scale: int | None = None) -> list[np.ndarray]:
    if not recording.frames:
        raise ValueError("nothing recorded yet: run Generate first")
    scale = scale or export_scale(recording.frames[0])
    return [side_by_side(f, scale) for f in recording.frames]


def export_animation(path, recording: Recording, scale: int | None = None, frame_ms: int = ANIMATION_MS) -> Path:
    """Every recorded step as one frame of a GIF (``.gif``) or APNG (``.png``/``.apng``), written atomically;
    the last frame is held 1.5 s."""
    frames = animation_frames(recording, scale)
    durations = [frame_ms] * (len(frames) - 1) + [HOLD_LAST_MS]
    return save_animation(path, frames, duration_ms=durations if len(frames) > 1 else HOLD_LAST_MS)


def progression_grid(recording: Recording, columns: int = 8) -> np.ndarray:
    """The run in one picture: ``columns`` evenly spaced recorded steps (the last included), x_t in the top
    row and x̂_0 in the bottom row."""
    if not recording.frames:
        raise ValueError("nothing recorded yet: run Generate first")
    n = len(recording.frames)
    picks = sorted({int(round(i)) for i in np.linspace(0, n - 1, min(columns, n))})
    chosen = [recording.frames[i] for i in picks]
    return make_grid([f.xt for f in chosen] + [f.x0 for f in chosen], ncols=len(chosen), pad=4)


def export_grid(path, recording: Recording, columns: int = 8) -> Path:
    return save_image(path, progression_grid(recording, columns))


def final_grid(recording: Recording) -> np.ndarray:
    """The finished samples as the grid ``ddpm sample -o OUT.png`` writes (same pixels)."""
    if recording.final is None:
        raise ValueError("the run did not finish: no final image")
    return batch_grid(torch.from_numpy(recording.final), 1)


def export_final(path, recording: Recording) -> Path:
    return save_image(path, final_grid(recording))


def export_frame_folder(folder, recording: Recording, scale: int | None = None) -> Path:
    """Every recorded step as ``frame_0001.png`` … (x_t beside x̂_0, with its caption), plus ``final.png`` when
    the run finished. The folder appears complete or not at all; an existing folder is replaced only when it
    holds nothing but an earlier export's frames (never a folder of other files)."""
    folder = Path(folder)
    if folder.exists():
        if not folder.is_dir():
            raise ValueError(f"{folder}: is a file, not a folder")
        foreign = [p.name for p in folder.iterdir() if not _is_frame_file(p.name)]
        if foreign:
            raise ValueError(f"{folder}: the folder exists and holds other files ({foreign[0]}, …); "
                             "choose a new or empty folder")
    frames = animation_frames(recording, scale)
    width = max(4, len(str(len(frames))))
    with atomic_dir(folder) as tmp:
        for i, img in enumerate(frames, 1):
            save_image(tmp / f"frame_{i:0{width}d}.png", img)
        if recording.final is not None:
            save_image(tmp / "final.png", final_grid(recording))
    return folder


def _is_frame_file(name: str) -> bool:
    """A file an earlier frame export wrote (so re-exporting into that folder may replace it)."""
    return name == "final.png" or (name.startswith("frame_") and name.endswith(".png")
                                   and name[6:-4].isdigit())


def format_eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "–"
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
