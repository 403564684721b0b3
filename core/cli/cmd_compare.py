"""``ddpm compare --model SPEC --axis sampler=ddpm,ddim,dpmpp2m --axis steps=10,20,50 [--axis guidance=1,3,7]
[--seed S] [--n B] [--class C] -o grid.png [--npz] [--json]``: one model over a grid of settings from the same
initial noise (:mod:`core.compare`), written as a labelled PNG; ``--json`` prints one object per cell (a list in
row-major order), ``--npz`` writes ``grid.npz`` beside the PNG."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from core.cli.options import SEED, int_in
from core.cli.progress import Progress


def register(sub) -> None:
    from core.compare.axes import AXES, PRESETS
    axes = "; ".join(f"{k} ({v[1]}{', preset ' + PRESETS[k] if PRESETS[k] else ''})" for k, v in AXES.items())
    p = sub.add_parser("compare", help="sample a grid of settings side by side from the same noise, scored",
                       description="Sample one model over up to three axes of settings (rows, columns, pages), every "
                       "cell from the same initial noise for its seed. Cells that share the model and schedule run "
                       "batched, one model call per step. An axis with one value is a fixed setting. A cell that "
                       f"cannot run is marked in the grid. Axes: {axes}. Ints also as ranges (seed=0..3); an axis "
                       "name alone takes its preset.")
    p.add_argument("--model", default=None, metavar="SPEC", help="the model (default builtin:mnist; a model axis "
                   "overrides it)")
    p.add_argument("--axis", action="append", default=[], metavar="NAME=V1,V2,…", help="an axis and its values "
                   "(repeat; the first with several values gives the rows, the second the columns, the third pages)")
    p.add_argument("--seed", type=SEED, default=None, help="noise seed of every cell without a seed axis (default 0)")
    p.add_argument("--n", type=int_in(1, 256), default=4, help="images per cell (default 4)")
    p.add_argument("--class", dest="class_", metavar="C", help="class label (or 'each': image i gets class i mod K); "
                   "default: each class in turn when guidance is on the grid, else none")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda or mps")
    p.add_argument("--no-batch", action="store_true", help="one model call per cell and step (exactly ddpm sample's "
                   "calls; slower)")
    p.add_argument("--scale", type=int_in(1, 16), default=2, help="enlarge the cells' images (default 2)")
    p.add_argument("-o", "--output", required=True, help="grid.png (labelled)")
    p.add_argument("--npz", action="store_true", help="also write grid.npz beside it: images (cells × N × C × H × W "
                   "float32 in [−1, 1], NaN for a cell without images) and valid (cells)")
    p.add_argument("--json", action="store_true", help="print one JSON object per cell (settings, scores), a list in "
                   "row-major order")
    p.add_argument("--csv", metavar="FILE", help="also write the cells' settings and scores as CSV")
    p.set_defaults(func=run)


def _class(text: str | None):
    if text is None:
        return None
    from core.compare.axes import parse_value
    vals = parse_value("class", text)
    if len(vals) != 1:
        raise ValueError("--class takes one class (or 'each'); put several on a class axis")
    return vals[0]


def run(args) -> int:
    from core.compare import GridRun, plan_grid, run_grid
    from core.compare.engine import CellResult, GridProgress
    from core.compare.export import json_records, write_csv, write_npz, write_png
    from core.device import pick_device
    from core.outputs import check_output_file, refuse_overwriting_inputs, spec_paths

    out = Path(args.output)
    if out.suffix.lower() != ".png":
        raise ValueError(f"-o {out}: the grid is written as .png")
    outputs = [out] + ([out.with_suffix(".npz")] if args.npz else []) + ([Path(args.csv)] if args.csv else [])
    for o in outputs:
        check_output_file(o)
    if not args.axis:
        raise ValueError("give at least one --axis NAME=V1,V2 (e.g. --axis sampler=ddpm,ddim,dpmpp2m)")
    base = {"n": args.n}
    if args.model is not None:
        base["model"] = args.model
    if args.seed is not None:
        base["seed"] = args.seed
    if args.class_ is not None:
        base["class"] = _class(args.class_)
    plan = plan_grid(args.axis, base)
    inputs = [p for c in plan.cells for p in spec_paths(c.settings["model"])]
    inputs += [Path(c.settings["schedule"]) for c in plan.cells if str(c.settings["schedule"]).endswith(".json")]
    refuse_overwriting_inputs(outputs, sorted(set(inputs)))
    device = pick_device(args.device)
    grid = GridRun(plan)
    start = time.perf_counter()
    label = f"{len(plan.cells)} cells on {device.type}"
    with Progress(0, label, unit="step") as bar:
        for ev in run_grid(plan, grid, device=device, batch=not args.no_batch):
            if isinstance(ev, GridProgress) and ev.ticks:
                bar.total = ev.ticks
                bar.update(ev.tick, cells=f"{ev.done}/{ev.cells}")
            elif isinstance(ev, CellResult) and ev.status != "done":
                print(f"ddpm compare: cell {ev.cell.index + 1} not run: {ev.reason}", file=sys.stderr)
    seconds = time.perf_counter() - start
    write_png(out, grid, scale=args.scale)
    if args.npz:
        write_npz(out.with_suffix(".npz"), grid)
    if args.csv:
        write_csv(args.csv, grid)
    done = sum(r is not None and r.status == "done" for r in grid.results)
    line = (f"wrote {', '.join(map(str, outputs))}: {done} of {len(plan.cells)} cells in {seconds:.1f} s "
            f"({grid.calls} model calls)")
    if args.json:
        print(json_records(grid))
        print(line, file=sys.stderr)
    else:
        print(line)
    return 0
