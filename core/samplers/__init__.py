"""The reverse process p_θ(x_{t−1} | x_t) (the notes' eq. 6–8) as Python generators: DDPM, DDIM, DPM-Solver++(2M).

``sample(denoiser, …)`` validates its arguments at once (one-line ValueErrors) and returns a generator that yields
a :class:`SamplerStep` after every model call; closing it (``gen.close()``, or just dropping it) cancels between
two steps. The last ``x_t`` yielded is the sample.

Reproducibility: all noise comes from one CPU ``torch.Generator`` seeded with ``seed`` and is moved to the device,
drawn in diffusers' order — first the whole batch's initial noise in one draw (or, with ``x_start``, the forward
noise of eq. 5), then one batch-shaped draw at each step that adds noise — so a seed gives the same images on
CPU and GPU, and the same images as ``DDPMPipeline`` / ``DDIMPipeline`` / ``DPMSolverMultistepScheduler``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from core.device import autocast, pick_device
from core.models.denoiser import check_training_T
from core.models.prediction import to_x0
from core.samplers.clipping import parse_threshold, process_x0
from core.samplers.ddim import DDIMSolver
from core.samplers.ddpm import VARIANCE_TYPES, DDPMSolver
from core.samplers.dpm_solver import DPMSolverPP2M
from core.samplers.guidance import GuidedModel, TextCondition
from core.samplers.timesteps import SPACINGS, max_steps, sdedit_timesteps, spaced_timesteps

SAMPLERS = ("ddpm", "ddim", "dpmpp2m")
SAMPLER_NAMES = {"ddpm": "DDPM (ancestral)", "ddim": "DDIM", "dpmpp2m": "DPM-Solver++(2M)"}
DEFAULT_SPACING = {"ddpm": "leading", "ddim": "leading", "dpmpp2m": "linspace"}  # diffusers' defaults
MIN_ALPHA_CUMPROD = 2.0**-24  # keeps x̂_0 = (x_t − σε̂)/α finite at a zero-terminal-SNR end
MAX_BATCH = 4096


class SamplerError(ValueError):
    """Bad sampler arguments; one line."""


@dataclass(frozen=True)
class SamplerStep:
    """After model call ``index`` (1…``total``) at timestep ``t``: the new state ``x_t`` (the state at the next
    visited timestep; after the last step, the sample) and the model's x̂_0 at ``t`` (clipped/thresholded as the
    sampler used it). Tensors are B×C×H×W on the sampling device, fresh each step (never modified later)."""

    index: int
    total: int
    t: int
    x_t: torch.Tensor
    x0_pred: torch.Tensor
    x0_parts: tuple | None = None  # with keep_guidance_parts: (unconditional x̂_0, conditional x̂_0), unclipped


def default_steps(sampler: str, T: int = 1000) -> int:
    """DDPM: every timestep (T); DDIM: 50; DPM-Solver++(2M): 20 — each capped by what T allows."""
    _check_sampler(sampler)
    return {"ddpm": T, "ddim": min(50, T), "dpmpp2m": min(20, T - 1)}[sampler]


def plan_timesteps(T: int, sampler: str = "ddpm", steps: int | None = None, timestep_spacing: str | None = None,
                   steps_offset: int = 0, t_start: int | None = None) -> np.ndarray:
    """The timesteps a run visits, in order (the model is called once at each): diffusers' spacing for a run from
    noise, or linspace over 0…t_start for SDEdit (``steps`` capped to fit). For plots and progress displays."""
    _check_sampler(sampler)
    solver_style = sampler == "dpmpp2m"
    spacing = timestep_spacing or DEFAULT_SPACING[sampler]
    if spacing not in SPACINGS:
        raise SamplerError(f"unknown timestep spacing {spacing!r}; choose one of {', '.join(SPACINGS)}")
    if t_start is not None:
        t_start = _int("t_start", t_start, 1 if solver_style else 0, T - 1)
        limit = t_start if solver_style else t_start + 1
        steps = min(default_steps(sampler, T) if steps is None else _int("steps", steps, 1), limit)
        return sdedit_timesteps(t_start, steps, solver=solver_style)
    if steps is None:  # the default, capped so a "leading" offset (Stable Diffusion's 1) stays within 0…T−1
        steps = default_steps(sampler, T)
        if spacing == "leading" and not solver_style:
            steps = min(steps, T - steps_offset)
    else:
        steps = _int("steps", steps, 1, max_steps(T, solver_style))
    try:
        return spaced_timesteps(T, steps, spacing, steps_offset, solver_style)
    except ValueError as e:
        raise SamplerError(str(e)) from None


def _check_sampler(sampler: str) -> str:
    if sampler not in SAMPLERS:
        raise SamplerError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    return sampler


def _int(name: str, value, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise SamplerError(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        raise SamplerError(f"{name} = {value} is outside {low}…{high}" if high is not None
                           else f"{name} must be ≥ {low}, got {value}")
    return int(value)


def _labels(denoiser, class_labels, n: int, guidance: float, device) -> torch.Tensor | None:
    if guidance != 1.0 and class_labels is None:
        raise SamplerError("guidance needs class labels (classifier-free guidance steers towards a class)")
    if class_labels is None:
        return None
    if denoiser.num_classes <= 0:
        raise SamplerError(f"{denoiser.name} is unconditional: it takes no class labels")
    y = torch.as_tensor(np.asarray(class_labels, dtype=np.int64) if not isinstance(class_labels, torch.Tensor)
                        else class_labels).long().reshape(-1).cpu()
    if y.numel() == 1:
        y = y.expand(n)
    if y.numel() != n:
        raise SamplerError(f"{y.numel()} class labels for a batch of {n}")
    bad = (y < -1) | (y >= denoiser.num_classes)
    if bad.any():
        raise SamplerError(f"class {int(y[bad][0])} is outside 0…{denoiser.num_classes - 1} (−1 = no class)")
    if (y < 0).any() or guidance != 1.0:
        if not getattr(denoiser, "has_null_class", True):
            raise SamplerError(f"{denoiser.name} has no 'no class' embedding, so no guidance or unlabelled samples")
    return y.to(device).contiguous()


def _x_start(x_start, n: int, want: tuple, name: str) -> torch.Tensor:
    x = torch.as_tensor(x_start if isinstance(x_start, torch.Tensor) else np.asarray(x_start), dtype=torch.float32)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or tuple(x.shape[1:]) != want:
        raise SamplerError(f"x_start has shape {tuple(x.shape)}; {name} needs B×{want[0]}×{want[1]}×{want[2]}")
    if x.shape[0] == 1 and n > 1:
        x = x.expand(n, *want)
    elif x.shape[0] != n and n != 1:
        raise SamplerError(f"x_start holds {x.shape[0]} images but n = {n}")
    if not torch.isfinite(x).all():
        raise SamplerError("x_start contains NaN or inf")
    return x.contiguous()


def _size(denoiser, size) -> tuple[int, int]:
    if size is None:
        return int(denoiser.resolution), int(denoiser.resolution)
    if not (isinstance(size, (tuple, list)) and len(size) == 2):
        raise SamplerError(f"size must be (height, width), got {size!r}")
    return _int("height", size[0], 1, 16384), _int("width", size[1], 1, 16384)


def _explicit_timesteps(timesteps, T: int) -> np.ndarray:
    ts = np.asarray(timesteps)
    if ts.ndim != 1 or len(ts) == 0 or not np.issubdtype(ts.dtype, np.integer):
        raise SamplerError("timesteps must be a non-empty list of integers")
    if np.any(np.diff(ts) >= 0) or ts.min() < 0 or ts.max() > T - 1:
        raise SamplerError(f"timesteps must descend strictly within 0…{T - 1}")
    return ts.astype(np.int64)


def _text_condition(denoiser, cond: TextCondition, n: int, device) -> TextCondition:
    if not getattr(denoiser, "cross_attention", False):
        raise SamplerError(f"{denoiser.name} takes no text prompt")
    if len(cond) != n or cond.negative.shape != cond.embeds.shape:
        raise SamplerError(f"text condition for {len(cond)} images (negative {tuple(cond.negative.shape)}) "
                           f"for a batch of {n}")
    return TextCondition(cond.embeds.to(device), cond.negative.to(device))


def sample(denoiser, schedule=None, sampler: str = "ddpm", steps: int | None = None, eta: float = 0.0,
           seed: int = 0, n: int = 1, class_labels=None, guidance: float = 1.0, variance_type: str | None = None,
           clip_sample: bool | None = None, dynamic_threshold=None, timestep_spacing: str | None = None,
           x_start=None, t_start: int | None = None, device=None, precision: str = "fp32",
           channels_last: bool = False, use_clipped_model_output: bool = False, size=None, condition=None,
           timesteps=None, generator: torch.Generator | None = None,
           keep_guidance_parts: bool = False) -> Iterator[SamplerStep]:
    """Generate ``n`` images with ``denoiser``; returns a generator of :class:`SamplerStep`.

    - ``schedule``: default the denoiser's own (required for the oracle, which works on any schedule).
    - ``sampler``: ``ddpm`` | ``ddim`` | ``dpmpp2m``; ``steps``: default :func:`default_steps`; ``eta``: DDIM's η.
    - ``class_labels``: an int or one per image (−1 = no class); ``guidance``: classifier-free guidance scale w.
    - ``variance_type`` (DDPM), ``clip_sample``, ``dynamic_threshold`` (quantile p or (p, max)): default from the
      model (DPM-Solver++ does not clip unless asked, as diffusers), ``timestep_spacing``: leading | trailing |
      linspace (default: the model's scheduler config, else diffusers' default for the sampler).
    - ``use_clipped_model_output`` (DDIM): recompute ε̂ = (x_t − √ᾱ_t·x̂_0)/√(1−ᾱ_t) from the clipped (or
      thresholded) x̂_0, so both terms of eq. 12 agree; off by default, as in diffusers.
    - ``x_start`` (B×C×H×W in [−1, 1]) with ``t_start``: SDEdit — noise x_start to t_start with eq. 5, then denoise
      from there over timesteps spaced evenly in 0…t_start (``steps`` capped to fit).
    - ``device``: default the denoiser's; ``precision``: fp32 | bf16 | fp16 autocast for the network;
      ``channels_last``: NHWC memory format for the network (GPUs).
    - ``size``: (H, W) of x_t, default (resolution, resolution); a latent model's latents may be any size.
    - ``condition``: a :class:`~core.samplers.guidance.TextCondition` for a text-conditioned (cross-attention)
      UNet, one row per image; guided when ``guidance`` > 1 (as diffusers' Stable Diffusion pipelines).
    - ``timesteps``: the timesteps to visit, strictly descending (overrides ``steps``/spacing; with ``x_start``
      the image is noised to the first one — diffusers' img2img ``strength`` picks a tail of the usual spacing).
    - ``generator``: a CPU ``torch.Generator`` to draw from instead of a fresh one seeded with ``seed`` (so a
      caller's earlier draws, e.g. a VAE's latent sample, come first in the same stream, as in diffusers).
    - ``keep_guidance_parts``: each guided step also yields ``x0_parts``, the x̂_0 of the unconditional and the
      conditional prediction (what guidance extrapolates between); None when the step is not guided.
    """
    _check_sampler(sampler)
    schedule = schedule if schedule is not None else denoiser.schedule
    if schedule is None:
        raise SamplerError(f"{denoiser.name} works on any schedule; pass schedule=…")
    try:
        check_training_T(denoiser, schedule)
    except ValueError as e:
        raise SamplerError(str(e)) from None
    T = schedule.T
    n = _int("n", n, 1, MAX_BATCH)
    seed = _int("seed", seed, -(2**63), 2**64 - 1)
    solver_style = sampler == "dpmpp2m"
    eta = float(eta)
    if not 0.0 <= eta <= 1.0:
        raise SamplerError(f"eta must be in [0, 1], got {eta}")
    guidance = float(guidance)
    if not math.isfinite(guidance):
        raise SamplerError(f"guidance must be a finite number, got {guidance}")
    variance_type = variance_type or denoiser.variance_type
    if variance_type not in VARIANCE_TYPES:
        raise SamplerError(f"unknown variance type {variance_type!r}; choose one of {', '.join(VARIANCE_TYPES)}")
    clip = bool(clip_sample) if clip_sample is not None else (denoiser.clip_sample and not solver_style)
    threshold = parse_threshold(dynamic_threshold if dynamic_threshold is not None
                                else getattr(denoiser, "dynamic_threshold", None))
    spacing = timestep_spacing or getattr(denoiser, "timestep_spacing", None) or DEFAULT_SPACING[sampler]
    dev = pick_device(device) if device is not None else denoiser.device
    ctx = autocast(dev, precision)

    if (x_start is None) != (t_start is None):
        raise SamplerError("x_start and t_start go together (denoise an image from step t_start)")
    if timesteps is not None:
        timesteps = _explicit_timesteps(timesteps, T)
    else:
        timesteps = plan_timesteps(T, sampler, steps, spacing, getattr(denoiser, "steps_offset", 0), t_start)
    height, width = _size(denoiser, size)
    if x_start is not None:
        x_start = _x_start(x_start, n, (denoiser.channels, height, width), denoiser.name)
        n = x_start.shape[0]
    if condition is not None:
        if class_labels is not None:
            raise SamplerError("a text condition and class labels cannot be combined")
        cond = _text_condition(denoiser, condition, n, dev)
    elif getattr(denoiser, "cross_attention", False):
        raise SamplerError(f"{denoiser.name} needs a text condition (a prompt)")
    else:
        cond = _labels(denoiser, class_labels, n, guidance, dev)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise SamplerError("generator must be a torch.Generator")

    ab = np.maximum(np.asarray(schedule.alphas_cumprod, dtype=np.float64), MIN_ALPHA_CUMPROD)
    if sampler == "ddpm":
        solver = DDPMSolver(ab, timesteps, variance_type)
    elif sampler == "ddim":
        final = 1.0 if getattr(denoiser, "set_alpha_to_one", True) else float(ab[0])
        solver = DDIMSolver(ab, timesteps, eta, final_alpha_cumprod=final)
    else:
        solver = DPMSolverPP2M(ab, timesteps)
    if denoiser.device != dev:
        denoiser.to(dev)
    if channels_last and hasattr(denoiser, "net"):
        denoiser.net.to(memory_format=torch.channels_last)
    model = GuidedModel(denoiser, schedule, cond, guidance, ctx, keep_parts=bool(keep_guidance_parts))
    gen = generator if generator is not None else torch.Generator().manual_seed(seed)
    shape = (n, denoiser.channels, height, width)
    return _run(denoiser, solver, model, timesteps, ab, shape, gen, x_start, clip, threshold, dev,
                channels_last, bool(use_clipped_model_output) and (clip or threshold is not None))


def _run(denoiser, solver, model, timesteps, ab, shape, gen, x_start, clip, threshold, dev, channels_last,
         eps_from_clipped=False):
    """The loop: one (guided) model call, x̂_0 (and ε̂ for DDIM), clipping, noise, solver step, yield."""
    ptype = denoiser.prediction_type
    n = shape[0]
    total = len(timesteps)
    a_t = np.sqrt(ab[timesteps]).tolist()
    s_t = np.sqrt(1.0 - ab[timesteps]).tolist()
    reps = 2 if model.guided else 1
    t_all = torch.as_tensor(np.repeat(timesteps[:, None], n * reps, axis=1), device=dev)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    with torch.inference_mode():
        if x_start is None:
            x = torch.randn(shape, generator=gen).to(dev, memory_format=fmt)
        else:
            noise = torch.randn(shape, generator=gen)
            t0 = int(timesteps[0])
            x = (float(np.sqrt(ab[t0])) * x_start + float(np.sqrt(1.0 - ab[t0])) * noise).to(dev, memory_format=fmt)
    for i in range(total):
        with torch.inference_mode():
            out = model(x, t_all[i])
            a, s = a_t[i], s_t[i]
            eps = None
            if ptype == "epsilon":
                x0 = torch.add(x, out, alpha=-s).div_(a)
                eps = out
            elif ptype == "sample":
                if solver.needs_eps:
                    eps = torch.add(x, out, alpha=-a).div_(s)
                x0 = out if out is not x else out.clone()  # clipping works in place
            else:  # v_prediction
                if solver.needs_eps:
                    eps = torch.mul(x, s).add_(out, alpha=a)
                x0 = torch.mul(x, a).add_(out, alpha=-s)
            parts = None
            if model.parts is not None:
                parts = tuple(to_x0(p, x, a, s, ptype) for p in model.parts)
                model.parts = None
            x0 = process_x0(x0, clip, threshold)
            if eps_from_clipped and eps is not None:
                eps = torch.mul(x0, -a).add_(x).div_(s)
            noise = torch.randn(shape, generator=gen).to(dev) if solver.draws_noise(i) else None
            x = solver.step(i, x, x0, eps, noise)
        yield SamplerStep(i + 1, total, int(timesteps[i]), x, x0, parts)


def run_to_end(steps: Iterator[SamplerStep]) -> SamplerStep:
    """Drain a sampling generator and return its last step (the final sample is ``.x_t``)."""
    last = None
    for last in steps:
        pass
    if last is None:
        raise SamplerError("the sampler made no steps")
    return last
