"""A Stable Diffusion run of the Generate tab without Qt: the pipeline's loading job (:func:`pipeline_loading`),
what one run samples (:class:`LatentJob`), the worker's generator (:func:`latent_frames`), its frames
(:class:`LatentFrame`, decoded on the worker) and the text the tab shows for a pipeline.

The sampling is :func:`core.latent.generate.text_to_image`, called as ``ddpm sample --model SD --prompt …``
calls it, and the final image is the full VAE's ``pipe.decode(z_0)`` clamped, as the CLI writes it — so the same
prompt, sampler, steps, size and seed give the same pixels. Every step's x_t and x̂_0 (and, when asked, the
unconditional and conditional x̂_0 guidance extrapolates between) are decoded with the chosen preview decoder
(:func:`core.latent.decoders.make_decoder`) in the worker; the recording, replay and exports are those of
:mod:`core.jobs.generate` (the last frame's x_t is the VAE's image, as the CLI's GIF ends).
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from core.images import load_image, make_grid, to_uint8
from core.jobs.generate import Recording, RunFrame, end_run

PREVIEW_MENU = (  # (kind of core.latent.decoders.PREVIEWS, menu text, tooltip)
    ("approx", "approx (linear map)", "RGB = W·z + b per latent pixel, upsampled: nearly free (fitted once per VAE "
     "from its own decodes)"),
    ("taesd", "TAESD", "The tiny autoencoder (madebyollin/taesd from the Hugging Face cache) decodes x̂_0; about "
     "1/8 of the VAE's cost"),
    ("vae", "full VAE", "The pipeline's own VAE, x = D(z/s): exact, and the slowest (seconds a step for 512² on a "
     "CPU)"),
)
DEFAULT_PREVIEW = "approx"
GUIDANCE_RANGE = (1.0, 20.0)
SIZE_PRESETS = (512, 768)
MAX_SIDE = 2048
PREVIEW_SHARE = 0.01   # decoding previews takes at most this share of the sampling time (steps are skipped)
PROMPT_HISTORY_KEY = "generate/recentPrompts"
MAX_PROMPTS = 20

LATENT_TIPS = {
    "promptEdit": "The text to draw: CLIP's text encoder τ turns it into the UNet's cross-attention condition c "
                  "(tokens past the encoder's length are ignored, with a warning)",
    "negativePromptEdit": "Text to steer away from: its encoding replaces the empty prompt ∅ in "
                          "ε̃ = ε(z_t, τ(negative)) + w·(ε(z_t, τ(c)) − ε(z_t, τ(negative)))",
    "guidanceSlider": "Classifier-free guidance w (Ho & Salimans 2022): ε̃ = ε(z_t, ∅) + w·(ε(z_t, c) − ε(z_t, ∅)); "
                      "w = 1 is the prompt alone (one UNet call a step), SD's usual 7.5 follows the prompt harder",
    "sizePresetCombo": "Image size presets: 512², 768² and the model's native size (its UNet's sample_size × the "
                       "VAE's factor)",
    "widthSpin": "Image width in pixels: a multiple of the VAE's factor (latents are width / factor wide)",
    "heightSpin": "Image height in pixels: a multiple of the VAE's factor",
    "previewDecoderCombo": "How the live view and the exports decode latents: approx (a linear map, nearly free), "
                           "TAESD, or the full VAE. The final image is always the full VAE's",
    "guidancePartsCheck": "Also show the unconditional x̂_0 (from ε(z_t, ∅)) beside the conditional one (from "
                          "ε(z_t, c)): guidance extrapolates from the first through the second by w",
    "promptHistoryButton": "Recent prompts (remembered): choose one to fill the prompt",
}


def snap(value: int, factor: int) -> int:
    """``value`` rounded to the nearest positive multiple of ``factor`` (at most :data:`MAX_SIDE`)."""
    return int(min(MAX_SIDE - MAX_SIDE % factor, max(factor, round(int(value) / factor) * factor)))


def size_presets(pipe) -> list[tuple[str, int]]:
    """The size menu's (text, side): 512², 768² and the native size (named so), in increasing order."""
    native = pipe.default_size
    sides = sorted({*SIZE_PRESETS, native})
    return [(f"{s}×{s}" + (" (native)" if s == native else ""), s) for s in sides]


