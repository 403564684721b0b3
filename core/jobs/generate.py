"""A Generate run without Qt: what to sample (:class:`GenerateJob`), the generator the worker thread runs
(:func:`generate_frames`), the frames it records (:class:`Recording`), the exports of a run and the lines the
Generate tab shows about it.

The sampling itself is :func:`core.samplers.sample`, called exactly as ``ddpm sample`` calls it (the same fallback
schedule for the oracle, :func:`core.schedule.model_schedule`; the same start image for "denoise from here",
:func:`core.images.photo_to_model_input`; the same grids, :func:`core.images.batch_grid`), so the same model,
sampler, steps and seed give the same images. :mod:`ddpm_gui.generate_panel` is the view.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from core.atomic import atomic_dir
from core.images import batch_grid, beside, load_image, make_grid, photo_to_model_input, save_animation, save_image, to_uint8
from core.messages import format_eta
from core.model_spec import PHOTO, ModelCache, cache_key
from core.models.autoguidance import set_weight
from core.samplers import SAMPLER_NAMES, sample
from core.samplers.guidance import labels_each_class
from core.schedule import NoiseSchedule, model_schedule

RECORD_BUDGET_BYTES = 384 * 2**20   # beyond this a run keeps every 2nd (4th, …) step; first and last always kept
ANIMATION_MS = 80                   # per frame of an exported animation (the last one is held 1.5 s, as the CLI)
HOLD_LAST_MS = 1500
MIN_EXPORT_SIDE = 256               # exported frames are enlarged by an integer factor to at least this height
EACH_CLASS = "each"                 # the class choice "each class in turn" (:func:`class_labels`)
PAINT_BUDGET = 0.02                 # the live view's UI-thread CPU time ≤ 2% of the sampler's (LivePacer) …
PAINT_DUTY = 0.03                   # … and ≤ 3% of the wall time …
MAX_PAINT_INTERVAL = 0.5            # … but it is updated at least twice a second

# What each choice of a run means, with its formula: the Generate tab's tooltips (by objectName) and its sampler menu.
SAMPLER_TIPS = {
    "ddpm": "DDPM (Ho et al. 2020, eq. 11): x_{t−1} = 1/√α_t·(x_t − β_t/√(1−ᾱ_t)·ε̂) + σ_t·z, one call per visited "
            "timestep; fresh noise z every step",
    "ddim": "DDIM (Song et al. 2021, eq. 12): x_{t−1} = √ᾱ_{t−1}·x̂_0 + √(1−ᾱ_{t−1}−σ²)·ε̂ + σ·z, "
            "σ = η·√((1−ᾱ_{t−1})/(1−ᾱ_t)·(1−ᾱ_t/ᾱ_{t−1})); η = 0 is deterministic",
    "dpmpp2m": "DPM-Solver++(2M) (Lu et al. 2022): a second-order multistep solver of the probability-flow ODE "
               "in x̂_0; good images in 10–25 steps",
}
TIPS = {
    "modelCombo": "The denoiser that runs the reverse chain p_θ(x_{t−1} | x_t): the built-in model, a model folder "
                  "(ours or diffusers) or the exact oracle of a set of images",
    "followTimestepCheck": "Move the window's timestep slider and the schedule plot's marker to the t of the frame "
                           "shown (when the model's T equals the window schedule's T; once a second during a run, "
                           "every frame when scrubbing)",
    "exportButton": "Save the last run: GIF or APNG of every recorded step, a PNG grid of the progression, the final "
                    "samples, or a folder of numbered PNG frames",
    "stepsSpin": "Model calls N: the sampler visits N of the T timesteps (changing the sampler resets it to that "
                 "sampler's default: DDPM T, DDIM 50, DPM-Solver++ 20)",
    "etaSpin": "DDIM's η: σ_t = η·√((1−ᾱ_{t−1})/(1−ᾱ_t))·√(1−ᾱ_t/ᾱ_{t−1}); 0 = deterministic DDIM, 1 = DDPM-like "
               "noise",
    "seedSpin": "Sampling seed: all noise comes from a CPU torch.Generator seeded with it, so a seed gives the same "
                "images on every device and as `ddpm sample --seed`",
    "batchSpin": "Batch size: how many images to generate at once, shown as a grid (one batch, one model call per "
                 "step)",
    "classCombo": "The class to generate (class-conditional models): any = unconditional, each class in turn = "
                  "image i gets class i mod K",
    "guidanceSpin": "Classifier-free guidance (Ho & Salimans 2022): ε̃ = ε(x_t, ∅) + w·(ε(x_t, c) − ε(x_t, ∅)); "
                    "w = 1 is plain conditional sampling, w > 1 sharper classes",
    "autoguidanceSpin": "Autoguidance (Karras et al. 2024): the model guided by a weaker version of itself, "
                        "ε̃ = ε_guide + w·(ε − ε_guide); w = 1 is the model alone, w > 1 cleaner samples "
                        "(shown for models that ship a guide)",
    "startCombo": "Pure noise: x_T ~ N(0, I). Denoise from here (SDEdit): the photo, resized to the model's "
                  "resolution, noised to the slider's t with x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε, then denoised — "
                  "reconstruction at small t, hallucination at large t",
    "generateXtPane": "The current state x_t of the reverse chain (the whole batch as a grid). Wheel: zoom, drag: pan",
    "generateX0Pane": "x̂_0 = (x_t − √(1−ᾱ_t)·ε̂)/√ᾱ_t: the model's prediction of the final image at this step "
                      "(clipped to [−1, 1] as the sampler uses it)",
}


# ----- the job ------------------------------------------------------------------------------------------------
@dataclass
class GenerateJob:
    """Everything one Generate run needs, fixed at the click (the worker never reads a widget).

    ``model_key`` names the model in the :class:`~core.model_spec.ModelCache` (:func:`core.model_spec.cache_key`);
    ``loader()`` loads it (in the worker thread) when the cache does not hold it; ``spec`` is the SPEC whose files
    the model reads (None for a photo without a file). ``schedule`` is used only when the model has none (the
    oracle). For "denoise from here" give ``t_start`` and either ``start_path`` (a photo file, read as
    ``ddpm sample --from`` reads it) or ``start_array`` (H×W×3 in [−1, 1])."""

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
    spec: str | None = None
    autoguidance: float | None = None  # the weight for a model with a guide (None: its own)


class ModelRequests:
    """What a run needs to get the chosen model: ``requests(spec, device, load, photo_path, photo)`` gives (cache
    key, loader, the SPEC whose files it reads). ``load(spec, device=…)`` loads a SPEC (normally
    :func:`core.models.load.load_model`). ``photo`` is the oracle over the window's photo: over its file when it has
    one, else over its pixels (a pasted or dropped photo: no files; keyed by a hash of the pixels, computed once
    per photo array, not on every look at the cache)."""

    def __init__(self):
        self._pixels = (None, None, None)   # (photo array, device, its cache key)

    def __call__(self, spec: str, device: str, load: Callable, photo_path=None, photo: np.ndarray | None = None):
        if spec == PHOTO:
            if photo_path is None:
                return self._pixels_request(device, photo)
            spec = f"oracle:{photo_path}"
        return cache_key(spec, device), (lambda: load(spec, device=device)), spec

    def _pixels_request(self, device: str, photo):
        from core.models.load import oracle_for_array
        if photo is None:
            raise ValueError("open a photo first (File ▸ Open image)")
        array, on, key = self._pixels
        if array is not photo or on != device:
            key = cache_key(PHOTO, device, pixels=photo)
            self._pixels = (photo, device, key)
        return key, (lambda a=photo.copy(): oracle_for_array(a, device)), None


def class_choices(num_classes: int) -> list[tuple[str, object]]:
    """The class menu's entries (label, choice) for a model of ``num_classes`` classes (0: unconditional)."""
    each = [("each class in turn", EACH_CLASS)] if num_classes else []
    return [("any (unconditional)", None), *each, *((str(c), c) for c in range(num_classes))]


