"""The variational bound as a job (the ELBO tab, and the images of ``ddpm elbo``), without Qt.

L_VLB = L_T + Σ_{t=2}^{T} L_{t−1} + L_0 (DDPM notes, eq. 9–14), every term in bits per dimension, computed by
:func:`core.vlb.compute_bound`. :func:`load_images` turns a photo or a dataset into the model-ready x_0 both the CLI
and the window evaluate; :func:`model_request` names and loads the model a SPEC asks for (``photo`` resolved to the
window's file or pixels); :func:`elbo_events` is the generator a worker drives: it loads the model (cached), makes
x_0, yields an :class:`ElboProgress` per batch (copies) and returns an :class:`ElboRun` with the bound's numbers.
For a Stable Diffusion pipeline, :func:`latent_elbo_events` does the same in latent space (:mod:`core.vlb.latent`):
it loads the pipeline through the shared cache (:func:`core.jobs.pipelines.load_pipeline_job`, stage by stage),
encodes the images with the VAE, yields the run's estimate, then the batches.
"""
from __future__ import annotations

import html
import math
import numbers
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from core.messages import format_eta
from core.model_spec import ORACLE, PHOTO, ModelCache, cache_key, parse_spec
from core.schedule import NoiseSchedule
from core.vlb import BoundResult, compute_bound

DATASET = "dataset"          # an ElboJob's other source (PHOTO is the photo)
DEFAULT_N = 8
MAX_N = 100_000  # as many images as a folder may hold (core.data.MAX_FOLDER_IMAGES)
NO_PHOTO = "open a photo first (File ▸ Open image)"
OPEN_FOLDER = "open:folder"  # the image menu's "A folder of images…" entry

# What the ELBO tab's controls mean, with their formulas (its tooltips, by objectName), and its image menu.
SOURCES = (  # label, spec, tooltip
    ("The loaded photo (resized to the model's resolution)", PHOTO, "The window's photo, centre-cropped and resized "
     "to the model's H×W (Lanczos), grey for a one-channel model — as `ddpm elbo --image FILE`"),
    ("Built-in MNIST held-out digits", "builtin:mnist", "The first N of the 500 digits no model here was trained "
     "on — as `ddpm elbo --data builtin:mnist --n N`"),
    ("A folder of images…", OPEN_FOLDER, "The first N images of a folder (sorted), resized to the model's "
     "resolution — as `ddpm elbo --data DIR --n N`"),
)
VARIANCES = (("the model's own", None), ("small: σ_t² = β̃_t", "small"), ("large: σ_t² = β_t", "large"))
PHOTO_ORACLE_TIP = ("The exact denoiser of the photo: x̂_0 = x_0, so μ_θ is the true posterior mean and with "
                    "σ_t² = β̃_t every KL term L_{t−1} is 0; any schedule")
