"""The exact answers for a finite 2D point set {x_i}, i = 1…M: the posterior mean, ε̂, the score and q(x_t).

With p(x_0) = (1/M) Σ_i δ(x_0 − x_i) and q(x_t | x_0) = N(a·x_0, s²·I), a = √ᾱ_t, s = √(1−ᾱ_t) (eq. 5):

    q(x_t)        = (1/M) Σ_i N(x_t; a·x_i, s²·I)                                   (a Gaussian mixture)
    w_i(x_t)      = softmax_i( −‖x_t − a·x_i‖² / (2s²) ),   E[x_0 | x_t] = Σ_i w_i·x_i   (core.models.oracle)
    ε̂(x_t, t)    = (x_t − a·E[x_0 | x_t]) / s                  (the minimiser of L_simple, Ho et al. eq. 14)
    ∇ log q(x_t)  = −ε̂(x_t, t) / s                                                   (Tweedie)

:class:`Exact2D` is the same posterior mean as :class:`~core.models.oracle.OracleDenoiser` for points instead of
images, laid out for speed: the logits come from one matrix product [x, 1]·[(a/s²)·(x_i−μ); −(a²/2s²)·‖x_i−μ‖²]
(the centring on the data mean μ keeps float32 accurate), then exp and a product with [x_i − μ, 1] give numerator
and normaliser together, in row blocks that stay in the cache. The density is separable,
N(x; a·x_i, s²I) = N(x₁; a·x_{i1}, s²)·N(x₂; a·x_{i2}, s²), so on a G×G grid it is one (G×M)·(M×G) product.
"""
from __future__ import annotations

import numpy as np
import torch

from core.lab2d.data import check_points
from core.models.denoiser import Denoiser

ROW_BLOCK = 128   # rows of the kernel matrix per block: 128 × 1000 floats = 0.5 MB, in the L2 cache
# exponents are floored here before exp: e^−80 ≈ 1.8e−35 is still a normal float32, so no denormal ever reaches the
# products (denormal arithmetic made a step 20× slower); a weight that small changes nothing (M·e^−80 ≪ 1e−20)
FLOOR = -80.0


def ab_at(schedule, t) -> float:
    """ᾱ_t of ``schedule`` as a float (0 < ᾱ ≤ 1)."""
    return float(np.asarray(schedule.alphas_cumprod, dtype=np.float64)[int(t)])


def to_points(x: torch.Tensor) -> torch.Tensor:
    """B×2×H×W (what :func:`core.samplers.sample` carries) → (B·H·W)×2 points."""
    return x.permute(0, 2, 3, 1).reshape(-1, 2)