def start_from(t: int, photo_path=None, photo: np.ndarray | None = None) -> dict:
    """A :class:`GenerateJob`'s start for "denoise from here" at ``t``: the photo's file, else a copy of its pixels."""
    if photo_path is not None:
        return {"t_start": t, "start_path": str(photo_path)}
    if photo is not None:
        return {"t_start": t, "start_array": photo.copy()}
    raise ValueError("denoise from here needs a photo: open one first")


def class_labels(choice, num_classes: int, n: int):
    """The sampler's ``class_labels`` for a class menu's choice: None (unconditional, or an unconditional model),
    :data:`EACH_CLASS` (image i gets class i mod K) or one class for the whole batch."""
    if choice is None or num_classes <= 0:
        return None
    if choice == EACH_CLASS:
        return labels_each_class(n, num_classes)
    return int(choice)


# ----- frames and the recording ---------------------------------------------------------------------------------
@dataclass
class RunFrame:
    """After model call ``index`` of ``total`` at timestep ``t``: x_t and x̂_0 of the whole batch as uint8
    N×C×H×W (``xt_u8``, ``x0_u8``: to_uint8 of the sampler's tensors), and the seconds since the first step began.

    ``xt`` / ``x0`` are the H×W×3 grids ``ddpm sample`` writes (:func:`core.images.batch_grid`: same pixels), made
    when asked for — the worker only converts to uint8 (a grid per step cost ~0.4 ms, 5% of a small model's step)."""

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

    def progress_line(self) -> str:
        """``step k/N · t = … · R it/s · ETA M:SS``: the status line during a run."""
        rate = self.index / self.elapsed if self.elapsed > 0 else float("inf")
        eta = (self.total - self.index) / rate if rate > 0 else float("inf")
        return f"step {self.index}/{self.total} · t = {self.t} · {rate:.1f} it/s · ETA {format_eta(eta)}"


