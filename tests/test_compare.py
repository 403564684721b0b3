"""Comparison grids (issue 19): the grid equals ``ddpm sample`` run per cell with the same settings, pixel for
pixel; cells sharing a seed start from identical x_T; an invalid cell is marked and the rest run; Cancel keeps
finished cells; CSV/JSON/npz carry every cell. Tiny: the oracle over the built-in digits and the built-in model,
a few steps, two images per cell."""
import csv
import io
import json

import numpy as np
import pytest
import torch

from core.cli import main
from core.compare import GridRun, parse_axis, plan_grid, run_grid, sample_args
from core.compare.engine import CellResult, GridProgress
from core.compare.export import cell_records, csv_text, images_array, write_json
from core.images import batch_grid, load_image, to_uint8
from core.models.load import load_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ORACLE = "oracle:builtin:mnist"


def _run(plan, **kw):
    run = GridRun(plan)
    for _ in run_grid(plan, run, **kw):
        pass
    return run


def test_axes_parse_presets_ranges_and_errors():
    assert parse_axis("sampler=ddpm,ddim").values == ("ddpm", "ddim")
    assert parse_axis("seed=0..3").values == (0, 1, 2, 3)
    assert parse_axis("w=1,3").name == "guidance"
    assert parse_axis("steps").values == (10, 20, 50, 100)          # a name alone: its preset
    assert parse_axis("class=each,3").values == ("each", 3)
    assert parse_axis("schedule=own,cosine").values == (None, "cosine")
    for bad, words in (("colour=1,2", "unknown axis"), ("sampler=euler", "choose one of"), ("eta=2", "[0, 1]"),
                       ("steps=0", "≥ 1"), ("steps=a", "not a number"), ("seed=1,1", "repeats")):
        with pytest.raises(ValueError, match=words.replace("[", r"\[").replace("]", r"\]")):
            parse_axis(bad)
    plan = plan_grid(["sampler=ddpm,ddim", "steps=5,10,20", "seed=0,1", "eta=0.5"], {"n": 2})
    assert plan.shape == (2, 2, 3) and len(plan.cells) == 12
    assert plan.rows.name == "sampler" and plan.cols.name == "steps" and plan.pages.name == "seed"
    order = [(c.settings["seed"], c.settings["sampler"], c.settings["steps"]) for c in plan.cells]
    assert order == [(s, a, k) for s in (0, 1) for a in ("ddpm", "ddim") for k in (5, 10, 20)]   # row-major
    assert plan.fixed["eta"] == 0.5 and all(c.settings["eta"] == 0.5 for c in plan.cells)
    assert plan.cell(1, 0, 2) is plan.cells[8]
    with pytest.raises(ValueError, match="at most three"):
        plan_grid(["sampler=ddpm,ddim", "steps=5,10", "seed=0,1", "eta=0,1"])
    with pytest.raises(ValueError, match="twice"):
        plan_grid(["seed=0,1", "seed=2,3"])


def _sample_png(tmp_path, res, name):
    out = tmp_path / f"{name}.png"
    assert main(["sample", *sample_args(res), "--device", "cpu", "-o", str(out)]) == 0
    npz = tmp_path / f"{name}.npz"
    assert main(["sample", *sample_args(res), "--device", "cpu", "-o", str(npz)]) == 0
    return load_image(out), np.load(npz)["images"]


def test_grid_equals_ddpm_sample_per_cell_pixel_for_pixel(tmp_path):
    """Batched (all 8 cells in one model call per step) and still ``ddpm sample``'s images, cell by cell."""
    plan = plan_grid(["sampler=ddpm,ddim", "guidance=1,3", "seed=0,1", "steps=4"], {"n": 2, "model": ORACLE})
    run = _run(plan)
    assert run.calls == 4       # one shared call per step for the whole grid
    for res in run.results:
        assert res.status == "done"
        png, arr = _sample_png(tmp_path, res, f"cell{res.cell.index}")
        assert np.array_equal(to_uint8(png), batch_grid(res.images)), sample_args(res)
        assert np.array_equal(arr, res.images)


