"""The variational bound L_VLB = L_T + Σ_{t=2}^{T} L_{t−1} + L_0, term by term, in bits per dimension
(DDPM notes, eq. 9–14; Ho et al. 2020, eq. 5 and §3.3; Nichol & Dhariwal 2021, §2 and their ``calc_bpd_loop``).

**Which term is which.** The notes number timesteps 1…T; the code indexes the schedule 0…T−1 (:mod:`core.schedule`),
so the notes' x_t is the code's x at index t − 1. Term k of a result (k = 0…T) is the notes' L_k:

- k = 0      L_0 = −log p_θ(x_0 | x_1): the discretized Gaussian decoder, model evaluated at code timestep 0;
- 1 ≤ k < T  L_k = KL(q(x_k | x_{k+1}, x_0) ‖ p_θ(x_k | x_{k+1})), model evaluated at code timestep k;
- k = T      L_T = KL(q(x_T | x_0) ‖ N(0, I)), closed form at code timestep T − 1, no network.

Against improved-diffusion (``GaussianDiffusion.calc_bpd_loop``): its loop runs ``for t in
list(range(num_timesteps))[::-1]`` and appends each ``vb`` term, so column j of its N×T ``vb`` array is code
timestep T−1−j (column 0 is the last timestep, column T−1 the decoder). Our terms 0…T−1 are that array reversed,
``vb[:, ::-1]``, and term T is its ``prior_bpd``. Each term is averaged over the C·H·W dimensions and divided by
ln 2 (bits/dim); their sum bounds −log₂ p_θ(x_0) / (C·H·W).

**Estimator.** L_k for k < T is an expectation over x_{k+1} ~ q(· | x_0) (eq. 5); like the reference we draw one
x_t per image and timestep. Noise comes from a seeded CPU generator, one draw per (image i, code timestep t):
``draw_noise((C, H, W), noise_seed(seed, i, t))`` — so image i's terms depend on (seed, i) only, never on the
batch size or on the other images, and are the same on every device.

**p_θ(x_{t−1} | x_t).** Its mean is the posterior mean μ̃_t(x_t, x̂_0) (eq. 14) at the model's x̂_0 (from ε, x_0 or v;
clipped to [−1, 1] when ``clip_denoised``, as the reference evaluation does). Its variance:

- ``small``  σ_t² = β̃_t, the true posterior's variance (then each KL is only the squared mean error / 2β̃_t);
- ``large``  σ_t² = β_t (the other choice Ho et al. found to sample equally well).

**The decoder's variance.** β̃ is 0 at the first step, so L_0 needs another choice. We take, for both ``small`` and
``large``, σ_0² = β̃ at code index 1 (the notes' β̃_2) — exactly the reference code: Ho et al.'s and Nichol &
Dhariwal's ``posterior_log_variance_clipped`` and the first entry of their fixed-large variance. Why: published
bits/dim use it, so ours compare; and it is the scale of the true posterior one step up, the smallest variance the
schedule itself supplies. (β_1 would be the other natural choice; on the linear schedule it is ≈ 1.8× larger, and an
exact x̂_0 then costs ≈ 1.7 instead of ≈ 1.3 bits per pixel.) The true posterior's log-variance is clipped the same
way; it only ever enters at t ≥ 1, where the clipping changes nothing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

from core.forward import draw_noise
from core.messages import printable
from core.models.denoiser import VARIANCE_TYPES, check_training_T
from core.models.prediction import to_x0
from core.schedule import NoiseSchedule
from core.vlb.likelihood import discretized_gaussian_log_likelihood, normal_kl

# The bound's short names for the model's VARIANCE_TYPES (its --variance and JSON say small / large).
VARIANCES = tuple(v.removeprefix("fixed_") for v in VARIANCE_TYPES)
_ALIASES = dict(zip(VARIANCE_TYPES, VARIANCES))
DEFAULT_BATCH_SIZE = 125
_LN2 = math.log(2.0)
_SEED_STRIDE = 1_000_003  # > the largest T a schedule may have, so (seed, i, t) never share a noise seed


@dataclass(frozen=True, eq=False)
class BoundProgress:
    """One batch done: ``done`` of ``total`` (image, timestep) evaluations. ``terms`` (T+1,) holds the image-mean
    bits/dim of every term finished so far and NaN for the rest (L_T is known from the start)."""

    done: int
    total: int
    terms: np.ndarray

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


@dataclass(frozen=True, eq=False)
class BoundResult:
    """The bound of N images. ``per_image`` is N×(T+1) bits/dim, columns [L_0, L_1, …, L_{T−1}, L_T]."""

    per_image: np.ndarray
    variance: str
    schedule: NoiseSchedule
    seed: int
    clip_denoised: bool
    dims: int

    @property
    def T(self) -> int:
        return self.per_image.shape[1] - 1

    @property
    def terms(self) -> np.ndarray:
        """[L_0, …, L_T] in bits/dim, averaged over the images."""
        return self.per_image.mean(axis=0)

    @property
    def bits_per_dim(self) -> float:
        """The whole bound: Σ_k L_k (bits/dim), averaged over the images."""
        return float(self.terms.sum())

    @property
    def per_image_bits_per_dim(self) -> np.ndarray:
        return self.per_image.sum(axis=1)

    @property
    def decoder(self) -> float:
        """L_0."""
        return float(self.terms[0])

    @property
    def prior(self) -> float:
        """L_T."""
        return float(self.terms[-1])

    @property
    def kl(self) -> float:
        """Σ_{k=1}^{T−1} L_k, the denoising-matching part."""
        return float(self.terms[1:-1].sum())

    def to_dict(self) -> dict:
        """What ``ddpm elbo --json`` prints (less the run's own keys)."""
        return {"bits_per_dim": self.bits_per_dim, "terms": [float(v) for v in self.terms],
                "decoder_bits_per_dim": self.decoder, "kl_bits_per_dim": self.kl, "prior_bits_per_dim": self.prior,
                "per_image_bits_per_dim": [float(v) for v in self.per_image_bits_per_dim],
                "n_images": int(self.per_image.shape[0]), "T": self.T, "dims": self.dims,
                "variance": self.variance, "clip_denoised": self.clip_denoised, "seed": self.seed,
                "schedule": self.schedule.name}


def resolve_variance(variance: str | None, denoiser) -> str:
    """``small`` | ``large`` (or diffusers' ``fixed_small`` | ``fixed_large``); None → the model's own setting."""
    v = getattr(denoiser, "variance_type", "fixed_small") if variance is None else variance
    v = _ALIASES.get(v, v)
    if v not in VARIANCES:
        raise ValueError(f"unknown variance {variance if variance is not None else v!r}; "
                         "choose small (β̃_t) or large (β_t)")
    return v


def log_variances(schedule: NoiseSchedule, variance: str) -> tuple[np.ndarray, np.ndarray]:
    """(log-variance of q(x_{t−1} | x_t, x_0), log-variance of p_θ(x_{t−1} | x_t)) for code timesteps 0…T−1, with
    index 0 (β̃ = 0) replaced by β̃ at index 1 — the decoder's variance (see the module docstring)."""
    pv = schedule.posterior_variance
    true = np.log(np.append(pv[1], pv[1:]))
    model = np.log(np.append(pv[1], schedule.betas[1:])) if variance == "large" else true
    return true, model


def prior_bits_per_dim(x0: torch.Tensor, schedule: NoiseSchedule) -> torch.Tensor:
    """L_T = KL(N(√ᾱ_T x_0, (1 − ᾱ_T) I) ‖ N(0, I)) per image (N,), in bits/dim."""
    ab = float(schedule.alphas_cumprod[-1])
    kl = normal_kl(math.sqrt(ab) * x0, math.log1p(-ab), 0.0, 0.0)
    return kl.flatten(1).mean(1) / _LN2


def _as_grid_batch(x0, denoiser) -> torch.Tensor:
    """N×C×H×W float64 on the uint8 grid x = u/127.5 − 1 (values are snapped to the nearest of the 256 levels)."""
    x = torch.as_tensor(np.asarray(x0) if not isinstance(x0, torch.Tensor) else x0).detach().cpu().double()
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[0] == 0:
        raise ValueError(f"images must be N×C×H×W, got shape {tuple(x.shape)}")
    c, r = getattr(denoiser, "channels", x.shape[1]), getattr(denoiser, "resolution", x.shape[2])
    if x.shape[1:] != (c, r, r):
        raise ValueError(f"images are {x.shape[1]}×{x.shape[2]}×{x.shape[3]} but the model takes {c}×{r}×{r}")
    if not torch.isfinite(x).all():
        raise ValueError("images contain NaN or infinity")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1.0 - 1 / 255 or hi > 1.0 + 1 / 255:
        raise ValueError(f"images must be scaled to [−1, 1] (x = u8/127.5 − 1); these span {lo:.3g}…{hi:.3g}")
    return torch.round((x + 1.0) * 127.5).clamp(0, 255) / 127.5 - 1.0


def compute_bound(denoiser, x0, schedule: NoiseSchedule | None = None, variance: str | None = None, *,
                  batch_size: int = DEFAULT_BATCH_SIZE, seed: int = 0, device=None, class_labels=None,
                  clip_denoised: bool | None = None) -> Iterator[BoundProgress | BoundResult]:
    """Evaluate every term of the bound for the images ``x0`` (N×C×H×W in [−1, 1]); a generator.

    It yields a :class:`BoundProgress` before the first batch and after each one, then a :class:`BoundResult` as
    its last item. ``batch_size`` (image, timestep) pairs share one forward pass, timesteps from T−1 down to 0.
    Closing the generator (or dropping it) between events cancels: no further forward pass runs.

    ``schedule`` defaults to the model's own (the oracle has none: pass one); a model with a schedule of its own is
    refused one of another T (:func:`~core.models.denoiser.check_training_T`); a model is always called with code
    timestep indices, whatever schedule is passed. ``variance`` defaults to the model's ``variance_type``;
    ``clip_denoised`` to its ``clip_sample``; ``device`` to its ``device``; ``class_labels`` (N,) conditions a
    class-conditional model (default: unconditional). Bad input raises ValueError here, before the first event.
    """
    schedule = schedule if schedule is not None else getattr(denoiser, "schedule", None)
    if schedule is None:
        raise ValueError(f"{printable(getattr(denoiser, 'name', 'this model'))} has no schedule of its own; pass one")
    check_training_T(denoiser, schedule)  # a trained network's timesteps mean nothing on another T
    variance = resolve_variance(variance, denoiser)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch size must be a positive integer, got {batch_size!r}")
    x = _as_grid_batch(x0, denoiser)
    labels = None
    if class_labels is not None:
        labels = torch.as_tensor(np.asarray(class_labels)).long().reshape(-1)
        if len(labels) != len(x):
            raise ValueError(f"{len(labels)} class labels for {len(x)} images")
    clip = bool(getattr(denoiser, "clip_sample", True) if clip_denoised is None else clip_denoised)
    device = torch.device(device) if device is not None else getattr(denoiser, "device", torch.device("cpu"))
    return _bound_events(denoiser, x, schedule, variance, int(batch_size), int(seed), device, labels, clip)


def variational_bound(denoiser, x0, schedule: NoiseSchedule | None = None, variance: str | None = None, *,
                      on_progress: Callable[[BoundProgress], None] | None = None, **kwargs) -> BoundResult:
    """Blocking form of :func:`compute_bound` (same arguments); ``on_progress`` sees each progress event."""
    for event in compute_bound(denoiser, x0, schedule, variance, **kwargs):
        if isinstance(event, BoundResult):
            return event
        if on_progress is not None:
            on_progress(event)
    raise RuntimeError("the bound's generator ended without a result")


def _bound_events(denoiser, x, schedule, variance, batch_size, seed, device, labels, clip):
    def call(x_in, t, images):
        lab = None if labels is None else labels[images].to(device)
        return denoiser.model_output(x_in.to(device), t.to(device), class_labels=lab, schedule=schedule)
    return bound_events(call, denoiser.prediction_type, x, schedule, variance, batch_size, seed, clip,
                        discretized_decoder_nll)


def discretized_decoder_nll(x0, mean, log_scale):
    """L_0 of 8-bit images in nats per dimension: −log of the Gaussian's mass on each pixel's bin (eq. 13)."""
    return -discretized_gaussian_log_likelihood(x0, mean, log_scale)


def bound_events(call, prediction_type, x, schedule, variance, batch_size, seed, clip, decoder_nll):
    """The term-by-term loop every bound shares (pixels here, latents in :mod:`core.vlb.latent`): ``x`` N×C×H×W
    float64 data, ``call(x_t, t, images)`` the model's output for a batch (``images`` the rows' image indices),
    ``decoder_nll(x_0, mean, log_scale)`` the elementwise −log p_θ(x_0 | x_1) in nats. Yields BoundProgress
    events, then the BoundResult."""
    n, T = len(x), schedule.T
    per_image = np.full((n, T + 1), np.nan)
    per_image[:, T] = prior_bits_per_dim(x, schedule).numpy()
    total = n * T
    yield BoundProgress(0, total, _finished_terms(per_image))
    true_logvar, model_logvar = log_variances(schedule, variance)
    tables = _Tables(schedule, true_logvar, model_logvar)
    for start in range(0, total, batch_size):
        flat = np.arange(start, min(start + batch_size, total))
        ts, images = T - 1 - flat // n, flat % n  # timesteps descending, all images of a timestep together
        noise = torch.stack([draw_noise(x.shape[1:], noise_seed(seed, i, t), dtype=torch.float64)
                             for i, t in zip(images.tolist(), ts.tolist())])
        t = torch.from_numpy(ts.copy())
        per_image[images, ts] = _terms(call, prediction_type, x[images], t, torch.from_numpy(images.copy()),
                                       noise, tables, clip, decoder_nll)
        yield BoundProgress(int(flat[-1]) + 1, total, _finished_terms(per_image))
    yield BoundResult(per_image, variance, schedule, seed, clip, int(x[0].numel()))


def noise_seed(seed: int, image: int, t: int) -> int:
    """The generator seed of the ε that noises image ``image`` to code timestep ``t``."""
    return ((int(seed) * _SEED_STRIDE + int(image)) * _SEED_STRIDE + int(t)) % (2**63 - 1)


def _finished_terms(per_image: np.ndarray) -> np.ndarray:
    done = ~np.isnan(per_image).any(axis=0)
    terms = np.full(per_image.shape[1], np.nan)
    terms[done] = per_image[:, done].mean(axis=0)
    return terms


class _Tables:
    """Per-timestep float64 coefficients as tensors, indexed by a (B,) tensor of code timesteps."""

    def __init__(self, s: NoiseSchedule, true_logvar: np.ndarray, model_logvar: np.ndarray):
        f = lambda a: torch.tensor(np.array(a, dtype=np.float64))  # noqa: E731 - a writable copy
        self.sqrt_ab, self.sqrt_1m_ab = f(s.sqrt_alphas_cumprod), f(s.sqrt_one_minus_alphas_cumprod)
        self.coef1, self.coef2 = f(s.posterior_mean_coef1), f(s.posterior_mean_coef2)
        self.true_logvar, self.model_logvar = f(true_logvar), f(model_logvar)

    def at(self, name: str, t: torch.Tensor) -> torch.Tensor:
        return getattr(self, name)[t].reshape(-1, 1, 1, 1)


def _terms(call, prediction_type, x0, t, images, noise, tab: _Tables, clip, decoder_nll) -> np.ndarray:
    """Bits/dim of term t (decoder at t = 0, KL otherwise) for a batch of (image, timestep) pairs."""
    c = x0.shape[1]
    x_in = (tab.at("sqrt_ab", t) * x0 + tab.at("sqrt_1m_ab", t) * noise).float()  # eq. 5, as the network sees it
    with torch.inference_mode():
        out = call(x_in, t, images)
    out = out.detach().to("cpu", torch.float64)
    if out.shape[1] != c:
        raise ValueError(f"the model returned {out.shape[1]} channels for {c}-channel images")
    x_t = x_in.double()
    x0_hat = to_x0(out, x_t, tab.at("sqrt_ab", t), tab.at("sqrt_1m_ab", t), prediction_type)
    if clip:
        x0_hat = x0_hat.clamp(-1.0, 1.0)
    model_mean = tab.at("coef1", t) * x0_hat + tab.at("coef2", t) * x_t  # μ_θ = μ̃_t(x_t, x̂_0), eq. 14
    true_mean = tab.at("coef1", t) * x0 + tab.at("coef2", t) * x_t
    model_logvar = tab.at("model_logvar", t).expand_as(x0)
    bits = normal_kl(true_mean, tab.at("true_logvar", t), model_mean, model_logvar).flatten(1).mean(1) / _LN2
    first = t == 0
    if first.any():
        nll = decoder_nll(x0[first], model_mean[first], 0.5 * model_logvar[first])
        bits[first] = nll.flatten(1).mean(1) / _LN2
    return bits.numpy()
