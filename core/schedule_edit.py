"""The visual schedule editor's math — no Qt here, so it is tested headless.

A schedule is edited through a few control points ("knots") on one of two curves, and rebuilt from them by
monotone cubic (PCHIP, Fritsch–Carlson) interpolation — the shape-preserving interpolant, which never overshoots
its data: between two knots it stays between their values and is monotone.

- **β space** (editing the β_t curve): knots (t_k, β_k) with every β_k in (0, 1). The interpolant stays between
  neighbouring knot values, so every β_t is in (0, 1), and ᾱ_t = Π(1 − β_s) is then strictly decreasing.
- **log-SNR space** (editing ᾱ_t, √ᾱ_t, √(1−ᾱ_t) or log-SNR; all four are monotone functions of
  λ_t = log(ᾱ_t / (1 − ᾱ_t))): knots must be strictly decreasing in λ. PCHIP keeps λ strictly decreasing, so
  ᾱ_t = sigmoid(λ_t) is strictly decreasing in (0, 1) and β_t = 1 − ᾱ_t/ᾱ_{t−1} is in (0, 1).

An edit that cannot satisfy these (a β knot at or beyond 0 or 1, an ᾱ knot above the one before it, an ᾱ that
underflows to 0 or stops decreasing in float64) raises :class:`EditError` with one line, and the caller keeps
its last valid schedule. A zero-terminal-SNR schedule keeps its last step pinned (ᾱ_{T−1} = 0, β_{T−1} = 1);
the knots cover t = 0…T−2.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.schedule import NoiseSchedule, ScheduleError

BETA, LOGSNR = "beta", "logsnr"
# The curves the schedule plot can show and edit: key → (label, knot space).
CURVES = {
    "beta": ("β_t", BETA),
    "alphas_cumprod": ("ᾱ_t", LOGSNR),
    "sqrt_alphas_cumprod": ("√ᾱ_t", LOGSNR),
    "sqrt_one_minus_alphas_cumprod": ("√(1−ᾱ_t)", LOGSNR),
    "log_snr": ("log-SNR λ_t", LOGSNR),
}

# The same curves as rich text (plot axes, legends), what each one is (the curve menu's tooltips), and the presets'
# names in the preset menu.
CURVE_HTML = {
    "beta": "β<sub>t</sub>",
    "alphas_cumprod": "ᾱ<sub>t</sub>",
    "sqrt_alphas_cumprod": "√ᾱ<sub>t</sub>",
    "sqrt_one_minus_alphas_cumprod": "√(1−ᾱ<sub>t</sub>)",
    "log_snr": "log-SNR λ<sub>t</sub>",
}
CURVE_TIPS = {
    "beta": "β_t: the variance added at step t, x_t = √(1−β_t)·x_{t−1} + √β_t·ε (eq. 2)",
    "alphas_cumprod": "ᾱ_t = Π_{s≤t}(1 − β_s): the signal's share of the variance of x_t (eq. 4–5)",
    "sqrt_alphas_cumprod": "√ᾱ_t: the scale of x_0 in x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε (eq. 5); dashed: √(1−ᾱ_t)",
    "sqrt_one_minus_alphas_cumprod": "√(1−ᾱ_t): the scale of ε in x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε (eq. 5); "
                                     "dashed: √ᾱ_t",
    "log_snr": "log-SNR λ_t = log(ᾱ_t / (1 − ᾱ_t)), natural log",
}
PRESET_LABELS = {"linear": "linear (Ho et al.)", "scaled_linear": "scaled linear (Stable Diffusion)",
                 "cosine": "cosine (Nichol & Dhariwal)", "sigmoid": "sigmoid", "quadratic": "quadratic"}


class EditError(ValueError):
    """An edit that would break the schedule's constraints; the message is one line for the status bar."""