def pipeline_note(pipe) -> str:
    """What the model note says about a loaded pipeline."""
    den = pipe.denoiser
    f = pipe.vae_scale_factor
    return (f"{pipe.name}: Stable Diffusion pipeline, native {pipe.default_size}×{pipe.default_size} "
            f"({den.channels}×{den.resolution}×{den.resolution} latents, VAE factor {f}), {den.prediction_type}-"
            f"prediction, T = {den.schedule.T}")


def example_prompts(pipe) -> list[str]:
    """Prompts to offer beside the recent ones: the built-in digit pipeline's caption examples
    (:data:`core.latent.captions.EXAMPLE_PROMPTS`, non-empty ones), nothing for other pipelines."""
    from core.latent.captions import EXAMPLE_PROMPTS
    from core.models.load import builtin_root
    folder = getattr(pipe, "folder", None)
    try:
        builtin = folder is not None and Path(folder).resolve() == (builtin_root() / "mnist-sd").resolve()
    except OSError:
        builtin = False
    return [p for p in EXAMPLE_PROMPTS if p] if builtin else []


def remembered_prompt(value):
    """A stored prompt history entry, or None (non-text, empty or overlong entries are dropped)."""
    return value if isinstance(value, str) and value.strip() and len(value) <= 2000 else None


# ----- loading ----------------------------------------------------------------------------------------------
class Loaded:
    """The loading job's result: a plain holder, so the pipeline crosses to the UI thread as is (payloads that
    are dataclasses would be copied field by field)."""

    def __init__(self, pipe):
        self.pipe = pipe


def pipeline_loading(spec: str, device, keep=None, keep_spec: str | None = None) -> Iterator[str]:
    """The Generate tab's loading job: yields ``(k, n, stage)`` for each stage of
    :func:`core.jobs.pipelines.load_pipeline_job` and returns :class:`Loaded`. When the load fails (or is
    cancelled), ``keep`` — the pipeline the panel had, for ``keep_spec`` — goes back into the shared cache
    (the loading job empties it before it starts), so the previous model stays everyone's."""
    from core.jobs.pipelines import PIPELINES, load_pipeline_job, pipeline_key
    from core.latent.pipeline import LOAD_STAGES
    done = False
    try:
        for item in load_pipeline_job(spec, device):
            if isinstance(item, str):
                k = LOAD_STAGES.index(item) if item in LOAD_STAGES else 0
                yield (k + 1, len(LOAD_STAGES), item)
            else:
                done = True
                return Loaded(item)
    finally:
        if not done and keep is not None and keep_spec is not None:
            try:
                PIPELINES.get(pipeline_key(keep_spec, keep.device), lambda: keep)
            except Exception:  # noqa: BLE001 - its folder went away: nothing to key it by
                pass


# ----- the job ------------------------------------------------------------------------------------------------
@dataclass
class LatentJob:
    """One Stable Diffusion run, fixed at the click. ``init_path`` / ``init_array`` (H×W×3 in [−1, 1]) with
    ``t_start``: "denoise from here" — the photo fitted (:func:`core.latent.forward.fit_photo`) within
    max(height, width), encoded, noised to t_start by eq. 5 and denoised with the prompt."""

    spec: str
    prompt: str
    negative_prompt: str | None = None
    guidance: float = 7.5
    height: int | None = None
    width: int | None = None
    n: int = 1
    seed: int = 0
    sampler: str = "ddim"
    steps: int | None = None
    eta: float = 0.0
    preview: str = DEFAULT_PREVIEW
    guidance_parts: bool = False
    init_path: str | None = None
    init_array: np.ndarray | None = None
    t_start: int | None = None
    preview_share: float | None = PREVIEW_SHARE