TIPS = {
    "elboModelCombo": "The model p_θ whose bound is computed: μ_θ(x_t, t) = μ̃_t(x_t, x̂_0) (eq. 14) from its "
                      "prediction; the built-in model, a model folder, or an exact oracle",
    "elboSourceCombo": "The images x_0 whose bound is computed (on the uint8 grid x = u/127.5 − 1); the terms are "
                       "averaged over the images",
    "elboCountSpin": "N: how many dataset images (the first N); every term is the mean over them. The work is N·T "
                     "model evaluations",
    "elboVarianceCombo": "The variance of p_θ(x_{t−1} | x_t) = N(μ_θ, σ_t² I): small σ_t² = β̃_t = (1−ᾱ_{t−1})/"
                         "(1−ᾱ_t)·β_t (then L_{t−1} = ‖μ̃_t − μ_θ‖² / 2β̃_t), or large σ_t² = β_t. The decoder "
                         "L_0 uses β̃ of the second step either way",
    "elboSeedSpin": "Seed of the noise ε that draws each x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε (one x_t per image and t): "
                    "the same seed gives the numbers of `ddpm elbo --seed S`",
    "elboComputeButton": "Compute every term L_0…L_T of L_VLB = L_T + Σ_{t=2}^{T} L_{t−1} + L_0 on a worker thread "
                         "(N·T model evaluations, batched)",
    "elboTotalLabel": "L_VLB = L_T + Σ_{t=2}^{T} L_{t−1} + L_0 in bits/dim: an upper bound on −log₂ p_θ(x_0) / "
                      "(C·H·W), averaged over the images",
    "elboBreakdownLabel": "The three parts: L_0 = −log p_θ(x_0 | x_1), Σ_{t=2}^{T} L_{t−1} (the KL terms), L_T = "
                          "KL(q(x_T | x_0) ‖ N(0, I)); bits per image = bits/dim · C·H·W",
    "elboPlot": "L_VLB = L_T + Σ_{t=2}^{T} L_{t−1} + L_0 (notes eq. 9–14), each term in bits/dim "
                "(nats / (C·H·W·ln 2)):\n"
                "  L_{t−1} = KL(q(x_{t−1} | x_t, x_0) ‖ p_θ(x_{t−1} | x_t)), t = 2…T, a Gaussian KL, "
                "one x_t ~ q(x_t | x_0) per image and t\n"
                "  L_0 = −log p_θ(x_0 | x_1), a discretized Gaussian over the 256 pixel bins (drawn at t = 1)\n"
                "  L_T = KL(q(x_T | x_0) ‖ N(0, I)), closed form, no network (drawn at t = T + 1)\n"
                "Log y axis. Hover a point for its value and share of the total; click it to show that x_t.",
    "elboPromptEdit": "The prompt c of the Stable Diffusion UNet whose bound is computed: ε̂ = ε_θ(z_t, t, τ(c)); "
                      "empty = the unconditional model τ(\"\"). Classifier-free guidance does not enter: the bound "
                      "is of one model p_θ(z_0 | c)",
    "elboLatentNote": "A pipeline's bound is of its latents z_0 = s·E(x) (the VAE posterior mean), not of the "
                      "pixels; L_0 = −log N(z_0; μ_θ(z_1, 1), σ²) is a continuous density, so it can be negative. "
                      "The VAE's own reconstruction D(z_0/s) is shown as PSNR",
    "elboHoverLabel": "The term under the mouse: its formula, its value in bits/dim and its share L_k / L_VLB of the "
                      "total",
}


def load_images(denoiser, *, image=None, data: str | None = None, n: int | None = None,
                split: str | None = None) -> tuple[np.ndarray, str]:
    """The N×C×H×W images to evaluate, at the model's resolution and channels, on the uint8 grid, and a short
    description. ``image``: a photo file, or a photo already in memory (H×W×3 in [−1, 1]; then ``"the pasted
    photo"``); else ``data``: builtin:mnist (``split`` heldout by default, or train/all) or a folder of images, the
    first ``n`` (default 8). Raises ``ValueError`` with one line for a combination that makes no sense."""
    from core.images import load_image, photo_to_model_input
    c, r = denoiser.channels, denoiser.resolution
    if image is not None:
        if n is not None or split is not None:
            raise ValueError("--n and --split go with --data, not --image")
        if isinstance(image, np.ndarray):
            return photo_to_model_input(image, r, c, on_uint8_grid=True)[None], "the pasted photo"
        return photo_to_model_input(load_image(image), r, c, on_uint8_grid=True)[None], str(image)
    if data is None:
        raise ValueError("give a photo or a dataset (--image or --data)")
    n = DEFAULT_N if n is None else n
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or not 1 <= n <= MAX_N:
        raise ValueError(f"--n must be an integer in 1…{MAX_N}, got {n!r}")
    from core.data import load_dataset
    builtin = data.startswith("builtin:")
    if split not in (None, "all", "train") and not builtin:
        raise ValueError(f"--split {split} needs builtin:mnist (a folder has no held-out split)")
    split = split or ("heldout" if builtin else "all")
    images = load_dataset(data, resolution=r, split=split, channels=c)
    if n > len(images):
        raise ValueError(f"--n {n}: {data} ({split}) has only {len(images)} images")
    return images.images[:n], f"{data} ({split}, first {n})"


