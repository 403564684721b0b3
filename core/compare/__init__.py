"""Comparison grids: one model sampled over up to three axes (sampler, steps, η, guidance, class, seed, timestep
spacing, variance, schedule, model) from the same initial noise, cells batched, scored and exported.

- :mod:`core.compare.axes`: ``name=v1,v2`` axes, presets, the plan of cells (row-major: page, row, column);
- :mod:`core.compare.engine`: :func:`run_grid`, the generator that runs it (what is shared and batched);
- :mod:`core.compare.scores`: the classifier's shares, the oracle's nearest-training-image distance;
- :mod:`core.compare.export`: JSON, CSV, the labelled PNG and the npz.

``ddpm compare`` (:mod:`core.cli.cmd_compare`) and the window's Compare tab (:mod:`ddpm_gui.compare_panel`) use them.
"""
from core.compare.axes import AXES, PRESETS, Axis, Cell, GridPlan, parse_axis, plan_grid
from core.compare.engine import CellResult, GridProgress, GridRun, run_grid, sample_args

__all__ = ["AXES", "PRESETS", "Axis", "Cell", "GridPlan", "parse_axis", "plan_grid", "CellResult", "GridProgress",
           "GridRun", "run_grid", "sample_args"]
