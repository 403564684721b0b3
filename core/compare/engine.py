"""Running a comparison grid: every cell is one :func:`core.samplers.sample` chain, and the chains advance in
lock-step so that all cells that share a model, a schedule and the kind of condition make one batched model call
per step.

How the batching keeps each cell exactly the chain ``ddpm sample`` runs: each cell's chain *is* ``sample()``,
called with the cell's settings on a :class:`LaneModel` — a stand-in for the model that answers ``model_output``
with the rows a shared call already computed for that cell. So the sampler's own code does every step (its
guidance, x̂_0, clipping, noise draws, solver), nothing of it is re-implemented here; the stand-in checks that the
sampler asks for exactly the inputs (x_t, t and labels) the shared call was made with. The network sees one row per
image and one timestep per row, so cells with different timesteps (a steps or sampler axis) share calls too;
cells with fewer steps finish first, and each finished cell is yielded at once.

What is shared between cells of one seed: every cell draws from its own CPU generator seeded with its seed, in
``ddpm sample``'s order — first x_T (N×C×H×W), then one N×C×H×W draw at each step that adds noise. So cells with
the same seed and batch size start from the identical x_T, and their stochastic steps receive the same sequence
z_1, z_2, …: draw k goes to each cell's k-th noisy step (the same timestep only when the cells visit the same
timesteps). DDPM adds noise at every step but the last (t = 0), DDIM at every step when η > 0, DDIM η = 0 and
DPM-Solver++ at none. A different batch size N gives a different x_T.

A batched call computes the same function on a larger batch; the network's kernels may round differently for a
different batch size (~1e-6 in the output), so ``batch=False`` (one call per cell and step, the exact calls of
``ddpm sample``) reproduces ``ddpm sample`` bit for bit.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch

from core.compare.axes import EACH, Cell, GridPlan
from core.compare.scores import Scorer
from core.device import autocast, pick_device
from core.images import to_uint8
from core.jobs.generate import RECORD_BUDGET_BYTES, Recording, RunFrame
from core.messages import one_line
from core.samplers import DEFAULT_SPACING, SAMPLER_NAMES, SamplerError, plan_timesteps, sample
from core.samplers.guidance import labels_each_class
from core.schedule import NoiseSchedule, default_schedule

MAX_ROWS = 1024     # rows of one model call at most (a bigger tick is split)


@dataclass
class CellResult:
    """A finished cell: ``status`` done | invalid (with the one-line ``reason``); ``ran``: what really ran (the
    settings after the model's defaults); ``notes``: settings that had no effect; ``images`` N×C×H×W float32 in
    [−1, 1] (``ddpm sample``'s npz); ``scores``; ``recording``: its frames (when recorded)."""

    cell: Cell
    status: str
    reason: str | None = None
    ran: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    scores: dict = field(default_factory=dict)
    images: np.ndarray | None = None
    recording: Recording | None = None
    labels: list | None = None


@dataclass
class GridProgress:
    """After tick ``tick`` of ``ticks`` (the longest chain's steps): cells finished, model calls and seconds."""

    tick: int
    ticks: int
    done: int
    cells: int
    calls: int
    seconds: float


@dataclass
class GridRun:
    """The results of a grid as far as it got (written by the worker; a cancelled run keeps finished cells)."""

    plan: GridPlan
    results: list = field(default_factory=list)
    calls: int = 0
    seconds: float = 0.0
    finished: bool = False

    def __post_init__(self):
        if not self.results:
            self.results = [None] * len(self.plan.cells)


class LaneModel:
    """One cell's view of the model: every attribute is the real model's, but ``model_output`` returns the rows
    the grid's shared call computed for this cell (after checking that the sampler asks for exactly those)."""

    def __init__(self, real):
        self._real = real
        self._pending = None

    def __getattr__(self, name):
        return getattr(self._real, name)

    def give(self, x, t, labels, out) -> None:
        self._pending = (x, t, labels, out)

    def model_output(self, x_t, t, class_labels=None, schedule=None):
        if self._pending is None:
            raise RuntimeError("compare: the sampler asked for a model call the grid did not make")
        x, tt, labels, out = self._pending
        self._pending = None
        same_labels = (labels is None) == (class_labels is None) and (labels is None or torch.equal(labels, class_labels))
        if not (torch.equal(x, x_t) and torch.equal(tt, t.reshape(-1)) and same_labels):
            raise RuntimeError("compare: the sampler's model input differs from the batched call's")
        return out


@dataclass
class _Lane:
    cell: Cell
    model: LaneModel
    steps: Iterator
    schedule: NoiseSchedule
    timesteps: np.ndarray
    x: torch.Tensor
    y: torch.Tensor | None     # the labels of the call's rows (doubled with −1 when guided), or None
    guided: bool
    key: tuple
    ran: dict
    notes: list
    labels: list | None
    recording: Recording | None
    i: int = 0
    seconds: float = 0.0

    def rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([self.x, self.x]) if self.guided else self.x
        return x, torch.full((x.shape[0],), int(self.timesteps[self.i]), dtype=torch.long, device=x.device)


def run_grid(plan: GridPlan, run: GridRun | None = None, load: Callable | None = None, device="cpu",
             schedules: dict | None = None, record: bool = False, batch: bool = True, max_rows: int = MAX_ROWS,
             score: bool = True) -> Iterator[CellResult | GridProgress]:
    """Run every cell of ``plan``; yields a :class:`CellResult` as each cell is marked invalid or finishes, and a
    :class:`GridProgress` after every step of the lock-step (a cancel point: closing the generator stops at once,
    ``run.results`` keeps the finished cells). ``load(spec, device=…)`` loads a model SPEC (default
    :func:`core.models.load.load_model`); ``schedules`` names extra schedules a cell may ask for ("window");
    ``record`` keeps every cell's frames (Generate's :class:`~core.jobs.generate.Recording`); ``batch=False`` makes
    one call per cell and step. Returns the :class:`GridRun`."""
    if load is None:
        from core.models.load import load_model as load
    run = run if run is not None else GridRun(plan)
    dev = pick_device(device)
    scorer = Scorer() if score else None
    models: dict = {}
    cache: dict = {}      # schedules by SPEC: cells asking for the same one share it (and their calls)
    lanes: list[_Lane] = []
    budget = RECORD_BUDGET_BYTES // max(1, len(plan.cells))
    # with guidance anywhere in the grid and no class chosen, every cell of a class-conditional model gets each
    # class in turn (so w = 1 is plain conditional sampling of the same classes, not an unconditional run)
    each = any(float(c.settings["guidance"]) != 1.0 for c in plan.cells)
    for cell in plan.cells:
        spec = cell.settings["model"]
        if spec not in models:
            yield GridProgress(0, 0, 0, len(plan.cells), 0, 0.0)   # a cancel point before each load
            try:
                models[spec] = load(spec, device=str(dev))
            except Exception as e:  # noqa: BLE001 - the model's cells say why
                models[spec] = f"cannot load {spec}: {one_line(e)}"
        lane = _setup(cell, models[spec], dev, schedules or {}, cache, record, budget, batch, each)
        if isinstance(lane, CellResult):
            run.results[cell.index] = lane
            yield lane
        else:
            lanes.append(lane)
    ticks = max((len(l.timesteps) for l in lanes), default=0)
    start = time.perf_counter()
    active = lanes
    for tick in range(ticks):
        groups: dict = {}
        for lane in active:
            groups.setdefault(lane.key, []).append(lane)
        failed: dict = {}
        for group in groups.values():
            for chunk in _chunks(group, max_rows):
                run.calls += 1
                try:
                    _shared_call(chunk, dev)
                except Exception as e:  # noqa: BLE001 - e.g. an oracle without images of a class: its cells say so
                    if len(chunk) == 1:
                        failed[id(chunk[0])] = one_line(e)
                        continue
                    for lane in chunk:    # find the cells that fail: each alone
                        run.calls += 1
                        try:
                            _shared_call([lane], dev)
                        except Exception as e1:  # noqa: BLE001
                            failed[id(lane)] = one_line(e1)
        still = []
        for lane in active:
            t0 = time.perf_counter()
            try:
                if id(lane) in failed:
                    raise RuntimeError(failed[id(lane)])
                step = next(lane.steps)
            except Exception as e:  # noqa: BLE001 - the cell failed at this step; the others go on
                lane.steps.close()
                res = CellResult(lane.cell, "invalid", f"failed at step {lane.i + 1}: {one_line(e)}", lane.ran,
                                 lane.notes)
                run.results[lane.cell.index] = res
                yield res
                continue
            lane.x = step.x_t
            lane.i += 1
            if lane.recording is not None:
                lane.recording.add(RunFrame(step.index, step.total, step.t, to_uint8(step.x_t.float().cpu()),
                                            to_uint8(step.x0_pred.float().cpu()), time.perf_counter() - start))
            lane.seconds += time.perf_counter() - t0
            if step.index < step.total:
                still.append(lane)
                continue
            lane.steps.close()
            res = _finish(lane, step, scorer, time.perf_counter() - start)
            run.results[lane.cell.index] = res
            yield res
        active = still
        run.seconds = time.perf_counter() - start
        yield GridProgress(tick + 1, ticks, sum(r is not None for r in run.results), len(plan.cells), run.calls,
                           run.seconds)
    run.finished = True
    return run


def _chunks(group: list, max_rows: int):
    chunk, rows = [], 0
    for lane in group:
        r = lane.x.shape[0] * (2 if lane.guided else 1)
        if chunk and rows + r > max_rows:
            yield chunk
            chunk, rows = [], 0
        chunk.append(lane)
        rows += r
    if chunk:
        yield chunk


def _shared_call(chunk: list, dev) -> None:
    """One model call on the rows of every lane of ``chunk``; each lane's share of the output (and of the time)."""
    t0 = time.perf_counter()
    inputs = [lane.rows() for lane in chunk]
    x = torch.cat([r[0] for r in inputs]) if len(chunk) > 1 else inputs[0][0]
    t = torch.cat([r[1] for r in inputs]) if len(chunk) > 1 else inputs[0][1]
    ys = [lane.y for lane in chunk]
    y = None if ys[0] is None else (torch.cat(ys) if len(chunk) > 1 else ys[0])
    real = chunk[0].model._real
    with torch.inference_mode(), autocast(dev, "fp32"):
        out = real.model_output(x, t, y, schedule=chunk[0].schedule)
    at = 0
    for lane, (lx, lt) in zip(chunk, inputs):
        lane.model.give(lx, lt, lane.y, out[at:at + lx.shape[0]])
        at += lx.shape[0]
    share = (time.perf_counter() - t0) / x.shape[0]
    for lane, (lx, _) in zip(chunk, inputs):
        lane.seconds += share * lx.shape[0]


def _schedule(name, den, schedules: dict, cache: dict) -> NoiseSchedule:
    own = getattr(den, "schedule", None)
    if name is None:
        if own is not None:
            return own
        key = ("default",)
        make = default_schedule
    elif name in schedules:
        return schedules[name]
    elif name == "window":
        raise ValueError("the window's schedule exists only in the window")
    elif name.endswith(".json") or "/" in name:
        key, make = ("file", name), (lambda: NoiseSchedule.load(name))
    else:
        T = own.T if own is not None else 1000
        key, make = ("preset", name, T), (lambda: NoiseSchedule.preset(name, T=T))
    if key not in cache:
        cache[key] = make()
    return cache[key]


def _setup(cell: Cell, den, dev, schedules: dict, cache: dict, record: bool, budget: int, batch: bool,
           each: bool = False):
    """The cell's chain (a :class:`_Lane`), or its :class:`CellResult` marked invalid with the reason."""
    s = cell.settings

    def invalid(reason: str) -> CellResult:
        return CellResult(cell, "invalid", reason)

    if isinstance(den, str):
        return invalid(den)
    try:
        sched = _schedule(s["schedule"], den, schedules, cache)
    except Exception as e:  # noqa: BLE001
        return invalid(f"schedule {s['schedule']}: {one_line(e)}")
    own = getattr(den, "schedule", None)
    if own is not None and sched != own:
        return invalid(f"{den.name} was trained with its own schedule ({own.name}, T = {own.T}); a trained network's "
                       f"ε̂ means nothing on another ({sched.name}, T = {sched.T})")
    n, sampler, w = int(s["n"]), s["sampler"], float(s["guidance"])
    k = int(getattr(den, "num_classes", 0) or 0)
    notes, choice = [], s["class"]
    if choice is None and (each or w != 1.0) and k > 0:
        choice = EACH
        notes.append("class: each class in turn (guidance steers towards a class)")
    if choice == EACH:
        if k <= 0:
            return invalid(f"{den.name} is unconditional: it has no classes")
        labels = labels_each_class(n, k)
    else:
        labels = choice
    if sampler != "ddim" and float(s["eta"]) > 0:
        notes.append(f"η = {s['eta']:g} applies to DDIM only: {SAMPLER_NAMES[sampler]} ignores it")
    if sampler != "ddpm" and s["variance"] is not None:
        notes.append(f"variance {s['variance']} applies to DDPM only")
    model = LaneModel(den)
    try:
        steps = sample(model, schedule=sched, sampler=sampler, steps=s["steps"], eta=float(s["eta"]),
                       seed=int(s["seed"]), n=n, class_labels=labels, guidance=w, variance_type=s["variance"],
                       timestep_spacing=s["spacing"], device=dev)
        spacing = s["spacing"] or getattr(den, "timestep_spacing", None) or DEFAULT_SPACING[sampler]
        timesteps = plan_timesteps(sched.T, sampler, s["steps"], spacing, getattr(den, "steps_offset", 0))
    except (SamplerError, ValueError) as e:
        return invalid(one_line(e))
    y = None
    if labels is not None:
        y = torch.as_tensor(np.asarray(labels, dtype=np.int64)).reshape(-1)
        y = (y.expand(n) if y.numel() == 1 else y).to(dev).contiguous()
    guided = y is not None and w != 1.0
    call_y = torch.cat([torch.full_like(y, -1), y]) if guided else y
    shape = (n, den.channels, den.resolution, den.resolution)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(int(s["seed"]))).to(dev)
    key = (id(den), id(sched), y is None) + (() if batch else (cell.index,))
    ran = {"model": s["model"], "model_name": den.name, "sampler": sampler, "steps": int(len(timesteps)),
           "eta": float(s["eta"]) if sampler == "ddim" else None,
           "guidance": w if labels is not None else None,
           "class": (list(map(int, y.tolist())) if choice == EACH else labels), "seed": int(s["seed"]), "n": n,
           "spacing": spacing, "variance": (s["variance"] or den.variance_type) if sampler == "ddpm" else None,
           "schedule": s["schedule"] or "own", "schedule_name": sched.name, "T": sched.T,
           "first_t": int(timesteps[0]), "last_t": int(timesteps[-1])}
    rec = None
    if record:
        rec = Recording(budget=budget)
        rec.model_name, rec.schedule_T = den.name, sched.T
    lab_list = None if y is None else [int(v) for v in y.tolist()]
    return _Lane(cell, model, steps, sched, timesteps, x, call_y, guided, key, ran, notes, lab_list, rec)


def _finish(lane: _Lane, step, scorer, wall: float) -> CellResult:
    images = step.x_t.detach().float().cpu().clamp(-1, 1).numpy().astype(np.float32)
    if lane.recording is not None:
        lane.recording.close()
        lane.recording.final = step.x_t.detach().float().cpu().numpy().copy()
    scores = {"model_calls": len(lane.timesteps),
              "network_rows": len(lane.timesteps) * images.shape[0] * (2 if lane.guided else 1),
              "seconds": round(lane.seconds, 4), "finished_after_s": round(wall, 4)}
    if scorer is not None:
        scores.update(scorer(images, lane.model._real, lane.labels))
    return CellResult(lane.cell, "done", None, lane.ran, lane.notes, scores, images, lane.recording, lane.labels)


def sample_args(res: CellResult) -> list[str] | None:
    """The ``ddpm sample`` arguments that run this cell alone (None for an invalid cell or the window's
    schedule, which has no SPEC)."""
    r = res.ran
    if res.status != "done" or r["schedule"] == "window":
        return None
    args = ["--model", r["model"], "--sampler", r["sampler"], "--steps", str(r["steps"]), "--seed", str(r["seed"]),
            "--n", str(r["n"]), "--spacing", r["spacing"]]
    if r["eta"] is not None:
        args += ["--eta", repr(r["eta"])]
    if r["variance"] is not None:
        args += ["--variance", r["variance"]]
    if r["class"] is not None:
        c = r["class"]
        args += ["--class", ",".join(map(str, c)) if isinstance(c, list) else str(c)]
    if r["guidance"] is not None:
        args += ["--guidance", repr(r["guidance"])]
    if r["schedule"] != "own":
        args += ["--schedule", r["schedule"]]
    return args
