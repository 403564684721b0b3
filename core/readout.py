"""The numbers the main view shows beside x_t, without Qt: the readout under the slider (t, β_t, ᾱ_t, SNR, the PSNR
of x_t against x_0), the fixed sample of values the histogram draws, and the view's level of detail.

The PSNR of the closed form is exact without building x_t: with a = √ᾱ_t and b = √(1−ᾱ_t),
x_t − x_0 = (a−1)·x_0 + b·ε, so MSE = (a−1)²·E[x_0²] + 2(a−1)b·E[x_0 ε] + b²·E[ε²], from three moments of the
photo and its noise (:func:`moments`, computed once per photo and seed). PSNR = 10·log10(2² / MSE) on the
[−1, 1] scale (peak-to-peak 2), before display clipping.
"""
from __future__ import annotations

import math

import numpy as np

from core.forward import q_sample
from core.schedule import NoiseSchedule

HIST_SAMPLES = 65_536   # the histogram shows x_t at this many fixed pixels (all of them in a smaller photo)
HIST_SEED = 12345       # which ones: the same for every photo of a size, so the histogram never flickers


def psnr_db(mse: float, peak: float = 2.0) -> float:
    """10·log10(peak² / MSE) dB (default peak-to-peak 2: the [−1, 1] scale); ∞ for MSE ≤ 0, NaN for NaN (not
    known yet)."""
    if math.isnan(mse):
        return math.nan
    return math.inf if mse <= 0 else 10.0 * math.log10(peak * peak / mse)


def normal_density(x) -> np.ndarray:
    """φ(x) = exp(−x²/2)/√(2π), the N(0, 1) density the histogram draws its values against."""
    x = np.asarray(x, dtype=np.float64)
    return np.exp(-x * x / 2) / math.sqrt(2 * math.pi)


def moments(x0: np.ndarray, noise: np.ndarray, chunk: int = 1 << 20) -> tuple[float, float, float]:
    """(E[x_0²], E[x_0 ε], E[ε²]) in float64, a million values at a time (no full-size float64 copies)."""
    x, e = x0.reshape(-1), noise.reshape(-1)
    xx = xe = ee = 0.0
    for i in range(0, x.size, chunk):
        xs, es = x[i:i + chunk].astype(np.float64), e[i:i + chunk].astype(np.float64)
        xx += float(np.dot(xs, xs))
        xe += float(np.dot(xs, es))
        ee += float(np.dot(es, es))
    n = max(1, x.size)
    return xx / n, xe / n, ee / n


def closed_form_mse(schedule: NoiseSchedule, t: int, photo_moments: tuple[float, float, float]) -> float:
    """mean((x_t − x_0)²) of x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε, from the :func:`moments` of x_0 and ε."""
    a = float(schedule.sqrt_alphas_cumprod[t])
    b = float(schedule.sqrt_one_minus_alphas_cumprod[t])
    xx, xe, ee = photo_moments
    return (a - 1) ** 2 * xx + 2 * (a - 1) * b * xe + b * b * ee


def closed_form_psnr(schedule: NoiseSchedule, t: int, photo_moments: tuple[float, float, float]) -> float:
    """PSNR(x_t, x_0) in dB of the closed form at t (see the module docstring)."""
    return psnr_db(closed_form_mse(schedule, t, photo_moments))


def readout_values(schedule: NoiseSchedule, t: int, psnr: float) -> dict:
    """The readout at t: ``t``, ``beta``, ``alpha_bar``, ``sqrt_alpha_bar``, ``sqrt_one_minus_alpha_bar``,
    ``snr_db`` (10·log10(ᾱ_t/(1−ᾱ_t)); −∞ at zero SNR) and the given ``psnr_db``."""
    ab = float(schedule.alphas_cumprod[t])
    snr = float(schedule.snr[t])
    return dict(t=t, beta=float(schedule.betas[t]), alpha_bar=ab, sqrt_alpha_bar=math.sqrt(ab),
                sqrt_one_minus_alpha_bar=math.sqrt(1 - ab),
                snr_db=(-math.inf if snr <= 0 else 10 * math.log10(snr)), psnr_db=psnr)


def readout_cells(values: dict, latent_peak: float | None = None) -> list[tuple[str, str]]:
    """:func:`readout_values` as (rich-text name, text) pairs, in the order shown: ``−∞`` dB at zero SNR, ``∞`` dB
    for an exact PSNR, ``…`` while it is not known yet (the chain's PSNR arrives with its frame). With
    ``latent_peak`` the PSNR is the latents' PSNR(z_t, z_0), in latent units with that peak-to-peak."""
    v = values
    snr_db = "−∞" if v["snr_db"] == -math.inf else f"{v['snr_db']:+.2f}"
    psnr = v["psnr_db"]
    psnr_txt = "∞" if math.isinf(psnr) else ("…" if math.isnan(psnr) else f"{psnr:.2f}")
    return [("t", f"{v['t']}"), ("β<sub>t</sub>", f"{v['beta']:.5g}"), ("ᾱ<sub>t</sub>", f"{v['alpha_bar']:.5g}"),
            ("√ᾱ<sub>t</sub>", f"{v['sqrt_alpha_bar']:.4f}"),
            ("√(1−ᾱ<sub>t</sub>)", f"{v['sqrt_one_minus_alpha_bar']:.4f}"),
            ("SNR", f"{snr_db} dB"),
            ("PSNR(x<sub>t</sub>, x<sub>0</sub>)", f"{psnr_txt} dB") if latent_peak is None else
            (f"PSNR(z<sub>t</sub>, z<sub>0</sub>) <small>(latents, peak {latent_peak:g})</small>", f"{psnr_txt} dB")]


def histogram_index(size: int, n: int = HIST_SAMPLES) -> np.ndarray:
    """The fixed positions (into a flattened image of ``size`` values) whose values the histogram shows."""
    return np.random.default_rng(HIST_SEED).integers(0, size, size=min(n, size))


def histogram_values(schedule: NoiseSchedule, t: int, x0_sample: np.ndarray, eps_sample: np.ndarray) -> np.ndarray:
    """x_t at the histogram's sample (eq. 5 on the sampled values of x_0 and ε)."""
    return q_sample(x0_sample, t, eps_sample, schedule)


def display_stride(pixels_per_screen_pixel: float) -> int:
    """The view's level of detail: s when one screen pixel covers s or more photo pixels (then every s-th pixel of
    x_t is rendered, s² times less work with no visible loss), 1 at 1:1 or closer."""
    return max(1, int(math.floor(pixels_per_screen_pixel + 1e-6)))
