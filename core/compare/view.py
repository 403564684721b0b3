"""The Qt-free half of the window's Compare tab: its job (:class:`CompareJob`), the series of the score plot, and
how a cell's settings map onto the Generate tab (and which of them Generate cannot take)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from core.compare.axes import GridPlan
from core.compare.engine import CellResult, GridRun, run_grid
from core.samplers import DEFAULT_SPACING

TIPS = {
    "compareModelCombo": "The model every cell samples (a model axis overrides it): the same menu as Generate",
    "compareBatchSpin": "Images per cell: each cell is one batch of this size (cells of one seed share x_T)",
    "compareSeedSpin": "The noise seed of cells without a seed axis: x_T ~ N(0, I) from a CPU generator seeded with it",
    "compareStepsSpin": "Model calls per cell without a steps axis (0 = the sampler's default: DDPM T, DDIM 50, "
                        "DPM-Solver++ 20)",
    "compareClassEdit": "The class of cells without a class axis: a digit, 'each' (image i gets class i mod K) or "
                        "empty = each class in turn when guidance is on the grid, else none",
    "compareGuidanceSpin": "Classifier-free guidance w of cells without a guidance axis",
    "compareGrid": "The cells: click one to choose it, double-click to open its recorded steps in Generate's replay",
    "comparePlot": "The chosen score against the columns' values, one line per row",
}


@dataclass
class CompareJob:
    """One Compare run, fixed at the click: the plan, how to load a SPEC (``load(spec, device=…)``), the device
    and the extra schedules cells may name ("window")."""

    plan: GridPlan
    load: Callable
    device: str = "cpu"
    schedules: dict = field(default_factory=dict)
    record: bool = True


def compare_cells(job: CompareJob, run: GridRun):
    """The worker's generator: :func:`~core.compare.engine.run_grid` with every cell's frames recorded."""
    return (yield from run_grid(job.plan, run, load=job.load, device=job.device, schedules=job.schedules,
                                record=job.record))


class ModelLoader:
    """``load(spec, device)`` for the tab: ``photo`` is the oracle over the window's photo (its file, else its
    pixels); a loaded model is kept for the next run (keyed by SPEC and device)."""

    def __init__(self, load: Callable, photo_path=None, photo: np.ndarray | None = None, cache: dict | None = None):
        self._load, self.photo_path, self.photo = load, photo_path, photo
        self.cache = cache if cache is not None else {}

    def __call__(self, spec: str, device="cpu"):
        from core.model_spec import PHOTO, cache_key
        if spec == PHOTO:
            if self.photo_path is not None:
                spec = f"oracle:{self.photo_path}"
            elif self.photo is not None:
                key = cache_key(PHOTO, str(device), pixels=self.photo)
                if key not in self.cache:
                    from core.models.load import oracle_for_array
                    self.cache[key] = oracle_for_array(self.photo.copy(), device)
                return self.cache[key]
            else:
                raise ValueError("open a photo first (File ▸ Open image)")
        key = cache_key(spec, str(device))
        if key not in self.cache:
            self.cache[key] = self._load(spec, device=device)
        return self.cache[key]


def plot_series(run: GridRun, score: str, page: int = 0) -> tuple[list[str], list[tuple[str, np.ndarray]]]:
    """(x tick labels = the columns' values, [(row label, y values with NaN where a cell has no such score)])."""
    plan = run.plan
    _, R, C = plan.shape
    ticks = list(plan.cols.labels) if plan.cols else [""]
    lines = []
    for r in range(R):
        ys = []
        for c in range(C):
            res = run.results[plan.cell(page, r, c).index]
            v = res.scores.get(score) if res is not None and res.status == "done" else None
            ys.append(float(v) if isinstance(v, (int, float)) and math.isfinite(v) else math.nan)
        lines.append((plan.rows.labels[r] if plan.rows else "", np.array(ys)))
    return ticks, lines


def numeric_x(run: GridRun) -> np.ndarray:
    """The columns' values as x positions when they are numbers (steps, w, η), else 0, 1, 2, …."""
    cols = run.plan.cols
    if cols is not None and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in cols.values):
        return np.array(cols.values, dtype=np.float64)
    return np.arange(len(cols.values) if cols else 1, dtype=np.float64)


def generate_settings(res: CellResult, window_schedule=None) -> tuple[dict, list[str]]:
    """What the Generate tab's widgets take to run this cell (model SPEC, sampler, steps, η, seed, batch, class
    choice, guidance), and the settings of the cell it has no control for (so the copy says what differs)."""
    from core.jobs.generate import EACH_CLASS
    r = res.ran
    cls = r["class"]
    choice = EACH_CLASS if isinstance(cls, list) else cls
    out = {"model": r["model"], "sampler": r["sampler"], "steps": r["steps"], "eta": r["eta"] or 0.0,
           "seed": r["seed"], "n": r["n"], "class": choice, "guidance": r["guidance"] if r["guidance"] else 1.0}
    missing = []
    if r["spacing"] != DEFAULT_SPACING[r["sampler"]]:
        missing.append(f"spacing {r['spacing']}")
    if r["variance"] not in (None, "fixed_small"):
        missing.append(f"variance {r['variance']}")
    if r["schedule"] not in ("own", "window"):
        missing.append(f"schedule {r['schedule']}")
    elif r["schedule"] == "own" and r["model"].startswith(("oracle:", "photo")) and window_schedule is not None:
        from core.schedule import default_schedule
        if window_schedule != default_schedule():
            missing.append("the oracle's default schedule (Generate uses the window's)")
    return out, missing