def test_trained_model_unbatched_is_bit_for_bit_and_batched_within_rounding(tmp_path):
    plan = plan_grid(["sampler=ddpm,dpmpp2m", "steps=3,5"], {"n": 2, "model": "builtin:mnist", "seed": 7})
    exact = _run(plan, batch=False)
    batched = _run(plan)
    assert exact.calls == 16 and batched.calls == 5    # lock-step: cells with different timesteps share calls
    for a, b in zip(exact.results, batched.results):
        png, arr = _sample_png(tmp_path, a, f"cell{a.cell.index}")
        assert np.array_equal(arr, a.images) and np.array_equal(to_uint8(png), batch_grid(a.images))
        # a bigger batch may round the network's output differently (~1e-6): the same images to within that
        assert np.abs(a.images - b.images).max() < 1e-3
        assert (to_uint8(a.images) != to_uint8(b.images)).mean() < 1e-3


class SpyOracle:
    """The oracle, remembering the rows of every model call."""

    def __init__(self, real):
        self.real, self.calls = real, []

    def __getattr__(self, name):
        return getattr(self.real, name)

    def model_output(self, x_t, t, class_labels=None, schedule=None):
        self.calls.append((x_t.clone(), t.clone()))
        return self.real.model_output(x_t, t, class_labels, schedule=schedule)


@pytest.mark.parametrize("batch", [True, False])
def test_cells_sharing_a_seed_start_from_identical_x_T(batch):
    spy = SpyOracle(load_model(ORACLE))
    plan = plan_grid(["guidance=1,2,4", "seed=0,1", "sampler=ddpm"], {"n": 2, "model": ORACLE, "steps": 3})
    run = GridRun(plan)
    for _ in run_grid(plan, run, load=lambda spec, device: spy, batch=batch):
        pass
    first = spy.calls[:1] if batch else spy.calls[:len(plan.cells)]
    rows = torch.cat([x for x, _ in first])
    starts, at = {}, 0
    for cell in plan.cells:
        guided = cell.settings["guidance"] != 1.0
        x = rows[at:at + 2]
        if guided:
            assert torch.equal(rows[at + 2:at + 4], x)
        at += 4 if guided else 2
        starts.setdefault(cell.settings["seed"], []).append(x)
    assert at == rows.shape[0]
    for seed, xs in starts.items():
        assert all(torch.equal(x, xs[0]) for x in xs)
        assert torch.equal(xs[0], torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(seed)))
    assert not torch.equal(starts[0][0], starts[1][0])


def test_an_invalid_cell_is_marked_and_the_rest_run(tmp_path, capsys):
    out = tmp_path / "grid.png"
    rc = main(["compare", "--model", "builtin:mnist", "--axis", "steps=2,3,2000", "--axis", "schedule=own,cosine",
               "--n", "1", "--device", "cpu", "-o", str(out), "--json", "--npz"])
    cap = capsys.readouterr()
    assert rc == 0 and out.is_file()
    cells = json.loads(cap.out)
    assert len(cells) == 6 and [c["axes"]["steps"] for c in cells] == [2, 2, 3, 3, 2000, 2000]
    status = {(c["axes"]["steps"], c["axes"]["schedule"]): c for c in cells}
    assert status[(2, None)]["status"] == status[(3, None)]["status"] == "done"
    assert "2000" in status[(2000, None)]["reason"]
    assert "own schedule" in status[(2, "cosine")]["reason"]
    assert "not run" in cap.err and "own schedule" in cap.err
    z = np.load(tmp_path / "grid.npz")
    assert z["images"].shape == (6, 1, 1, 28, 28) and z["images"].dtype == np.float32
    assert list(z["valid"]) == [c["status"] == "done" for c in cells]
    assert np.isnan(z["images"][~z["valid"]]).all() and np.abs(z["images"][z["valid"]]).max() <= 1.0
    assert load_image(out).shape[0] > 3 * 56          # rows of labelled cells