def pchip(x, y, xq) -> np.ndarray:
    """Monotone piecewise-cubic Hermite interpolation (Fritsch & Carlson 1980; the derivative rule of scipy's
    ``PchipInterpolator``). ``x`` strictly increasing, at least two points; ``xq`` is clamped to [x_0, x_n]."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    xq = np.clip(np.asarray(xq, dtype=np.float64), x[0], x[-1])
    n = len(x)
    if n < 2 or len(y) != n:
        raise ValueError("pchip needs at least two points and as many values")
    h = np.diff(x)
    if np.any(h <= 0):
        raise ValueError("pchip needs strictly increasing x")
    delta = np.diff(y) / h
    d = np.zeros(n)
    if n == 2:
        d[:] = delta[0]
    else:
        w1 = 2 * h[1:] + h[:-1]
        w2 = h[1:] + 2 * h[:-1]
        same = np.sign(delta[:-1]) * np.sign(delta[1:]) > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            hm = (w1 + w2) / (w1 / delta[:-1] + w2 / delta[1:])
        d[1:-1] = np.where(same, hm, 0.0)
        d[0] = _edge_slope(h[0], h[1], delta[0], delta[1])
        d[-1] = _edge_slope(h[-1], h[-2], delta[-1], delta[-2])
    k = np.clip(np.searchsorted(x, xq, side="right") - 1, 0, n - 2)
    s = (xq - x[k]) / h[k]
    h00 = (1 + 2 * s) * (1 - s) ** 2
    h10 = s * (1 - s) ** 2
    h01 = s * s * (3 - 2 * s)
    h11 = s * s * (s - 1)
    return h00 * y[k] + h10 * h[k] * d[k] + h01 * y[k + 1] + h11 * h[k] * d[k + 1]


def _edge_slope(h0, h1, m0, m1) -> float:
    d = ((2 * h0 + h1) * m0 - h0 * m1) / (h0 + h1)
    if np.sign(d) != np.sign(m0):
        return 0.0
    if np.sign(m0) != np.sign(m1) and abs(d) > abs(3 * m0):
        return 3 * m0
    return float(d)


# ----- curves ↔ knot spaces -------------------------------------------------------------------------------------
def curve_values(schedule: NoiseSchedule, curve: str) -> np.ndarray:
    """The plotted quantity of ``curve`` for every t (log-SNR is −inf at a zero-terminal-SNR end)."""
    if curve == "beta":
        return np.asarray(schedule.betas)
    if curve == "alphas_cumprod":
        return np.asarray(schedule.alphas_cumprod)
    if curve == "sqrt_alphas_cumprod":
        return np.asarray(schedule.sqrt_alphas_cumprod)
    if curve == "sqrt_one_minus_alphas_cumprod":
        return np.asarray(schedule.sqrt_one_minus_alphas_cumprod)
    if curve == "log_snr":
        return np.asarray(schedule.log_snr)
    raise KeyError(curve)


def space_of(curve: str) -> str:
    return CURVES[curve][1]


def to_space(curve: str, y: float) -> float:
    """A value of the plotted ``curve`` → the knot space's value (β, or λ = logit ᾱ). Raises EditError if the
    value is outside the curve's range."""
    y = float(y)
    if not np.isfinite(y):
        raise EditError(f"{CURVES[curve][0]} must be a finite number")
    if curve == "beta":
        if not 0.0 < y < 1.0:
            raise EditError(f"β must stay between 0 and 1 (this point would be β = {y:.4g})")
        return y
    if curve == "log_snr":
        return y
    label = CURVES[curve][0]
    if curve == "alphas_cumprod":
        ab = y
    elif curve == "sqrt_alphas_cumprod":
        ab = y * y if y > 0 else -1.0
    elif curve == "sqrt_one_minus_alphas_cumprod":
        ab = 1.0 - y * y if y > 0 else 2.0
    else:
        raise KeyError(curve)
    if not 0.0 < ab < 1.0 or (curve != "alphas_cumprod" and not 0.0 < y < 1.0):
        raise EditError(f"{label} must stay between 0 and 1 (this point would be {y:.4g})")
    return float(np.log(ab) - np.log1p(-ab))


