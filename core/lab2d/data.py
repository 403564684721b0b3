"""Point sets for the 2D laboratory: presets, the photo's dark pixels, painting, and CSV/NPZ files.

Every set is an M×2 float64 array, M ≤ :data:`MAX_POINTS`, drawn from ``numpy.random.default_rng(seed)`` (PCG64:
the same points on every machine). The presets are scaled to lie roughly in [−2, 2]² with a spread of about 1, the
scale of N(0, I) that the forward process ends in (eq. 5: x_T ≈ ε).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

MAX_POINTS = 10_000
DEFAULT_POINTS = 1000
PRESETS = ("moons", "swiss", "8gaussians", "checkerboard", "rings", "gaussian")
PRESET_NAMES = {"moons": "Two moons", "swiss": "Swiss roll", "8gaussians": "8 Gaussians",
                "checkerboard": "Checkerboard", "rings": "Concentric rings", "gaussian": "Gaussian N(μ, Σ)"}
GAUSSIAN_MEAN = (0.5, -0.3)                    # the default single Gaussian (also the README's W2 table)
GAUSSIAN_COV = ((0.6, 0.25), (0.25, 0.3))


class PointsError(ValueError):
    """A point set that cannot be used; one line."""


def check_points(points, name: str = "points") -> np.ndarray:
    """An M×2 finite float64 array with 1 ≤ M ≤ MAX_POINTS, or a one-line :class:`PointsError`."""
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 2:
        raise PointsError(f"{name} must be M×2 (x, y), got shape {p.shape}")
    if len(p) < 1:
        raise PointsError(f"{name}: no points")
    if len(p) > MAX_POINTS:
        raise PointsError(f"{name}: {len(p)} points, at most {MAX_POINTS:,} allowed")
    if not np.isfinite(p).all():
        raise PointsError(f"{name} contain NaN or inf")
    return np.ascontiguousarray(p)


def _count(n) -> int:
    n = int(n)
    if not 1 <= n <= MAX_POINTS:
        raise PointsError(f"number of points must be 1…{MAX_POINTS:,}, got {n}")
    return n


def preset(name: str, n: int = DEFAULT_POINTS, seed: int = 0, mean=GAUSSIAN_MEAN, cov=GAUSSIAN_COV) -> np.ndarray:
    """``n`` points of a named preset (``PRESETS``); ``mean``/``cov`` only for ``gaussian``."""
    n = _count(n)
    rng = np.random.default_rng(int(seed) % 2**63)
    if name == "moons":   # scikit-learn's make_moons, noise 0.05, centred and scaled ×1.4
        k = n // 2
        th = rng.uniform(0, math.pi, n)
        out = np.stack([np.cos(th), np.sin(th)], 1)
        out[k:] = np.stack([1 - np.cos(th[k:]), 0.5 - np.sin(th[k:])], 1)
        p = (out + rng.normal(0, 0.05, (n, 2)) - (0.5, 0.25)) * 1.4
    elif name == "swiss":  # θ ∈ 1.5π·[1, 3], r ∝ θ
        th = 1.5 * math.pi * (1 + 2 * rng.uniform(0, 1, n))
        p = np.stack([th * np.cos(th), th * np.sin(th)], 1) / 7.0 + rng.normal(0, 0.04, (n, 2))
    elif name == "8gaussians":
        k = rng.integers(0, 8, n)
        c = 1.6 * np.stack([np.cos(k * math.pi / 4), np.sin(k * math.pi / 4)], 1)
        p = c + rng.normal(0, 0.1, (n, 2))
    elif name == "checkerboard":  # the black squares of a 4×4 board on [−2, 2]²
        u = rng.uniform(0, 1, (n, 2))
        col = rng.integers(0, 4, n)
        row = 2 * rng.integers(0, 2, n) + (col % 2)
        p = np.stack([col + u[:, 0], row + u[:, 1]], 1) - 2.0
    elif name == "rings":
        r = np.array([0.6, 1.3, 2.0])[rng.integers(0, 3, n)]
        th = rng.uniform(0, 2 * math.pi, n)
        p = r[:, None] * np.stack([np.cos(th), np.sin(th)], 1) + rng.normal(0, 0.04, (n, 2))
    elif name == "gaussian":
        mean, cov = gaussian_params(mean, cov)
        p = rng.multivariate_normal(mean, cov, n, method="cholesky")
    else:
        raise PointsError(f"unknown data preset {name!r}; choose one of {', '.join(PRESETS)} or a .csv/.npz file")
    return np.ascontiguousarray(p, dtype=np.float64)


def gaussian_params(mean=GAUSSIAN_MEAN, cov=GAUSSIAN_COV) -> tuple[np.ndarray, np.ndarray]:
    """(μ, Σ) as float64 arrays, Σ checked symmetric positive definite."""
    mean = np.asarray(mean, dtype=np.float64).reshape(2)
    cov = np.asarray(cov, dtype=np.float64).reshape(2, 2)
    if not (np.isfinite(mean).all() and np.isfinite(cov).all()) or abs(cov[0, 1] - cov[1, 0]) > 1e-12 \
            or np.linalg.eigvalsh(cov).min() <= 0:
        raise PointsError("the Gaussian's covariance must be symmetric positive definite")
    return mean, cov


def from_photo(image, n: int = DEFAULT_POINTS, seed: int = 0, gamma: float = 4.0) -> np.ndarray:
    """``n`` points drawn from a photo's dark pixels: pixel (r, c) is chosen with probability ∝ (1 − luminance)^γ
    (luminance in [0, 1] from an H×W×3 image in [−1, 1]), jittered uniformly inside the pixel, and mapped to
    [−2, 2] along the longer side with y pointing up (the cat as a cloud)."""
    n = _count(n)
    x = np.asarray(image, dtype=np.float64)
    if x.ndim == 3:
        x = x @ np.array([0.299, 0.587, 0.114]) if x.shape[2] == 3 else x[..., 0]
    if x.ndim != 2 or x.size == 0:
        raise PointsError(f"the photo must be H×W or H×W×3, got shape {np.shape(image)}")
    h, w = x.shape
    dark = np.clip(1.0 - (x + 1.0) / 2.0, 0.0, 1.0) ** float(gamma)
    total = dark.sum()
    if not total > 0:
        raise PointsError("the photo has no dark pixels to draw points from")
    rng = np.random.default_rng(int(seed) % 2**63)
    idx = rng.choice(h * w, size=n, p=(dark / total).ravel())
    r, c = np.divmod(idx, w)
    u = rng.uniform(0, 1, (n, 2))
    scale = 4.0 / max(h, w)
    px = (c + u[:, 0] - w / 2) * scale
    py = (h / 2 - (r + u[:, 1])) * scale
    return np.ascontiguousarray(np.stack([px, py], 1))


def brush(center, radius: float, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` points uniform in the disc of ``radius`` around ``center`` (painting with the mouse)."""
    r = float(radius) * np.sqrt(rng.uniform(0, 1, count))
    th = rng.uniform(0, 2 * math.pi, count)
    return np.asarray(center, dtype=np.float64)[None] + np.stack([r * np.cos(th), r * np.sin(th)], 1)