def test_cancel_keeps_finished_cells(tmp_path):
    plan = plan_grid(["steps=2,6,12"], {"n": 1, "model": ORACLE})
    run = GridRun(plan)
    gen = run_grid(plan, run)
    for ev in gen:
        if isinstance(ev, CellResult):
            break
    gen.close()                                        # what the worker does on Cancel
    assert run.results[0].status == "done" and run.results[1:] == [None, None] and not run.finished
    recs = cell_records(run)
    assert [r["status"] for r in recs] == ["done", "not run", "not run"]
    images, valid = images_array(run)
    assert images.shape[0] == 3 and list(valid) == [True, False, False]
    assert json.loads(write_json(tmp_path / "g.json", run).read_text())[0]["status"] == "done"


def test_csv_and_json_carry_every_cell_with_settings_and_scores(tmp_path, capsys):
    rc = main(["compare", "--model", ORACLE, "--axis", "sampler=ddim,dpmpp2m", "--axis", "guidance=1,3",
               "--axis", "steps=3", "--seed", "5", "--n", "2", "--device", "cpu", "-o", str(tmp_path / "g.png"),
               "--csv", str(tmp_path / "g.csv"), "--json"])
    assert rc == 0
    cells = json.loads(capsys.readouterr().out)
    assert [(c["row"], c["col"]) for c in cells] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    for c in cells:
        s, sc = c["settings"], c["scores"]
        assert s["seed"] == 5 and s["steps"] == 3 and s["class"] == [0, 1] and s["n"] == 2
        assert sc["model_calls"] == 3 and sc["seconds"] >= 0
        d = sc["nearest_train_distances"]      # each sample's distance to its nearest training image
        assert len(d) == 2 and sc["nearest_train_distance"] == pytest.approx(np.mean(d)) and min(d) >= 0
        assert sc["confident_share"] >= 0.5 and sc["on_label_share"] >= 0.5
        assert c["ddpm_sample"].startswith("ddpm sample --model oracle:builtin:mnist --sampler ")
    rows = list(csv.DictReader(io.StringIO((tmp_path / "g.csv").read_text())))
    assert len(rows) == 4 and [r["axis_guidance"] for r in rows] == ["1.0", "3.0", "1.0", "3.0"]
    assert [float(r["nearest_train_distance"]) for r in rows] == [c["scores"]["nearest_train_distance"] for c in cells]
    assert all(r["status"] == "done" for r in rows)


def test_progress_events_and_bad_command_lines(capsys):
    plan = plan_grid(["steps=2,3"], {"n": 1, "model": ORACLE})
    events = list(run_grid(plan, score=False))
    ticks = [e.tick for e in events if isinstance(e, GridProgress) and e.ticks]
    assert ticks == [1, 2, 3] and sum(isinstance(e, CellResult) for e in events) == 2
    assert csv_text(GridRun(plan)).count("\n") == 3    # header + a "not run" line per cell
    for argv, words in ((["--axis", "colour=1"], "unknown axis"), (["--axis", "seed=0,1", "--axis", "steps=1,2",
                         "--axis", "eta=0,1", "--axis", "w=1,2"], "at most three"), ([], "at least one --axis")):
        assert main(["compare", *argv, "-o", "/tmp/never.png"]) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1


class FailsOnClass3(SpyOracle):
    def model_output(self, x_t, t, class_labels=None, schedule=None):
        if class_labels is not None and (class_labels == 3).any():
            raise ValueError("no training images of class 3")
        return super().model_output(x_t, t, class_labels, schedule=schedule)


def test_a_cell_that_fails_while_running_is_marked_and_the_batch_goes_on():
    bad = FailsOnClass3(load_model(ORACLE))
    plan = plan_grid(["class=1,3", "seed=0,1"], {"n": 1, "model": ORACLE, "steps": 3})
    run = _run(plan, load=lambda spec, device: bad)
    assert [r.status for r in run.results] == ["done", "done", "invalid", "invalid"]
    assert "failed at step 1: no training images of class 3" in run.results[2].reason
    alone = _run(plan_grid(["seed=0,1"], {"n": 1, "model": ORACLE, "steps": 3, "class": 1}))
    assert all(np.array_equal(a.images, b.images) for a, b in zip(run.results[:2], alone.results))