def from_space(curve: str, v: float) -> float:
    """Inverse of :func:`to_space`."""
    v = float(v)
    if curve in ("beta", "log_snr"):
        return v
    ab = _sigmoid(np.asarray(v))
    if curve == "alphas_cumprod":
        return float(ab)
    if curve == "sqrt_alphas_cumprod":
        return float(np.sqrt(ab))
    if curve == "sqrt_one_minus_alphas_cumprod":
        return float(np.sqrt(_sigmoid(np.asarray(-v))))  # 1 − ᾱ = sigmoid(−λ), accurate near ᾱ → 1
    raise KeyError(curve)


def _sigmoid(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    out = np.empty_like(v)
    pos = v >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-v[pos]))
    e = np.exp(v[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def space_values(schedule: NoiseSchedule, space: str) -> np.ndarray:
    return np.asarray(schedule.betas if space == BETA else schedule.log_snr, dtype=np.float64)


def zero_terminal(schedule: NoiseSchedule) -> bool:
    """True for a zero-terminal-SNR schedule (ᾱ_{T−1} = 0, β_{T−1} = 1): its last step is pinned while editing."""
    return bool(schedule.alphas_cumprod[-1] == 0.0)


# ----- knots ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Knots:
    """Control points in a knot space: t strictly increasing from 0 to the last editable step."""

    space: str
    t: tuple[int, ...]
    v: tuple[float, ...]

    def __len__(self) -> int:
        return len(self.t)

    def with_point(self, i: int, t: int, v: float) -> "Knots":
        ts, vs = list(self.t), list(self.v)
        ts[i], vs[i] = int(t), float(v)
        return Knots(self.space, tuple(ts), tuple(vs))

    def dragged(self, i: int, t: int, v: float) -> "Knots":
        """Point i moved to (t, v), t kept strictly between its neighbours' (the first and last stay put)."""
        if i == 0:
            t = 0
        elif i == len(self) - 1:
            t = self.t[-1]
        else:
            t = min(max(int(t), self.t[i - 1] + 1), self.t[i + 1] - 1)
        return self.with_point(i, t, v)

    def inserted(self, t: int, v: float) -> tuple["Knots", int]:
        if t in self.t:
            raise EditError(f"there is already a point at t = {t}")
        i = int(np.searchsorted(self.t, t))
        ts = self.t[:i] + (int(t),) + self.t[i:]
        vs = self.v[:i] + (float(v),) + self.v[i:]
        return Knots(self.space, ts, vs), i

    def removed(self, i: int) -> "Knots":
        if i in (0, len(self) - 1):
            raise EditError("the first and last points can't be removed (drag them instead)")
        if len(self) <= 2:
            raise EditError("a schedule needs at least two points")
        return Knots(self.space, self.t[:i] + self.t[i + 1:], self.v[:i] + self.v[i + 1:])

    def stretched(self, last: int) -> "Knots":
        """The same points with t scaled so the last one is at ``last`` (points that would share a t dropped):
        an edited schedule keeps its shape when T changes."""
        if last < 1:
            raise EditError(f"a last point at t = {last} leaves no room for the schedule")
        ts, vs = [], []
        for t, v in zip(self.t, self.v):
            nt = int(round(t * last / self.t[-1]))
            if ts and nt <= ts[-1]:
                continue
            ts.append(nt)
            vs.append(v)
        ts[-1] = last
        return Knots(self.space, tuple(ts), tuple(vs))


def fit_knots(schedule: NoiseSchedule, space: str, min_points: int = 5, max_points: int = 12,
              tol: float = 0.01) -> Knots:
    """Knots that reproduce ``schedule`` closely: ``min_points`` evenly spaced, then the worst-fitting step added
    until the interpolant is within ``tol`` (relative error of β, or of 1 − ᾱ and ᾱ for log-SNR) or there are
    ``max_points``. A linear β schedule is reproduced exactly by its evenly spaced points."""
    last = schedule.T - 2 if zero_terminal(schedule) else schedule.T - 1
    vals = space_values(schedule, space)[:last + 1]
    n0 = max(2, min(min_points, last + 1))
    ts = sorted(set(int(round(v)) for v in np.linspace(0, last, n0)))
    grid = np.arange(last + 1)
    min_gap = max(1, last // 50)  # points closer than this would sit on top of each other in the plot
    while True:
        approx = pchip(ts, vals[ts], grid)
        err = _fit_error(vals, approx, space)
        if err.max() <= tol or len(ts) >= max_points:
            break
        gap = np.min(np.abs(grid[:, None] - np.asarray(ts)[None, :]), axis=1)
        err[gap < min_gap] = 0.0
        worst = int(np.argmax(err))
        if err[worst] <= tol:
            break
        ts = sorted(ts + [worst])
    return Knots(space, tuple(ts), tuple(float(vals[t]) for t in ts))


def _fit_error(vals: np.ndarray, approx: np.ndarray, space: str) -> np.ndarray:
    if space == BETA:
        return np.abs(approx - vals) / vals
    ab, ab2 = _sigmoid(vals), _sigmoid(approx)
    return np.maximum(np.abs(ab2 - ab) / np.maximum(ab, 1e-12), np.abs(ab - ab2) / np.maximum(1 - ab, 1e-12))


def schedule_from_knots(knots: Knots, T: int, zero_terminal_snr: bool = False) -> NoiseSchedule:
    """Rebuild a schedule of length T from ``knots`` (see the module docstring). Raises EditError."""
    last = T - 2 if zero_terminal_snr else T - 1
    ts = np.asarray(knots.t, dtype=np.float64)
    vs = np.asarray(knots.v, dtype=np.float64)
    if len(ts) < 2:
        raise EditError("a schedule needs at least two points")
    if ts[0] != 0 or ts[-1] != last or np.any(np.diff(ts) <= 0):
        raise EditError(f"points must cover t = 0…{last} in order")
    if not np.all(np.isfinite(vs)):
        raise EditError("every point needs a finite value")
    grid = np.arange(last + 1, dtype=np.float64)
    if knots.space == BETA:
        bad = np.flatnonzero((vs <= 0) | (vs >= 1))
        if bad.size:
            i = bad[0]
            raise EditError(f"β must stay between 0 and 1 (the point at t = {int(ts[i])} would be β = {vs[i]:.4g})")
        betas = np.clip(pchip(ts, vs, grid), vs.min(), vs.max())  # PCHIP stays in range; clip only float dust
        ab = np.cumprod(1.0 - betas)
    else:
        rising = np.flatnonzero(np.diff(vs) >= 0)
        if rising.size:
            i = rising[0] + 1
            raise EditError(f"ᾱ must decrease: the point at t = {int(ts[i])} is not below the one at "
                            f"t = {int(ts[i - 1])}")
        ab = _sigmoid(pchip(ts, vs, grid))
        if ab[0] >= 1.0:
            raise EditError("ᾱ_0 rounds to 1 (β_0 would be 0): lower the first point")
    if np.any(ab <= 0):
        i = int(np.argmax(ab <= 0))
        raise EditError(f"ᾱ underflows to 0 at t = {i}: lower β (or use zero terminal SNR)")
    flat = np.flatnonzero(np.diff(np.concatenate([[1.0], ab])) >= 0)
    if flat.size:
        raise EditError(f"ᾱ stops decreasing at t = {int(flat[0])} (β rounds to 0 there): raise that part")
    params = {"T": int(T), "zero_snr": bool(zero_terminal_snr),
              "knots": {"space": knots.space, "t": [int(t) for t in knots.t], "v": [float(v) for v in knots.v]}}
    try:
        if knots.space == BETA:
            betas = np.concatenate([betas, [1.0]]) if zero_terminal_snr else betas
        else:
            ab = np.concatenate([ab, [0.0]]) if zero_terminal_snr else ab
            betas = 1.0 - ab / np.concatenate([[1.0], ab[:-1]])
        return NoiseSchedule(betas, name="custom", params=params)
    except ScheduleError as e:
        raise EditError(str(e)) from None


def knots_from_params(schedule: NoiseSchedule) -> Knots | None:
    """The knots an edited schedule was built from (stored in its params, so they survive Save/Load), if they
    still rebuild exactly this schedule."""
    k = schedule.params.get("knots") if isinstance(schedule.params, dict) else None
    try:
        knots = Knots(str(k["space"]), tuple(int(t) for t in k["t"]), tuple(float(v) for v in k["v"]))
        if knots.space not in (BETA, LOGSNR):
            return None
        rebuilt = schedule_from_knots(knots, schedule.T, zero_terminal(schedule))
    except (TypeError, KeyError, ValueError):
        return None
    return knots if np.allclose(rebuilt.betas, schedule.betas, rtol=1e-9, atol=1e-15) else None


# ----- edits of a schedule (what the panel's gestures do) ---------------------------------------------------------
def knots_in(space: str, schedule: NoiseSchedule, knots: Knots | None = None) -> Knots:
    """``knots`` when they are in ``space``, else knots fitted to ``schedule`` there."""
    return knots if knots is not None and knots.space == space else fit_knots(schedule, space)


def rebuilt(knots: Knots, schedule: NoiseSchedule) -> NoiseSchedule:
    """The schedule ``knots`` make at ``schedule``'s T, zero terminal SNR kept. Raises EditError."""
    return schedule_from_knots(knots, schedule.T, zero_terminal(schedule))


def point_added(knots: Knots, schedule: NoiseSchedule, t: int) -> Knots:
    """``knots`` with a point on ``schedule``'s curve at t (strictly inside the knots' range). Raises EditError."""
    t = int(round(t))
    if not 0 < t < knots.t[-1]:
        raise EditError(f"add points between t = 1 and t = {knots.t[-1] - 1}")
    return knots.inserted(t, float(space_values(schedule, knots.space)[t]))[0]


def stretched_to(knots: Knots, schedule: NoiseSchedule, T: int) -> tuple[Knots, NoiseSchedule]:
    """An edited schedule at a new T: its points stretched to the new last step (:meth:`Knots.stretched`) and the
    schedule they make. Raises EditError."""
    zt = zero_terminal(schedule)
    last = T - 2 if zt else T - 1
    if last < 1:
        raise EditError(f"T = {T} is too small for this schedule")
    knots = knots.stretched(last)
    return knots, schedule_from_knots(knots, T, zt)


def knot_points(knots: Knots, curve: str, log_y: bool) -> tuple[np.ndarray, np.ndarray]:
    """Where the knots are drawn on the plot of ``curve``: (t, value), log10 of the value on a log axis."""
    y = np.asarray([from_space(curve, v) for v in knots.v])
    if log_y:
        with np.errstate(divide="ignore"):
            y = np.log10(y)
    return np.asarray(knots.t, dtype=np.float64), y


def summary_html(schedule: NoiseSchedule, points: int) -> str:
    """The line under the schedule plot (rich text): name, T, β range, ᾱ_{T−1} and the number of points."""
    s, ab_end = schedule, schedule.alphas_cumprod[-1]
    snr_end = "0 (zero terminal SNR)" if ab_end == 0 else f"{ab_end:.3g}"
    return (f"<b>{s.name}</b> · T = {s.T} · β {s.betas[0]:.3g} → {s.betas[-1]:.3g} · "
            f"ᾱ<sub>T−1</sub> = {snr_end} · {points} control points")