@dataclass
class LatentFrame(RunFrame):
    """A :class:`~core.jobs.generate.RunFrame` of decoded latents, with the unconditional and conditional x̂_0
    (uint8 N×3×H×W each) when the run keeps them."""

    parts_u8: tuple | None = None

    @property
    def parts(self) -> tuple[np.ndarray, np.ndarray] | None:
        if self.parts_u8 is None:
            return None
        return make_grid(self.parts_u8[0], pad=1), make_grid(self.parts_u8[1], pad=1)

    @property
    def nbytes(self) -> int:
        extra = sum(p.nbytes for p in self.parts_u8) if self.parts_u8 is not None else 0
        return int(self.xt_u8.nbytes + self.x0_u8.nbytes + extra)


def init_image(job: LatentJob) -> np.ndarray | None:
    """The photo "denoise from here" starts from, fitted as the run uses it, or None."""
    if job.t_start is None:
        return None
    from core.latent.forward import fit_photo
    img = load_image(job.init_path) if job.init_path is not None else job.init_array
    if img is None:
        raise ValueError("denoise from here needs a photo: open one first")
    side = max(job.height or 0, job.width or 0) or None
    return fit_photo(img, side) if side else img


def _u8(x: torch.Tensor) -> np.ndarray:
    return to_uint8(x.detach().float().cpu().numpy())


def latent_frames(job: LatentJob, pipe, recording: Recording) -> Iterator[LatentFrame]:
    """The worker's generator for a pipeline run: yield a :class:`LatentFrame` after every UNet call (decoded by
    the job's preview decoder, recorded), then decode the result with the full VAE and return it (N×3×H×W
    float32 in [−1, 1], the ``images`` of ``ddpm sample -o OUT.npz``). Closing it between two steps cancels the
    run and frees its tensors (and the GPU cache).

    Previews never cost more than ``job.preview_share`` of the sampling time so far: a step whose decode would
    exceed it is not decoded (a bare ``yield``, still a cancel point; the recording keeps the decoded steps, the
    first and the last always). A real UNet step takes far longer than the approx decoder, so every step is
    decoded; a toy pipeline's 30 ms steps skip some. ``preview_share`` None decodes every step."""
    from core.latent.decoders import make_decoder
    from core.latent.generate import text_to_image
    decoder = make_decoder(pipe, job.preview)
    init = init_image(job)
    steps = text_to_image(pipe, job.prompt, job.negative_prompt or None, guidance=job.guidance,
                          height=None if init is not None else job.height,
                          width=None if init is not None else job.width, n=job.n, seed=job.seed,
                          sampler=job.sampler, steps=job.steps, eta=job.eta, init_image=init, t_start=job.t_start,
                          keep_guidance_parts=job.guidance_parts)
    recording.model_name = pipe.name
    recording.schedule_T = pipe.denoiser.schedule.T
    last = frame = None
    share = job.preview_share
    try:
        start = before = time.perf_counter()
        sampled = decoding = 0.0
        for step in steps:
            now = time.perf_counter()
            sampled += now - before
            last = step
            if share is not None and 1 < step.index < step.total and decoding > share * sampled:
                before = time.perf_counter()
                yield
                continue
            xt, x0 = decoder.decode_step(step.x_t, step.x0_pred)
            parts = None
            if step.x0_parts is not None:
                both = decoder.decode(torch.cat(step.x0_parts))
                parts = (_u8(both[:job.n]), _u8(both[job.n:]))
            frame = LatentFrame(step.index, step.total, step.t, _u8(xt), _u8(x0), time.perf_counter() - start,
                                parts_u8=parts)
            recording.add(frame)
            before = time.perf_counter()
            decoding += before - now
            yield frame
        yield   # a cancel point before the VAE (seconds for a 512² image on a CPU)
        images = pipe.decode(last.x_t).clamp(-1, 1).cpu()
        final = images.numpy().astype(np.float32).copy()
        done = dataclasses.replace(frame, xt_u8=_u8(images))   # the result itself, by the full VAE
        if recording.frames and recording.frames[-1] is frame:
            recording.frames[-1] = done
        recording.latest = done
        recording.final = final
        return final
    finally:
        on_gpu = last is not None and last.x_t.device.type == "cuda"
        del last
        end_run(recording, steps, on_gpu)
