"""Noise schedules β_1…β_T and every quantity derived from them (DDPM notes, eq. 1–5 and 14).

Timesteps are indexed 0…T−1, exactly as the notes' code indexes ``alpha_bar[t]``: ``betas[0]`` is the first
noising step, ``alphas_cumprod[t]`` = ᾱ_t = Π_{s≤t} (1 − β_s). All arithmetic is float64.

Presets:
- ``linear``         Ho et al. 2020: β linear from ``beta_start`` to ``beta_end`` (1e-4 → 0.02, T=1000).
- ``scaled_linear``  Stable Diffusion: the square roots are linear, β = linspace(√start, √end)².
- ``cosine``         Nichol & Dhariwal 2021: ᾱ(t) = cos²((t/T + s)/(1 + s)·π/2), s = 0.008, β capped at 0.999
                     (diffusers calls it ``squaredcos_cap_v2``; that name is accepted too).
- ``sigmoid``        β = start + (end − start)·sigmoid(linspace(−6, 6)), as in diffusers.
- ``quadratic``      β = start + (end − start)·u², u = linspace(0, 1): quadratic in t, flat at the start
                     (unlike ``scaled_linear``, which is (linear)²).

``zero_snr=True`` rescales √ᾱ so that ᾱ_{T−1} = 0 exactly (Lin et al. 2023, "Common Diffusion Noise Schedules and
Sample Steps are Flawed", Alg. 1). We do it in float64; diffusers does it in float32 and lands about 2e-4 away.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

PRESETS = ("linear", "scaled_linear", "cosine", "sigmoid", "quadratic")
ALIASES = {"squaredcos_cap_v2": "cosine"}
MAX_T = 100_000
FORMAT = "ddpm-studio.schedule"
FORMAT_VERSION = 1


class ScheduleError(ValueError):
    """A schedule that cannot be built; the message is one line that names the problem."""


def _preset_betas(name: str, T: int, beta_start: float, beta_end: float) -> np.ndarray:
    if name == "linear":
        return np.linspace(beta_start, beta_end, T, dtype=np.float64)
    if name == "scaled_linear":
        return np.linspace(beta_start**0.5, beta_end**0.5, T, dtype=np.float64) ** 2
    if name == "quadratic":
        return beta_start + (beta_end - beta_start) * np.linspace(0.0, 1.0, T, dtype=np.float64) ** 2
    if name == "sigmoid":
        return beta_start + (beta_end - beta_start) / (1.0 + np.exp(-np.linspace(-6.0, 6.0, T, dtype=np.float64)))
    if name == "cosine":
        s = 0.008
        f = lambda u: np.cos((u + s) / (1.0 + s) * math.pi / 2) ** 2  # noqa: E731 - ᾱ as a function of t/T
        u = np.arange(T + 1, dtype=np.float64) / T
        return np.minimum(1.0 - f(u[1:]) / f(u[:-1]), 0.999)
    raise ScheduleError(f"unknown schedule preset {name!r}; choose one of {', '.join(PRESETS)}")


def rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """Lin et al. 2023, Alg. 1: shift and scale √ᾱ so √ᾱ_{T−1} = 0 and √ᾱ_0 is unchanged; returns new β."""
    sqrt_ab = np.sqrt(np.cumprod(1.0 - np.asarray(betas, dtype=np.float64)))
    first, last = sqrt_ab[0], sqrt_ab[-1]
    sqrt_ab = (sqrt_ab - last) * first / (first - last)
    ab = sqrt_ab**2
    alphas = np.concatenate([ab[:1], ab[1:] / ab[:-1]])
    return 1.0 - alphas


def _check_T(T) -> int:
    if isinstance(T, bool) or not isinstance(T, (int, np.integer)):
        raise ScheduleError(f"T must be an integer, got {T!r}")
    if T < 2:
        raise ScheduleError(f"T must be at least 2, got {T}")
    if T > MAX_T:
        raise ScheduleError(f"T={T} is too large (at most {MAX_T})")
    return int(T)


@dataclass(frozen=True, eq=False)
class NoiseSchedule:
    """β_0…β_{T−1} plus cached derived quantities. Build with :meth:`preset`, :meth:`from_betas` or
    :meth:`from_alphas_cumprod`; all three validate."""

    betas: np.ndarray
    name: str = "custom"
    params: dict = field(default_factory=dict)

    def __post_init__(self):
        b = np.array(self.betas, dtype=np.float64, copy=True)
        if b.ndim != 1:
            raise ScheduleError(f"betas must be a 1-D list, got shape {b.shape}")
        _check_T(len(b))
        bad = ~np.isfinite(b)
        if bad.any():
            i = int(np.argmax(bad))
            raise ScheduleError(f"beta[{i}] is {b[i]} (must be a finite number)")
        low = b <= 0
        if low.any():
            i = int(np.argmax(low))
            raise ScheduleError(f"beta[{i}] = {b[i]:.6g} must be > 0")
        high = b >= 1
        high[-1] = b[-1] > 1  # a zero-terminal-SNR schedule ends with β = 1 exactly
        if high.any():
            i = int(np.argmax(high))
            raise ScheduleError(f"beta[{i}] = {b[i]:.6g} must be < 1")
        ab = np.cumprod(1.0 - b)
        if ab[0] == 1.0:  # 1 − ᾱ_0 would be 0: x_0 gets no noise, SNR and β̃ divide by zero
            raise ScheduleError(f"beta[0] = {b[0]:.3g} is too small: 1 − ᾱ_0 rounds to 0 in float64 "
                                f"(use at least 1e-15)")
        under = ab[:-1] == 0.0
        if under.any():  # ᾱ_t may reach 0 only at the last step (zero terminal SNR)
            i = int(np.argmax(under))
            raise ScheduleError(f"ᾱ_t underflows to 0 at t = {i}, before the last step: these β are too large "
                                f"for T = {len(b)}")
        b.setflags(write=False)
        object.__setattr__(self, "betas", b)
        object.__setattr__(self, "params", dict(self.params))

    # ----- constructors -------------------------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str = "linear", T: int = 1000, beta_start: float | None = None,
               beta_end: float | None = None, zero_snr: bool = False) -> "NoiseSchedule":
        """A named preset; ``beta_start``/``beta_end`` default to Ho et al.'s 1e-4 and 0.02 (unused by cosine)."""
        name = ALIASES.get(name, name)
        if name not in PRESETS:
            raise ScheduleError(f"unknown schedule preset {name!r}; choose one of {', '.join(PRESETS)}")
        T = _check_T(T)
        beta_start = 1e-4 if beta_start is None else float(beta_start)
        beta_end = 0.02 if beta_end is None else float(beta_end)
        if name != "cosine":
            for label, v in (("beta_start", beta_start), ("beta_end", beta_end)):
                if not math.isfinite(v) or not 0.0 < v < 1.0:
                    raise ScheduleError(f"{label} = {v} must be in (0, 1)")
        betas = _preset_betas(name, T, beta_start, beta_end)
        if zero_snr:
            betas = rescale_zero_terminal_snr(betas)
        params = {"T": T, "zero_snr": bool(zero_snr)}
        if name != "cosine":
            params.update(beta_start=beta_start, beta_end=beta_end)
        return cls(betas, name=name, params=params)

    @classmethod
    def from_betas(cls, betas, name: str = "custom") -> "NoiseSchedule":
        return cls(np.asarray(betas, dtype=np.float64), name=name)

    @classmethod
    def from_alphas_cumprod(cls, alphas_cumprod, name: str = "custom") -> "NoiseSchedule":
        """β_t = 1 − ᾱ_t / ᾱ_{t−1} (ᾱ_{−1} = 1); ᾱ must be strictly decreasing in (0, 1) (the last may be 0)."""
        ab = np.asarray(alphas_cumprod, dtype=np.float64)
        if ab.ndim != 1:
            raise ScheduleError(f"alphas_cumprod must be a 1-D list, got shape {ab.shape}")
        if not np.all(np.isfinite(ab)):
            raise ScheduleError("alphas_cumprod contains NaN or inf")
        prev = np.concatenate([[1.0], ab[:-1]])
        if np.any(ab >= prev) or ab[-1] < 0 or np.any(ab[:-1] <= 0):
            raise ScheduleError("alphas_cumprod must decrease strictly and stay in (0, 1)")
        return cls(1.0 - ab / prev, name=name)

    # ----- derived quantities (eq. 1–5, 14) ------------------------------------------------------------------
    @property
    def T(self) -> int:
        return len(self.betas)

    def _ro(self, a: np.ndarray) -> np.ndarray:
        a.setflags(write=False)
        return a

    @cached_property
    def alphas(self) -> np.ndarray:
        """α_t = 1 − β_t."""
        return self._ro(1.0 - self.betas)

    @cached_property
    def alphas_cumprod(self) -> np.ndarray:
        """ᾱ_t = Π_{s≤t} α_s (eq. 4)."""
        return self._ro(np.cumprod(self.alphas))

    @cached_property
    def alphas_cumprod_prev(self) -> np.ndarray:
        """ᾱ_{t−1}, with ᾱ_{−1} = 1."""
        return self._ro(np.concatenate([[1.0], self.alphas_cumprod[:-1]]))

    @cached_property
    def sqrt_alphas_cumprod(self) -> np.ndarray:
        """√ᾱ_t: the signal scale of q(x_t | x_0) (eq. 5)."""
        return self._ro(np.sqrt(self.alphas_cumprod))

    @cached_property
    def sqrt_one_minus_alphas_cumprod(self) -> np.ndarray:
        """√(1 − ᾱ_t): the noise scale of q(x_t | x_0) (eq. 5)."""
        return self._ro(np.sqrt(1.0 - self.alphas_cumprod))

    @cached_property
    def posterior_variance(self) -> np.ndarray:
        """β̃_t = β_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t) (eq. 14); β̃_0 = 0."""
        return self._ro(self.betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod))

    @cached_property
    def posterior_mean_coef1(self) -> np.ndarray:
        """Coefficient of x_0 in μ̃_t: β_t √ᾱ_{t−1} / (1 − ᾱ_t) (eq. 14)."""
        return self._ro(self.betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod))

    @cached_property
    def posterior_mean_coef2(self) -> np.ndarray:
        """Coefficient of x_t in μ̃_t: √α_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t) (eq. 14)."""
        return self._ro(np.sqrt(self.alphas) * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod))

    @cached_property
    def snr(self) -> np.ndarray:
        """SNR(t) = ᾱ_t / (1 − ᾱ_t)."""
        return self._ro(self.alphas_cumprod / (1.0 - self.alphas_cumprod))

    @cached_property
    def log_snr(self) -> np.ndarray:
        """log SNR(t) (natural log); −inf at a zero-terminal-SNR end."""
        with np.errstate(divide="ignore"):
            return self._ro(np.log(self.alphas_cumprod) - np.log1p(-self.alphas_cumprod))

    def check_t(self, t: int) -> int:
        if not 0 <= int(t) < self.T:
            raise ScheduleError(f"timestep {t} is outside 0…{self.T - 1}")
        return int(t)

    def __eq__(self, other) -> bool:
        return isinstance(other, NoiseSchedule) and np.array_equal(self.betas, other.betas)

    def __hash__(self) -> int:
        return hash(self.betas.tobytes())

    def __repr__(self) -> str:
        return f"NoiseSchedule({self.name!r}, T={self.T}, β {self.betas[0]:.4g}…{self.betas[-1]:.4g})"

    # ----- JSON --------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": FORMAT_VERSION, "name": self.name, "params": self.params,
                "T": self.T, "betas": [float(b) for b in self.betas]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, d) -> "NoiseSchedule":
        if not isinstance(d, dict):
            raise ScheduleError("schedule JSON must be an object")
        if d.get("format", FORMAT) != FORMAT:
            raise ScheduleError(f"not a DDPM Studio schedule (format {d.get('format')!r})")
        version = d.get("version", FORMAT_VERSION)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ScheduleError(f"schedule format version {version!r} is newer than this program reads ({FORMAT_VERSION})")
        betas = d.get("betas")
        if not isinstance(betas, list) or not all(isinstance(b, (int, float)) and not isinstance(b, bool)
                                                   for b in betas):
            raise ScheduleError("schedule JSON needs 'betas', a list of numbers")
        if "T" in d and d["T"] != len(betas):
            T = d["T"] if isinstance(d["T"], int) and abs(d["T"]) < 10**9 else "?"
            raise ScheduleError(f"schedule JSON says T={T} but has {len(betas)} betas (truncated?)")
        params = d.get("params") if isinstance(d.get("params"), dict) else {}
        params = {str(k)[:64]: v for k, v in params.items() if _plain_value(v)}  # only flat, finite values
        name = d.get("name", "custom")
        name = name[:200] if isinstance(name, str) else "custom"
        try:
            betas = np.asarray(betas, dtype=np.float64)
        except OverflowError:  # an integer with hundreds of digits
            raise ScheduleError("schedule JSON has a beta too large to be a number") from None
        return cls(betas, name=name, params=params)

    @classmethod
    def from_json(cls, text: str) -> "NoiseSchedule":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ScheduleError(f"schedule file is not valid JSON ({e.msg} at line {e.lineno})") from None
        except UnicodeDecodeError:
            raise ScheduleError("schedule file is not UTF-8 text") from None
        except RecursionError:
            raise ScheduleError("schedule file is nested too deeply to be a schedule") from None
        except ValueError as e:  # e.g. an integer literal of thousands of digits
            raise ScheduleError(f"schedule file has an unreadable number ({str(e).splitlines()[0][:80]})") from None
        return cls.from_dict(d)

    def save(self, path) -> None:
        from core.atomic import write_text_atomic
        write_text_atomic(path, self.to_json())

    @classmethod
    def load(cls, path) -> "NoiseSchedule":
        from pathlib import Path
        p = Path(path)
        if not p.exists():
            raise ScheduleError(f"{p}: no such file")
        if p.is_dir():
            raise ScheduleError(f"{p}: is a directory, not a schedule file")
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ScheduleError(f"{p}: not a schedule file (not UTF-8 text)") from None
        except OSError as e:
            raise ScheduleError(f"{p}: cannot read ({e.strerror})") from None
        try:
            return cls.from_json(text)
        except ScheduleError as e:
            raise ScheduleError(f"{p}: {e}") from None
        except Exception as e:  # anything else a crafted file can provoke is still one line naming it
            from core.messages import one_line
            raise ScheduleError(f"{p}: not a usable schedule file ({one_line(e)})") from None