def save_points(path, points) -> Path:
    """Write M×2 points as CSV (``x,y`` header, 17 significant digits: float64 round-trips) or NPZ (key ``data``),
    atomically."""
    from core.atomic import atomic_path
    p = check_points(points)
    path = Path(path)
    kind = path.suffix.lower()
    if kind not in (".csv", ".npz"):
        raise PointsError(f"{path.name}: save points as .csv or .npz")
    with atomic_path(path) as tmp:
        if kind == ".csv":
            np.savetxt(tmp, p, fmt="%.17g", delimiter=",", header="x,y", comments="")
        else:
            with open(tmp, "wb") as f:
                np.savez(f, data=p)
    return path


def load_points(path) -> np.ndarray:
    """Read a point set written by :func:`save_points` (CSV with or without a header row; NPZ key ``data``, else
    ``points``, else its only array)."""
    path = Path(path)
    kind = path.suffix.lower()
    if not path.is_file():
        raise PointsError(f"{path}: no such file")
    if kind == ".csv":
        try:
            with open(path, encoding="utf-8") as f:
                first = f.readline()
            skip = 0 if _numeric(first) else 1
            p = np.loadtxt(path, delimiter=",", skiprows=skip, ndmin=2, max_rows=MAX_POINTS + 1)
        except (ValueError, UnicodeDecodeError) as e:
            raise PointsError(f"{path.name}: not a CSV of x,y numbers ({str(e).splitlines()[0][:80]})") from None
    elif kind == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                keys = list(z.keys())
                key = "data" if "data" in keys else "points" if "points" in keys else keys[0] if len(keys) == 1 \
                    else None
                if key is None:
                    raise PointsError(f"{path.name}: no 'data' array among {', '.join(keys[:5])}")
                p = z[key]
        except (OSError, ValueError) as e:
            raise PointsError(f"{path.name}: not a readable .npz ({str(e).splitlines()[0][:80]})") from None
    else:
        raise PointsError(f"{path.name}: points are read from .csv or .npz")
    return check_points(p, path.name)


def _numeric(line: str) -> bool:
    try:
        [float(v) for v in line.split(",")]
        return True
    except ValueError:
        return False
