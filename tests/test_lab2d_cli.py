"""``ddpm lab2d``: the table and JSON lines, the three outputs, the learned denoiser, one-line refusals."""
import json

import numpy as np
import pytest
from PIL import Image

from core.cli import main
from core.lab2d import data as pts

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_json_and_npz(tmp_path, capsys):
    out = tmp_path / "o.npz"
    assert main(["lab2d", "--data", "8gaussians", "--points", "300", "--n", "200", "--steps", "3,6",
                 "--sampler", "ddim,dpmpp2m", "--json", "-o", str(out)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["sampler"], r["steps"]) for r in rows] == [("ddim", 3), ("ddim", 6), ("dpmpp2m", 3), ("dpmpp2m", 6)]
    assert all(r["denoiser"] == "exact" and r["energy_distance"] > 0 for r in rows)
    z = np.load(out)
    assert z["data"].shape == (300, 2) and z["particles"].shape == (200, 2)
    assert np.array_equal(z["data"], pts.preset("8gaussians", 300, 0))


def test_png_gif_and_a_file(tmp_path, capsys):
    src = pts.save_points(tmp_path / "p.csv", pts.preset("moons", 200, 1))
    png, gif = tmp_path / "s.png", tmp_path / "a.gif"
    assert main(["lab2d", "--data", str(src), "--n", "100", "--steps", "4", "--sampler", "ddpm", "-o", str(png)]) == 0
    assert Image.open(png).size == (480, 480)
    assert main(["lab2d", "--data", str(src), "--n", "100", "--steps", "4", "--sampler", "ddim", "-o", str(gif)]) == 0
    assert Image.open(gif).n_frames >= 5
    text = capsys.readouterr().out
    assert "DDPM" in text and "DDIM" in text


def test_learned(capsys):
    assert main(["lab2d", "--data", "moons", "--points", "200", "--n", "100", "--denoiser", "learned",
                 "--train-steps", "30", "--steps", "5", "--sampler", "ddim", "--json"]) == 0
    row = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert row["denoiser"] == "learned" and np.isfinite(row["energy_distance"])


@pytest.mark.parametrize("argv,words", [
    (["--data", "spiral"], "not a preset"),
    (["--sampler", "euler"], "unknown sampler"),
    (["--sampler", "dpmpp2m", "--steps", "1000"], "1…999"),
    (["--n", "10001"], "1…10000"),
    (["-o", "x.jpg"], ".gif, .png or .npz"),
    (["--data", "missing.csv"], "no such file"),
])
def test_refusals(argv, words, capsys):
    assert main(["lab2d", *argv]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1
