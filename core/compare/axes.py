"""The axes of a comparison grid and its cells: ``name=v1,v2,…`` parsing, presets, and the plan in row-major order.

An axis with several values is a dimension of the grid (rows, then columns, then pages: at most three); an axis
with one value is a fixed setting of every cell. What a cell's values mean and what really ran is decided when the
grid runs (:mod:`core.compare.engine`), because it depends on the model (its T, its classes, its own schedule).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from core.models.denoiser import VARIANCE_TYPES
from core.samplers import SAMPLERS
from core.samplers.timesteps import SPACINGS

# axis name → (kind, what it is); aliases map to the names
AXES = {
    "sampler": ("choice", "sampler: " + ", ".join(SAMPLERS)),
    "steps": ("int", "model calls N"),
    "eta": ("float", "DDIM's η in [0, 1]"),
    "guidance": ("float", "classifier-free guidance w"),
    "class": ("class", "class label (−1 = no class; each = image i gets class i mod K)"),
    "seed": ("int", "noise seed"),
    "spacing": ("choice", "timestep spacing: " + ", ".join(SPACINGS)),
    "variance": ("choice", "DDPM variance: " + ", ".join(VARIANCE_TYPES)),
    "schedule": ("str", "own (the model's), a preset, a schedule FILE.json, or window (the window's)"),
    "model": ("str", "a model SPEC"),
}
ALIASES = {"w": "guidance", "cfg": "guidance", "label": "class", "timestep_spacing": "spacing",
           "variance_type": "variance", "η": "eta", "n_steps": "steps"}
CHOICES = {"sampler": SAMPLERS, "spacing": SPACINGS, "variance": VARIANCE_TYPES}
PRESETS = {"sampler": "ddpm,ddim,dpmpp2m", "steps": "10,20,50,100", "eta": "0,0.5,1", "guidance": "1,3,5,7",
           "class": "0..9", "seed": "0..3", "spacing": "leading,trailing,linspace", "variance": "fixed_small,fixed_large",
           "schedule": "own,linear,cosine,sigmoid", "model": ""}
SHORT = {"sampler": "", "steps": "steps ", "eta": "η ", "guidance": "w ", "class": "class ", "seed": "seed ",
         "spacing": "", "variance": "", "schedule": "", "model": ""}
MAX_VALUES = 64
MAX_CELLS = 1024
EACH = "each"
DEFAULTS = {"model": "builtin:mnist", "sampler": "ddim", "steps": None, "eta": 0.0, "guidance": 1.0, "class": None,
            "seed": 0, "spacing": None, "variance": None, "schedule": None, "n": 4}


def axis_name(text: str) -> str:
    name = text.strip().lower().replace("-", "_")
    name = ALIASES.get(name, name)
    if name not in AXES:
        raise ValueError(f"unknown axis {text.strip()!r}; choose one of {', '.join(AXES)}")
    return name


def _ints(part: str) -> list[int]:
    """``5`` or an inclusive range ``0..3``."""
    if ".." in part:
        lo, hi = (int(p) for p in part.split("..", 1))
        if hi < lo or hi - lo >= MAX_VALUES:
            raise ValueError(f"range {part} is empty or longer than {MAX_VALUES} values")
        return list(range(lo, hi + 1))
    return [int(part)]


def parse_value(name: str, part: str):
    """One value of axis ``name`` from its text (one-line ValueError with the axis named)."""
    kind = AXES[name][0]
    try:
        if kind == "choice":
            v = part.strip().lower()
            if v not in CHOICES[name]:
                raise ValueError(f"choose one of {', '.join(CHOICES[name])}")
            return [v]
        if kind == "int":
            vals = _ints(part.strip())
            low = 1 if name == "steps" else 0
            if any(v < low or v > 2**63 - 1 for v in vals):
                raise ValueError(f"must be ≥ {low}")
            return vals
        if kind == "float":
            v = float(part)
            hi = 1.0 if name == "eta" else 100.0
            if not (math.isfinite(v) and 0.0 <= v <= hi):
                raise ValueError(f"must be a number in [0, {hi:g}]")
            return [v]
        if kind == "class":
            v = part.strip().lower()
            if v in (EACH, "none", "any"):
                return [EACH if v == EACH else None]
            vals = _ints(v)
            if any(c < -1 for c in vals):
                raise ValueError("classes are ≥ 0 (−1 = no class)")
            return vals
        v = part.strip()
        if not v:
            raise ValueError("an empty value")
        return [None if name == "schedule" and v.lower() in ("own", "model") else v]
    except ValueError as e:
        reason = str(e) if "invalid literal" not in str(e) and "could not convert" not in str(e) else "not a number"
        raise ValueError(f"axis {name}: {part.strip()!r}: {reason}") from None


def value_label(name: str, value) -> str:
    """How a value is written on the grid."""
    if value is None:
        return {"schedule": "own schedule", "class": "no class", "steps": "default steps"}.get(name, "default")
    if isinstance(value, float):
        value = f"{value:g}"
    return f"{SHORT[name]}{value}"


@dataclass(frozen=True)
class Axis:
    name: str
    values: tuple

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(value_label(self.name, v) for v in self.values)


def parse_axis(text: str) -> Axis:
    """``name=v1,v2,…`` (ints also as ranges ``0..3``); ``name`` alone or ``name=preset`` takes the preset."""
    name, _, values = text.partition("=")
    name = axis_name(name)
    if not values.strip() or values.strip().lower() == "preset":
        values = PRESETS[name]
        if not values:
            raise ValueError(f"axis {name} has no preset: list its values ({name}=A,B)")
    # a model SPEC or a schedule path may hold commas only if quoted; split on commas otherwise
    parts = [p for p in values.split(",") if p.strip()]
    out: list = []
    for p in parts:
        out.extend(parse_value(name, p))
    if not out:
        raise ValueError(f"axis {name} lists no values")
    if len(out) > MAX_VALUES:
        raise ValueError(f"axis {name} has {len(out)} values; at most {MAX_VALUES}")
    if len(set(map(repr, out))) != len(out):
        raise ValueError(f"axis {name} repeats a value")
    return Axis(name, tuple(out))


@dataclass(frozen=True)
class Cell:
    """One cell: its position (page, row, column), its index in row-major order and the settings it asks for."""

    index: int
    page: int
    row: int
    col: int
    settings: dict = field(hash=False)
    axes: dict = field(hash=False)     # the grid axes' values of this cell (name → value)


@dataclass
class GridPlan:
    """Rows × columns (× pages) of cells in row-major order (page, then row, then column)."""

    rows: Axis | None
    cols: Axis | None
    pages: Axis | None
    fixed: dict
    cells: list

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(len(a.values) if a else 1 for a in (self.pages, self.rows, self.cols))

    @property
    def axes(self) -> list[Axis]:
        return [a for a in (self.rows, self.cols, self.pages) if a is not None]

    def cell(self, page: int, row: int, col: int) -> Cell:
        _, r, c = self.shape
        return self.cells[(page * r + row) * c + col]

    def title(self) -> str:
        """The fixed settings in one line (the grid's caption)."""
        shown = {k: v for k, v in self.fixed.items() if v is not None and k not in ("schedule",)}
        return " · ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items())


def plan_grid(axes, base: dict | None = None) -> GridPlan:
    """The cells of a grid over ``axes`` (Axis objects or ``name=…`` texts) with ``base`` settings (see
    :data:`DEFAULTS`; ``n`` is the batch per cell). The first axis with several values gives the rows, the second
    the columns, the third the pages; one axis alone gives one row of columns."""
    settings = dict(DEFAULTS)
    for k, v in (base or {}).items():
        if k not in settings:
            raise ValueError(f"unknown setting {k!r}")
        settings[k] = v
    parsed = [a if isinstance(a, Axis) else parse_axis(a) for a in axes]
    names = [a.name for a in parsed]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ValueError(f"axis {sorted(dup)[0]} is given twice")
    varying = []
    for a in parsed:
        if len(a.values) == 1:
            settings[a.name] = a.values[0]
        else:
            varying.append(a)
    if len(varying) > 3:
        raise ValueError(f"{len(varying)} axes with several values; a grid has at most three (rows, columns, pages)")
    if len(varying) == 1:
        rows, cols, pages = None, varying[0], None
    else:
        rows, cols, pages = (varying + [None, None, None])[:3]
    n_cells = math.prod(len(a.values) for a in varying) if varying else 1
    if n_cells > MAX_CELLS:
        raise ValueError(f"{n_cells} cells; at most {MAX_CELLS}")
    cells = []
    for p in range(len(pages.values) if pages else 1):
        for r in range(len(rows.values) if rows else 1):
            for c in range(len(cols.values) if cols else 1):
                own = {}
                for axis, k in ((pages, p), (rows, r), (cols, c)):
                    if axis is not None:
                        own[axis.name] = axis.values[k]
                cells.append(Cell(len(cells), p, r, c, {**settings, **own}, own))
    fixed = {k: v for k, v in settings.items() if k not in {a.name for a in varying}}
    return GridPlan(rows, cols, pages, fixed, cells)