def model_request(spec: str, device: str, photo_path=None, photo: np.ndarray | None = None
                  ) -> tuple[tuple, Callable]:
    """(cache key, loader) for ``spec`` on ``device``. ``photo`` (the oracle over the window's photo) is the oracle
    of ``photo_path`` when the photo has a file, else of the ``photo`` pixels, keyed by their hash (never by
    ``id()``, which Python reuses: a new photo would get the previous one's oracle)."""
    from core.models.load import load_model, oracle_for_array
    if parse_spec(spec).kind == PHOTO:
        if photo_path is not None:
            spec = f"oracle:{photo_path}"
        elif photo is None:
            raise ValueError(NO_PHOTO)
        else:
            pixels = np.array(photo, copy=True)
            return cache_key(PHOTO, device, pixels=pixels), (lambda: oracle_for_array(pixels, device))
    spec = str(parse_spec(spec))
    return cache_key(spec, device), (lambda: load_model(spec, device=device))


def accepts_any_schedule(spec: str) -> bool:
    """Before loading: the oracle works with any schedule; a trained model is tied to its own."""
    return parse_spec(spec).kind in (PHOTO, ORACLE)


@dataclass(frozen=True)
class ElboJob:
    """Everything a run needs, taken from the widgets on the UI thread (no widget is touched by the worker)."""

    model_key: tuple
    loader: Callable
    source: str                      # PHOTO or DATASET
    photo_path: str | None = None    # the photo's file (the CLI's --image), or
    photo_array: np.ndarray | None = None  # a photo with no file (pasted), H×W×3 in [−1, 1]
    data: str | None = None          # builtin:mnist or a folder (the CLI's --data)
    n: int = 1
    variance: str | None = None      # None: the model's own
    seed: int = 0
    schedule: NoiseSchedule | None = None  # the window's; used only by a model that accepts any schedule


@dataclass(frozen=True)
class ElboProgress:
    """A batch done: ``terms`` (T+1,) holds the image-mean bits/dim of every finished term and NaN for the rest."""

    done: int
    total: int
    terms: np.ndarray
    elapsed: float
    note: str = ""                   # the run's estimate line (a pipeline's bound), shown beside the progress


@dataclass(frozen=True)
class ElboStage:
    """A step before a pipeline's first batch (loading a part, encoding the images); ``note`` the estimate line
    once it is known."""

    text: str
    note: str = ""


@dataclass(frozen=True)
class ElboRun:
    """A finished bound, as the panel shows it. ``terms`` = [L_0, L_1, …, L_T] (bits/dim, mean over images), the
    same numbers as :attr:`core.vlb.BoundResult.terms`; ``per_image`` N×(T+1)."""

    terms: np.ndarray
    per_image: np.ndarray
    model_name: str
    source: str
    schedule_name: str
    T: int
    variance: str
    seed: int
    clip_denoised: bool
    dims: int
    any_schedule: bool
    seconds: float
    space: str = "pixel"             # or "latent": a pipeline's bound, per latent dimension
    prompt: str = ""
    vae_psnr_db: float | None = None
    estimate_s: float | None = None
    latent_shape: tuple | None = None

    @property
    def latent(self) -> bool:
        return self.space == "latent"

    @property
    def bits_per_dim(self) -> float:
        return float(self.terms.sum())

    @property
    def evaluations(self) -> int:
        """N·T: the (image, timestep) terms that needed the model (L_T needs none)."""
        return self.per_image.size - self.per_image.shape[0]

    @property
    def label(self) -> str:
        return f"{self.schedule_name}, T={self.T}, {self.variance}"

    def label_against(self, other: "ElboRun | None") -> str:
        """:attr:`label`, led by the model and images where they differ from ``other``'s."""
        if other is None or (other.model_name, other.source) == (self.model_name, self.source):
            return self.label
        return f"{self.model_name} on {self.source}, {self.label}"