def from_points(p: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`to_points` for a tensor shaped like ``like``."""
    b, c, h, w = like.shape
    return p.reshape(b, h, w, c).permute(0, 3, 1, 2)


class Exact2D(Denoiser):
    """``Exact2D(points)``: E[x_0 | x_t] over M×2 points, prediction type ``sample``, any schedule, no clipping.

    As a :class:`~core.models.denoiser.Denoiser` it takes x_t of shape B×2×H×W and treats every one of the B·H·W
    positions as a 2D point (sample N particles as ``n=1, size=(1, N)``)."""

    def __init__(self, points, dtype: torch.dtype = torch.float32, name: str = "exact"):
        super().__init__(resolution=1, channels=2, prediction_type="sample", num_classes=0, schedule=None,
                         variance_type="fixed_small", clip_sample=False, name=name)
        p = check_points(points)
        self.points = p
        self.dtype = dtype
        self.mean = p.mean(0)
        pc = torch.from_numpy(p - self.mean)
        self._pc = pc.to(dtype)                                           # x_i − μ, M×2
        self._sq = (pc * pc).sum(1).to(dtype)                             # ‖x_i − μ‖²
        self._pc1 = torch.cat([self._pc, torch.ones(len(p), 1, dtype=dtype)], 1)   # [x_i − μ, 1], M×3

    def __len__(self) -> int:
        return len(self.points)

    def posterior_mean(self, x, ab: float) -> torch.Tensor:
        """E[x_0 | x_t] for N×2 points ``x`` at ᾱ = ``ab`` (N×2, the dtype of this denoiser).

        Each block forms the kernel k_ni = exp(−‖x_n − a·x_i‖²/(2s²)) directly (the logit's row maximum is not
        needed: k ≤ 1), as one product [x−aμ, 1, ‖x−aμ‖²]·[(a/s²)(x_i−μ); −(a²/2s²)‖x_i−μ‖²; −1/(2s²)]. A row whose
        nearest point is so far that every k underflows (Σ_i k_ni < 1e-20) is redone with its maximum subtracted."""
        x = torch.as_tensor(x).to(self.dtype)
        a = float(np.sqrt(ab))
        inv = 1.0 / max(1.0 - ab, 1e-12)          # ᾱ = 1 would be t = −1: keep the limit, the nearest point
        mu = torch.as_tensor(self.mean, dtype=self.dtype)
        ones = torch.ones(1, len(self.points), dtype=self.dtype)
        w = torch.cat([self._pc.T * (a * inv), (-0.5 * ab * inv) * self._sq[None], -0.5 * inv * ones], 0)  # 4×M
        xc = x - a * mu
        xa = torch.cat([xc, torch.ones(len(x), 1, dtype=self.dtype), (xc * xc).sum(1, keepdim=True)], 1)  # N×4
        out = torch.empty(len(x), 2, dtype=self.dtype)
        # the kernel is formed transposed (points × particles): the products then have a long inner dimension,
        # which BLAS does 1.5× faster than 128×1000 @ 1000×3 (benchmarks/bench_lab2d.py)
        w_t, xa_t, pc1_t = w.T.contiguous(), xa.T.contiguous(), self._pc1.T.contiguous()
        for s in range(0, len(x), ROW_BLOCK):
            k = torch.mm(w_t, xa_t[:, s:s + ROW_BLOCK]).clamp_(min=FLOOR).exp_()     # M×block
            acc = pc1_t @ k                                                            # 3×block
            out[s:s + ROW_BLOCK] = (acc[:2] / acc[2:]).T
            low = acc[2] < 1e-20
            if bool(low.any()):
                rows = torch.nonzero(low).flatten()
                logits = torch.mm(w_t, xa_t[:, s + rows])                                  # M×rows
                logits.sub_(logits.amax(0, keepdim=True)).clamp_(min=FLOOR).exp_()
                acc = pc1_t @ logits
                out[s + rows] = (acc[:2] / acc[2:]).T
        return out + mu

    def model_output(self, x_t, t, class_labels=None, schedule=None) -> torch.Tensor:
        if schedule is None:
            raise ValueError("the exact denoiser works on any schedule but needs one: pass schedule=…")
        t = torch.as_tensor(t).reshape(-1).long().cpu().expand(x_t.shape[0])
        pts = to_points(x_t)
        values = torch.unique(t).tolist()
        if len(values) == 1:                   # a sampler's batch shares one t: one pass
            return from_points(self.posterior_mean(pts, ab_at(schedule, values[0])).to(x_t.dtype), x_t).contiguous()
        per = x_t.shape[2] * x_t.shape[3]
        out = torch.empty(pts.shape, dtype=x_t.dtype)
        for tv in values:
            rows = torch.nonzero(t == tv).flatten()
            idx = (rows[:, None] * per + torch.arange(per)[None]).flatten()
            out[idx] = self.posterior_mean(pts[idx], ab_at(schedule, tv)).to(x_t.dtype)
        return from_points(out, x_t).contiguous()


def posterior_mean_float64(points, x, ab: float) -> np.ndarray:
    """A plain float64 reference of E[x_0 | x_t]: every weight written out (for tests)."""
    p = np.asarray(points, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    a, var = np.sqrt(ab), 1.0 - ab
    d2 = ((x[:, None, :] - a * p[None]) ** 2).sum(-1)
    logw = -d2 / (2 * var)
    logw -= logw.max(1, keepdims=True)
    w = np.exp(logw)
    w /= w.sum(1, keepdims=True)
    return w @ p


def eps_field(denoiser: Exact2D, x, schedule, t) -> np.ndarray:
    """ε̂(x, t) = (x − a·E[x_0|x])/s at N×2 points (N×2 float64)."""
    ab = ab_at(schedule, t)
    a, s = np.sqrt(ab), np.sqrt(1.0 - ab)
    x = np.asarray(x, dtype=np.float64)
    x0 = denoiser.posterior_mean(torch.from_numpy(x), ab).double().numpy()
    return (x - a * x0) / s


def score_from_eps(eps, schedule, t) -> np.ndarray:
    """∇_x log q(x_t) = −ε̂/√(1−ᾱ_t)."""
    return -np.asarray(eps) / np.sqrt(1.0 - ab_at(schedule, t))


def grid_axes(extent: float = 3.5, size: int = 128) -> np.ndarray:
    """Cell centres of a size×size grid covering [−extent, extent]² (the same on both axes)."""
    cell = 2 * extent / size
    return -extent + cell * (np.arange(size) + 0.5)


def density_grid(points, schedule, t, axis=None, min_sigma: float = 0.0, dtype=np.float32) -> np.ndarray:
    """q(x_t) at every grid cell centre (axis × axis; row = y, column = x), a G×G array.

    ``min_sigma`` floors the mixture's s for display only (a cell wider than s would miss the peaks: pass the
    cell size); 0 gives the exact density."""
    p = check_points(points).astype(dtype)
    g = grid_axes() if axis is None else np.asarray(axis)
    g = g.astype(dtype)
    ab = ab_at(schedule, t)
    a, s = np.sqrt(ab), max(np.sqrt(1.0 - ab), float(min_sigma))
    c = dtype(-0.5 / s**2)
    floor = dtype(FLOOR / 2) if dtype == np.float32 else -700.0   # float32: kx·ky stays a normal float (see FLOOR)
    kx = np.exp(np.maximum(c * (g[None, :] - dtype(a) * p[:, :1]) ** 2, floor))     # M×G
    ky = np.exp(np.maximum(c * (g[None, :] - dtype(a) * p[:, 1:]) ** 2, floor))
    # the product in torch: its thread setting holds (numpy's BLAS would start threads of its own)
    out = torch.from_numpy(np.ascontiguousarray(ky.T)) @ torch.from_numpy(kx)
    return out.numpy() * dtype(1.0 / (2 * np.pi * s**2 * len(p)))


def density_float64(points, schedule, t, xy) -> np.ndarray:
    """The mixture density at N×2 points, written out in float64 (for tests)."""
    p = np.asarray(points, dtype=np.float64)
    ab = ab_at(schedule, t)
    a, var = np.sqrt(ab), 1.0 - ab
    d2 = ((np.asarray(xy, dtype=np.float64)[:, None] - a * p[None]) ** 2).sum(-1)
    return np.exp(-d2 / (2 * var)).mean(1) / (2 * np.pi * var)