@dataclass
class Recording:
    """The frames of one run. Written by the worker thread while it runs, read by the UI after it ends.

    Every step is kept while the frames fit in ``budget`` bytes; past it, every 2nd (then 4th, …) step is kept,
    always with the first and the last. ``latest`` is the newest step, recorded or not: a one-slot mailbox the
    live view reads (the newest frame replaces the old, nothing queues)."""

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

    def done_line(self, sampler: str, seed: int) -> str:
        """``Done: N steps of SAMPLER with MODEL, seed S (R it/s)``: the status line of a finished run."""
        last = self.latest
        rate = self.total / last.elapsed if last and last.elapsed > 0 else float("inf")
        return (f"Done: {self.total} steps of {SAMPLER_NAMES[sampler]} with {self.model_name}, seed {seed} "
                f"({rate:.1f} it/s)")

    def cancelled_line(self, n: int) -> str:
        """``cancelled at step n/N``: the status line of a cancelled run."""
        return f"cancelled at step {n}/{self.total or '?'}"

    def timeline_label(self, i: int) -> str:
        """``i+1/len`` (and how many steps were kept) for the timeline's position ``i``."""
        every = f" (1 step in {self.stride} kept)" if self.stride > 1 else ""
        return f"{i + 1}/{len(self)}{every}"


def start_input(job: GenerateJob, denoiser) -> np.ndarray | None:
    """The model input "denoise from here" starts from (C×H×W), or None for pure noise."""
    if job.t_start is None:
        return None
    if job.start_path is not None:
        img = load_image(job.start_path)
    elif job.start_array is not None:
        img = job.start_array
    else:
        raise ValueError("denoise from here needs a photo")
    return photo_to_model_input(img, denoiser.resolution, denoiser.channels)


def end_run(recording: Recording, steps, on_gpu: bool) -> None:
    """A run's end, finished or cancelled: close the recording and the sampler (its ``finally`` frees its tensors),
    then give the GPU's cached memory back."""
    recording.close()
    steps.close()
    del steps
    if on_gpu:
        torch.cuda.empty_cache()