def elbo_events(job: ElboJob, cache: ModelCache):
    """The worker: load the model (cached), make x_0 as ``ddpm elbo`` does, then yield an :class:`ElboProgress`
    per batch of the bound and return an :class:`ElboRun`. Closing the generator stops it after the batch in
    flight (the bound's own generator is closed with it)."""
    model = cache.get(job.model_key, job.loader)
    yield None  # a cancel point between loading and the first batch
    r = model.resolution
    if job.source == PHOTO:
        if job.photo_path is not None:
            x0, _ = load_images(model, image=job.photo_path)
            source = Path(job.photo_path).name
        elif job.photo_array is not None:
            x0, source = load_images(model, image=np.asarray(job.photo_array))
        else:
            raise ValueError(NO_PHOTO)
        source += f" at {r}×{r}"
    else:
        x0, source = load_images(model, data=job.data, n=job.n)
    any_schedule = model.schedule is None
    schedule = job.schedule if any_schedule else model.schedule
    if schedule is None:
        raise ValueError(f"{model.name} needs a schedule")
    start = time.perf_counter()
    events = compute_bound(model, x0, schedule, job.variance, seed=job.seed)
    try:
        for ev in events:
            if isinstance(ev, BoundResult):
                return ElboRun(terms=ev.terms.copy(), per_image=ev.per_image.copy(), model_name=model.name,
                               source=source, schedule_name=schedule.name, T=ev.T, variance=ev.variance,
                               seed=ev.seed, clip_denoised=ev.clip_denoised, dims=ev.dims,
                               any_schedule=any_schedule, seconds=time.perf_counter() - start)
            yield ElboProgress(ev.done, ev.total, ev.terms.copy(), time.perf_counter() - start)
    finally:
        events.close()
    raise RuntimeError("the bound ended without a result")


# ----- a Stable Diffusion pipeline's bound, in latent space ----------------------------------------------------
@dataclass(frozen=True)
class LatentElboJob:
    """A pipeline's bound, from the widgets (as :class:`ElboJob`): the pipeline SPEC (a folder or a cached repo
    id) loaded on ``device`` through the shared cache, the images, the prompt (empty: unconditional)."""

    spec: str
    device: str
    source: str                      # PHOTO or DATASET
    photo_path: str | None = None
    photo_array: np.ndarray | None = None
    data: str | None = None
    n: int = 1
    prompt: str = ""
    variance: str | None = None
    seed: int = 0
    precision: str | None = None


def load_latent_images(pipe, *, image=None, data: str | None = None, n: int | None = None,
                       split: str | None = None):
    """(N×3×H×W pixels in [−1, 1] for ``pipe``'s VAE, a short description). A photo (a file, or H×W×3 in [−1, 1])
    keeps its aspect, scaled down to the model's trained size and floored to the VAE's factor
    (:func:`core.latent.forward.fit_photo`, as the latent slider and img2img see it); dataset images are
    centre-cropped to the model's square size. One-line ``ValueError`` for a combination that makes no sense."""
    import torch

    from core.images import load_image
    from core.latent.forward import fit_photo
    from core.latent.pipeline import pixels_to_vae_input
    side = pipe.default_size
    if image is not None:
        if n is not None or split is not None:
            raise ValueError("--n and --split go with --data, not --image")
        photo = np.asarray(image) if isinstance(image, np.ndarray) else load_image(image)
        pixels = pixels_to_vae_input(fit_photo(photo, side), pipe.vae_scale_factor)
        name = "the pasted photo" if isinstance(image, np.ndarray) else str(image)
        return pixels, f"{name} at {pixels.shape[3]}×{pixels.shape[2]}"
    if data is None:
        raise ValueError("give a photo or a dataset (--image or --data)")
    n = DEFAULT_N if n is None else n
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or not 1 <= n <= MAX_N:
        raise ValueError(f"--n must be an integer in 1…{MAX_N}, got {n!r}")
    from core.data import load_dataset
    builtin = data.startswith("builtin:")
    split = split or ("heldout" if builtin else "all")
    images = load_dataset(data, resolution=side, split=split, channels=3)
    if n > len(images):
        raise ValueError(f"--n {n}: {data} ({split}) has only {len(images)} images")
    return torch.from_numpy(np.ascontiguousarray(images.images[:n], dtype=np.float32)), \
        f"{data} ({split}, first {n}) at {side}×{side}"


