"""The variational bound as a job (the ELBO tab, and the images of ``ddpm elbo``), without Qt.

L_VLB = L_T + Σ_{t=2}^{T} L_{t−1} + L_0 (DDPM notes, eq. 9–14), every term in bits per dimension, computed by
:func:`core.vlb.compute_bound`. :func:`load_images` turns a photo or a dataset into the model-ready x_0 both the CLI
and the window evaluate; :func:`model_request` names and loads the model a SPEC asks for (``photo`` resolved to the
window's file or pixels); :func:`elbo_events` is the generator a worker drives: it loads the model (cached), makes
x_0, yields an :class:`ElboProgress` per batch (copies) and returns an :class:`ElboRun` with the bound's numbers.
"""
from __future__ import annotations

import numbers
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from core.model_spec import ORACLE, PHOTO, ModelCache, cache_key, parse_spec
from core.schedule import NoiseSchedule
from core.vlb import BoundResult, compute_bound

DATASET = "dataset"          # an ElboJob's other source (PHOTO is the photo)
DEFAULT_N = 8
MAX_N = 100_000  # as many images as a folder may hold (core.data.MAX_FOLDER_IMAGES)
NO_PHOTO = "open a photo first (File ▸ Open image)"


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

    @property
    def bits_per_dim(self) -> float:
        return float(self.terms.sum())

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