def generate_frames(job: GenerateJob, cache: ModelCache, recording: Recording) -> Iterator[RunFrame]:
    """The worker's generator: load (or reuse) the model, run the sampler, yield a :class:`RunFrame` after every
    model call (recording it), and return the final samples (N×C×H×W float32). Closing it between two steps
    cancels the run and frees the sampler's tensors (and the GPU cache) before it returns."""
    denoiser = set_weight(cache.get(job.model_key, job.loader), job.autoguidance)
    schedule = job.schedule if denoiser.schedule is None and job.schedule is not None else model_schedule(denoiser)
    steps = sample(denoiser, schedule=schedule, sampler=job.sampler, steps=job.steps, eta=job.eta, seed=job.seed,
                   n=job.n, class_labels=job.class_labels, guidance=job.guidance, x_start=start_input(job, denoiser),
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
        on_gpu = last is not None and last.x_t.device.type == "cuda"
        del last
        end_run(recording, steps, on_gpu)


def _u8(x: torch.Tensor) -> np.ndarray:
    """A batch as uint8 N×C×H×W, exactly the pixels of :func:`core.images.batch_grid` (to_uint8 clips as the
    clamp does)."""
    return to_uint8(x.detach().float().cpu().numpy())


def model_note(model, fallback_T: int) -> str:
    """What the model menu's note says about a loaded model: size, channels, classes and the schedule it samples
    with (its own, or the window's of ``fallback_T`` steps for a model without one)."""
    k = int(getattr(model, "num_classes", 0) or 0)
    res = f"{model.resolution}×{model.resolution}, {model.channels} channel{'s' * (model.channels > 1)}"
    sched = (f"the window's schedule (T = {fallback_T})" if model.schedule is None
             else f"its own schedule (T = {model.schedule.T})")
    classes = f", {k} classes" if k else ""
    guide = f"; {model.describe()}" if hasattr(model, "describe") else ""
    return f"{model.name}: {res}{classes}; samples with {sched}{guide}"


class LivePacer:
    """When the live view paints the newest step of a run, so that watching never slows the sampler down.

    The worker writes each step into the run's :class:`Recording`; ``recording.latest`` is a one-slot mailbox the
    view's timer reads, so the worker sends the UI thread no signal per step. Painting x_t, x̂_0, the progress and
    the window's slider, photo and schedule marker costs the UI thread milliseconds of CPU, and each of them is a
    millisecond the sampler may wait for the GIL (or, on a busy machine, for a core). So a frame is painted at
    most 30 times a second and only while the UI thread's CPU time since :meth:`start` stays under ``budget`` (2%)
    of the CPU time the rest of the process (the sampler) spent, and under ``duty`` (3%) of the wall time — but at
    least every ``max_interval`` (0.5 s), and the last frame as soon as the run ends. On a busy machine the sampler
    gets less CPU per second, so the view paints less often instead of slowing it down. ``clocks`` (wall, process
    CPU, this thread's CPU) are for tests."""

    FPS = 30
    FIRST_FRAME_POLL_MS = 4   # until the first frame, look every 4 ms (the click → first frame latency)

    def __init__(self, budget: float = PAINT_BUDGET, duty: float = PAINT_DUTY, max_interval: float = MAX_PAINT_INTERVAL,
                 clocks=None):
        self.budget, self.duty, self.max_interval = budget, duty, max_interval
        self._wall, self._cpu, self._ui = clocks or (time.perf_counter, time.process_time, time.thread_time)
        self.start()

    def start(self) -> None:
        """A run begins (call it on the thread that paints)."""
        self._t0, self._cpu0, self._ui0, self._last = self._wall(), self._cpu(), self._ui(), 0.0

    def next(self, new: bool, first: bool) -> tuple[bool, int]:
        """(paint the newest frame now?, milliseconds until the next look). ``new``: a frame not shown yet is
        waiting; ``first``: nothing of this run has been shown."""
        if not new:
            return False, self.FIRST_FRAME_POLL_MS if first else 1000 // self.FPS
        now = self._wall()
        since = now - self._last
        ui = self._ui() - self._ui0
        work = self._cpu() - self._cpu0 - ui
        over = ui > self.budget * work or ui > self.duty * (now - self._t0)
        if not first and over and since < self.max_interval:
            return False, max(1, int(min(0.1, self.max_interval - since) * 1000))
        self._last = now
        return True, 1000 // self.FPS


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
    img = beside(a, b, 4 * scale)
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
    return batch_grid(recording.final)


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


# kind → (writer, default file suffix, file-dialog filter); "frames" writes a folder. EXPORT_MENU: the Export menu.
EXPORT_MENU = (("gif", "Animation (GIF)…"), ("apng", "Animation (APNG)…"), ("grid", "Progression grid (PNG)…"),
               ("final", "Final samples (PNG)…"), ("frames", "Folder of numbered PNG frames…"))
EXPORTS = {"gif": (export_animation, ".gif", "GIF (*.gif)"),
           "apng": (export_animation, ".png", "Animated PNG (*.png *.apng)"),
           "grid": (export_grid, "_grid.png", "PNG (*.png)"),
           "final": (export_final, "_final.png", "PNG (*.png)"),
           "frames": (export_frame_folder, "_frames", "")}


def export_writer(kind: str, recording: Recording | None) -> Callable:
    """The writer ``(path, recording) -> Path`` of export ``kind`` (:data:`EXPORTS`); a one-line ``ValueError``
    for an unknown kind or a run with nothing recorded (checked before the caller checks the target path)."""
    if kind not in EXPORTS:
        raise ValueError(f"unknown export {kind!r}")
    if recording is None or not len(recording):
        raise ValueError("nothing to export yet: run Generate first")
    return EXPORTS[kind][0]


def export_name(model_name: str, seed: int, kind: str) -> str:
    """The file (or folder) name an export suggests: ``generate_MODEL_seedS`` plus the kind's suffix."""
    return f"generate_{model_name.replace(':', '_').replace('/', '_')}_seed{seed}{EXPORTS[kind][1]}"


def export_target(kind: str, chosen: str, name: str) -> Path:
    """Where export ``kind`` writes, from what its dialog returned: for ``frames`` (``chosen``: a parent folder) a
    folder ``name`` there that does not exist yet (``name_2``, ``name_3``, …); for a file, ``chosen`` with the
    kind's suffix added when it has none."""
    if kind == "frames":
        folder, k = Path(chosen) / name, 2
        while folder.exists():
            folder, k = Path(chosen) / f"{name}_{k}", k + 1
        return folder
    return Path(chosen) if Path(chosen).suffix else Path(chosen + Path(EXPORTS[kind][1]).suffix)


def preload_model(cache: ModelCache, key: tuple, loader: Callable[[], object]) -> str:
    """Load a model into ``cache`` ahead of a run (on a worker thread); returns only its name (a model never
    crosses threads as a payload: the worker copies payloads)."""
    return cache.get(key, loader).name