def latent_elbo_events(job: LatentElboJob):
    """The worker for a pipeline: load it (shared cache; a stage per part), make the pixels, then the latent bound
    (:func:`core.vlb.latent.latent_bound_events`): :class:`ElboStage` events up to the estimate, an
    :class:`ElboProgress` per batch (``note`` the estimate), and last an :class:`ElboRun` with ``space="latent"``.
    Closing it stops after the call in flight."""
    from core.jobs.pipelines import load_pipeline_job
    from core.vlb.latent import BoundEstimate, LatentBound, latent_bound_events
    pipe = None
    for item in load_pipeline_job(job.spec, job.device, job.precision):
        if isinstance(item, str):
            yield ElboStage(f"Loading the pipeline: {item}…")
        else:
            pipe = item
    yield ElboStage("Reading the images…")
    if job.source == PHOTO:
        image = job.photo_path if job.photo_path is not None else job.photo_array
        if image is None:
            raise ValueError(NO_PHOTO)
        pixels, source = load_latent_images(pipe, image=image)
        if job.photo_path is not None:
            source = Path(job.photo_path).name + source[len(job.photo_path):]
    else:
        pixels, source = load_latent_images(pipe, data=job.data, n=job.n)
    start, note, est = time.perf_counter(), "", None
    events = latent_bound_events(pipe, pixels, job.prompt, job.variance, seed=job.seed)
    try:
        for ev in events:
            if isinstance(ev, str):
                yield ElboStage(ev[0].upper() + ev[1:] + "…")
            elif isinstance(ev, BoundEstimate):
                note, est = ev.line(), ev.seconds
                start = time.perf_counter()
                yield ElboStage("Computing the bound…", note)
            elif isinstance(ev, LatentBound):
                r = ev.result
                return ElboRun(terms=r.terms.copy(), per_image=r.per_image.copy(), model_name=pipe.name,
                               source=source, schedule_name=r.schedule.name, T=r.T, variance=r.variance,
                               seed=r.seed, clip_denoised=r.clip_denoised, dims=r.dims, any_schedule=False,
                               seconds=time.perf_counter() - start, space="latent", prompt=job.prompt,
                               vae_psnr_db=ev.vae_psnr_db, estimate_s=est, latent_shape=ev.latent_shape)
            else:
                yield ElboProgress(ev.done, ev.total, ev.terms.copy(), time.perf_counter() - start, note)
    finally:
        events.close()
    raise RuntimeError("the bound ended without a result")


# ----- what the ELBO tab says about a bound: rich text for its labels and the plot's range, no Qt ---------------
def term_name(k: int, T: int) -> str:
    """The notes' name of term k (0…T) as rich text."""
    return f"L<sub>{'T' if k == T else k}</sub>"


def term_formula(k: int, T: int) -> str:
    if k == 0:
        return "−log p<sub>θ</sub>(x<sub>0</sub> | x<sub>1</sub>)"
    if k == T:
        return "KL(q(x<sub>T</sub> | x<sub>0</sub>) ‖ N(0, I))"
    a, b = f"x<sub>{k}</sub>", f"x<sub>{k + 1}</sub>"
    return f"KL(q({a} | {b}, x<sub>0</sub>) ‖ p<sub>θ</sub>({a} | {b}))"