def _plain_value(v, depth: int = 0) -> bool:
    """A params entry worth keeping from a file: short strings, bools, None, finite numbers, and lists and objects
    of them a few levels deep (the schedule editor's knots); anything else is dropped."""
    if v is None or isinstance(v, bool):
        return True
    if isinstance(v, (int, float)):
        return math.isfinite(v) and abs(v) < 1e300
    if isinstance(v, str):
        return len(v) <= 200
    if depth >= 3 or not isinstance(v, (list, dict)) or len(v) > MAX_T:
        return False
    items = v.items() if isinstance(v, dict) else enumerate(v)
    return all(_plain_value(x, depth + 1) and (not isinstance(k, str) or len(k) <= 64) for k, x in items)


def parse_schedule_spec(spec: str | None, T: int | None = None, beta_start: float | None = None,
                        beta_end: float | None = None, zero_snr: bool = False) -> NoiseSchedule:
    """A preset name or a ``.json`` path, as the CLI's ``--schedule`` takes it."""
    if spec and (spec.endswith(".json") or "/" in spec):
        return NoiseSchedule.load(spec)
    return NoiseSchedule.preset(spec or "linear", T=1000 if T is None else T, beta_start=beta_start,
                                beta_end=beta_end, zero_snr=zero_snr)


# The two schedules the program falls back on, each defined once.
NOTES_T, NOTES_BETA_START, NOTES_BETA_END = 100, 1e-4, 0.05


def notes_schedule(zero_snr: bool = False) -> NoiseSchedule:
    """The DDPM notes' worked example: linear β from 1e-4 to 0.05 over T = 100 (``ddpm noise``'s default and the
    window's first schedule)."""
    return NoiseSchedule.preset("linear", T=NOTES_T, beta_start=NOTES_BETA_START, beta_end=NOTES_BETA_END,
                                zero_snr=zero_snr)


def default_schedule() -> NoiseSchedule:
    """Ho et al.'s linear schedule, 1e-4 → 0.02 over T = 1000: what a model with no schedule of its own (the
    oracle) samples and is bounded with, unless the user picks another."""
    return NoiseSchedule.preset("linear", T=1000)


def model_schedule(denoiser) -> NoiseSchedule:
    """The schedule a model was trained with, or :func:`default_schedule` for one that has none (the oracle)."""
    own = getattr(denoiser, "schedule", None)
    return own if own is not None else default_schedule()