def format_bits(v: float) -> str:
    """A bits/dim value readable from 1e-14 to 1e4."""
    if not math.isfinite(v):
        return "–"
    if v == 0:
        return "0"
    a = abs(v)
    return f"{v:.4g}" if 1e-3 <= a < 1e5 else f"{v:.3e}"


def progress_line(p: ElboProgress) -> str:
    """The status line of a run in flight."""
    if not p.done:
        return f"Computing the bound: {p.total} terms…"
    rate = p.done / p.elapsed if p.elapsed > 0 else 0.0
    eta = (p.total - p.done) / rate if rate > 0 else float("inf")
    line = f"{p.done}/{p.total} terms · {rate:.3g} terms/s · ETA {format_eta(eta)}"
    return f"{line} · {p.note}" if p.note else line


def stage_line(stage: ElboStage) -> str:
    """The status line before a pipeline's first batch: the stage, and the estimate once it is known."""
    return f"{stage.text} {stage.note}." if stage.note else stage.text


LATENT_NOTE = ("Latent space: this bounds −log p(latents z<sub>0</sub> = s·E(x)), not pixels. L<sub>0</sub> is a "
               "continuous Gaussian density (latents have no 8-bit bins), so it — and the total — may be negative. "
               "Classifier-free guidance does not enter: the bound is of the UNet conditioned on the prompt "
               "(empty = unconditional).")


def done_line(run: ElboRun, old: ElboRun | None, old_kept: bool) -> str:
    """The status line of a finished run; ``old`` the curve it replaces (kept faint when ``old_kept``)."""
    n = run.per_image.shape[0]
    where = " (latent space)" if run.latent else ""
    est = f"; estimated {run.estimate_s:.1f} s" if run.estimate_s is not None else ""
    msg = (f"Done: {run.model_name} on {run.source}{where}, {n} image{'s' * (n != 1)}, {run.T} timesteps, "
           f"seed {run.seed} ({run.seconds:.1f} s{est})")
    if not run.any_schedule and old is not None and old_kept and old.model_name == run.model_name \
            and old.schedule_name == run.schedule_name and old.T == run.T:
        msg += ". This model is tied to its training schedule, so a schedule edit does not move its bound."
    return msg


def model_note(model, schedule: NoiseSchedule, any_schedule: bool) -> str:
    """What the chosen model does with the window's ``schedule``; ``model`` the loaded Denoiser or None."""
    if any_schedule:
        note = (f"Accepts any schedule: the bound uses the window's ({schedule.name}, T = {schedule.T}). Edit it "
                "and Compute again to see the bound move.")
    else:
        own = f" ({model.schedule.name}, T = {model.schedule.T})" if model is not None else ""
        note = (f"Tied to its training schedule{own}: the network only knows the timesteps it was trained on, "
                "so its bound always uses that schedule and schedule edits do not change it.")
    if model is not None:
        note = f"{html.escape(model.name)}: {model.resolution}×{model.resolution}, {model.channels} " \
               f"channel{'s' * (model.channels > 1)}. " + note
    return note


def totals_text(run: ElboRun | None, previous: ElboRun | None, live: ElboProgress | None) -> tuple[str, str | None]:
    """(the total's line, the breakdown's lines or None to leave them) for the run shown, the faint one and the
    run in flight."""
    if live is not None:
        done = np.isfinite(live.terms)
        return (f"L<sub>VLB</sub> = … &nbsp;<span style='color:#555'>({int(done.sum())} of {len(done)} terms so "
                f"far: {format_bits(float(np.nansum(live.terms)))} bits/dim)</span>"), None
    if run is None:
        return "L<sub>VLB</sub> = – bits/dim", ""
    r, f = run, format_bits
    unit = "bits/latent-dim" if r.latent else "bits/dim"
    total, T = r.bits_per_dim, r.T
    kl = float(r.terms[1:T].sum())
    pct = (lambda v: f"{100 * v / total:.3g} %") if total else (lambda v: "–")
    delta = ""
    if previous is not None:
        d = total - previous.bits_per_dim
        delta = (f" &nbsp;<span style='color:#555'>(previous {f(previous.bits_per_dim)}; "
                 f"{'+' if d >= 0 else '−'}{f(abs(d))})</span>")
    small = min(10, T - 1)
    kl_small = float(r.terms[1:small + 1].sum())
    zero = int((r.terms[1:T] <= 0).sum())
    lines = [f"L<sub>0</sub>{' (continuous)' if r.latent else ''} {f(float(r.terms[0]))} "
             f"({pct(float(r.terms[0]))}) · "
             f"Σ L<sub>1</sub>…L<sub>{T - 1}</sub> {f(kl)} ({pct(kl)}) · "
             f"L<sub>T</sub> {f(float(r.terms[T]))} ({pct(float(r.terms[T]))})"]
    if kl > 0 and T > 11:
        lines.append(f"the KL terms at t ≤ {small + 1} hold {100 * kl_small / kl:.3g} % of the KL sum")
    lines.append(f"{r.model_name} · {html.escape(r.source)} · schedule {html.escape(r.schedule_name)}, "
                 f"T = {T}{'' if r.any_schedule else ' (its own)'} · σ<sub>t</sub>² = "
                 f"{'β̃<sub>t</sub>' if r.variance == 'small' else 'β<sub>t</sub>'} · "
                 f"{total * r.dims:.5g} bits per {'latent' if r.latent else 'image'}")
    if zero:
        lines.append(f"{zero} KL term{'s are' if zero > 1 else ' is'} exactly 0 (not drawn on the log axis)")
    if r.latent:
        shape = "×".join(str(v) for v in r.latent_shape or ())
        prompt = f"prompt “{html.escape(r.prompt)}”" if r.prompt else "unconditional (empty prompt)"
        lines.append(f"bounds −log p(latents), not pixels: z<sub>0</sub> = s·E(x) of {shape} = {r.dims} dims, "
                     f"{prompt} · L<sub>0</sub> is a continuous density"
                     + (" — negative here: the hollow square at t = 1 is −L<sub>0</sub>" if r.terms[0] < 0 else
                        " (it may be negative)"))
        if r.vae_psnr_db is not None:
            lines.append(f"the VAE's own reconstruction D(z<sub>0</sub>/s): PSNR <b>{r.vae_psnr_db:.2f} dB</b> "
                         "(not part of the bound)")
    return f"L<sub>VLB</sub> = <b>{f(total)}</b> {unit}{delta}", "<br>".join(lines)


def hover_text(run: ElboRun, k: int, previous: ElboRun | None) -> tuple[str, str]:
    """(the hover line, the box beside the point) for term k of ``run``: its formula, value and share."""
    v, total, T = float(run.terms[k]), run.bits_per_dim, run.T
    share = 100.0 * v / total if total else float("nan")
    kind = " (the decoder)" if k == 0 else " (the prior)" if k == T else ""
    unit = "bits/latent-dim" if run.latent else "bits/dim"
    line = (f"t = {k + 1}: {term_name(k, T)} = {term_formula(k, T)} = <b>{format_bits(v)}</b> {unit}{kind}, "
            f"<b>{share:.3g} %</b> of the total")
    pk = None if previous is None else (previous.T if k == T else k if k < previous.T else None)
    if pk is not None:
        line += f" (previous: {format_bits(float(previous.terms[pk]))})"
    box = (f"<div style='background:rgba(255,255,255,220); color:#111; padding:2px'>"
           f"{term_name(k, T)} = {format_bits(v)}<br>{share:.3g} % of total</div>")
    return line, box


def schedule_changed_line(schedule: NoiseSchedule) -> str:
    """The status line when the schedule of a shown bound changes (and it is not recomputed on its own)."""
    return (f"The schedule changed ({schedule.name}, T = {schedule.T}): Recompute to see how the bound moves; this "
            "curve will stay, faint.")


def kl_line(terms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(t, L_{t−1}) for t = 2…T, NaN where a log axis cannot draw the term (0, or not computed yet): the line
    breaks there instead of bridging the gap."""
    T = len(terms) - 1
    y = np.array(terms[1:T], dtype=np.float64)
    y[~(np.isfinite(y) & (y > 0))] = np.nan
    return np.arange(2, T + 1, dtype=float), y


def term_points(terms: np.ndarray, ks) -> tuple[np.ndarray, np.ndarray]:
    """(t = k + 1, L_k) of the terms ``ks`` that a log axis can draw (finite and > 0)."""
    ks = np.asarray(ks, dtype=int)
    x, y = ks + 1.0, np.asarray(terms, dtype=np.float64)[ks]
    keep = np.isfinite(y) & (y > 0)
    return x[keep], y[keep]


def point_xy(k: int, value: float, log_x: bool) -> tuple[float, float]:
    """Where term k of ``value`` is drawn in the plot's view coordinates (log10 of t on a log t axis, log10 L_k)."""
    return (math.log10(k + 1) if log_x else float(k + 1)), math.log10(value)


def hover_anchor(x: float, y: float, view) -> tuple[float, float]:
    """The hover box's anchor that keeps it inside ``view`` = ((x0, x1), (y0, y1)): left of points in the right
    half, below points in the top half."""
    (x0, x1), (y0, y1) = view
    return (1.05 if x > (x0 + x1) / 2 else -0.05, -0.1 if y > (y0 + y1) / 2 else 1.1)


def view_range(parts: list[np.ndarray], log_x: bool):
    """((x0, x1), (lo, hi), bottom ticks or None) that show every term of ``parts`` (term arrays): t from 1 to
    T + 1 (log10 t on a log axis) and at least two decades of log10 y. On a log t axis the decades are labelled
    1, 10, 100 … (pyqtgraph's own log ticks label 2·10¹ … 9·10² until they overlap)."""
    vals = np.concatenate(parts) if parts else np.empty(0)
    vals = vals[np.isfinite(vals) & (vals > 0)]
    T = max([len(a) - 1 for a in parts], default=1000)
    lo, hi = (math.log10(vals.min()), math.log10(vals.max())) if vals.size else (-6.0, 2.0)
    if hi - lo < 2:
        mid = (hi + lo) / 2
        lo, hi = mid - 1, mid + 1
    x0, x1 = (0.0, math.log10(T + 1)) if log_x else (1.0, T + 1.0)
    ticks = None
    if log_x:
        top = math.ceil(x1)
        ticks = [[(float(d), f"{10 ** d:d}") for d in range(top + 1)],
                 [(math.log10(m * 10 ** d), "") for d in range(top) for m in range(2, 10)]]
    return (x0, x1), (lo, hi), ticks


def nearest_term(terms: np.ndarray, x: float, y: float, pixel: tuple[float, float], log_x: bool,
                 radius_px: float = 12.0) -> int | None:
    """The term k whose drawn point (t = k + 1, log10 L_k) is nearest the view point (x, y), within ``radius_px``
    screen pixels of ``pixel`` = (view units per pixel in x, in y); points a log axis cannot draw never match."""
    sx, sy = pixel
    t, v = np.arange(1, len(terms) + 1, dtype=float), np.asarray(terms, dtype=float)
    ok = np.isfinite(v) & (v > 0)
    if not ok.any() or sx <= 0 or sy <= 0:
        return None
    xv = np.log10(t) if log_x else t
    d2 = ((xv - x) / sx) ** 2 + ((np.log10(np.where(ok, v, 1.0)) - y) / sy) ** 2
    d2[~ok] = np.inf
    i = int(np.argmin(d2))
    return i if d2[i] <= radius_px ** 2 else None
