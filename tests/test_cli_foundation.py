"""`ddpm schedule` and `ddpm noise`: outputs, exit codes, one-line errors, no partial files."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from core.cli import main
from core.images import sample_path

CAT = str(sample_path("chelsea"))


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "core.cli", *args], capture_output=True, text=True, timeout=120)


def test_schedule_json(capsys):
    assert main(["schedule", "linear", "--T", "100", "--beta-end", "0.05", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["T"] == 100 and len(d["betas"]) == 100 and len(d["alphas_cumprod"]) == 100
    np.testing.assert_allclose(d["alphas_cumprod"], np.cumprod(1 - np.linspace(1e-4, 0.05, 100)), rtol=1e-12)


def test_schedule_load_round_trip(tmp_path, capsys):
    from core.schedule import NoiseSchedule
    NoiseSchedule.preset("cosine", T=50).save(tmp_path / "c.json")
    assert main(["schedule", "--load", str(tmp_path / "c.json"), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["betas"] == NoiseSchedule.preset("cosine", T=50).betas.tolist()


def test_noise_reproduces_the_notes_strip(tmp_path):
    out = tmp_path / "strip.png"
    assert main(["noise", CAT, "-o", str(out), "--npz", "--seed", "4"]) == 0
    z = np.load(tmp_path / "strip.npz")
    assert z["x0"].shape == (300, 451, 3) and z["x0"].dtype == np.float32
    assert z["xt"].shape == (5, 300, 451, 3) and z["xt"].dtype == np.float32
    assert z["t"].tolist() == [19, 39, 59, 79, 99]
    ab = np.cumprod(1 - np.linspace(1e-4, 0.05, 100))
    eps = torch.randn((300, 451, 3), generator=torch.Generator().manual_seed(4)).numpy()
    for k, t in enumerate(z["t"]):
        np.testing.assert_allclose(z["xt"][k], np.sqrt(ab[t]) * z["x0"] + np.sqrt(1 - ab[t]) * eps, atol=1e-5)
    assert np.abs(z["xt"]).max() > 1.5  # unclipped
    img = Image.open(out)
    assert img.size == (6 * 451 + 5 * 4, 300)


def test_noise_with_preset_and_timesteps(tmp_path):
    assert main(["noise", CAT, "--schedule", "cosine", "--T", "50", "--t", "0,49", "-o", str(tmp_path / "s.png"),
                 "--npz"]) == 0
    assert np.load(tmp_path / "s.npz")["t"].tolist() == [0, 49]


@pytest.mark.parametrize("args,msg", [
    (["noise", "missing.png", "-o", "{d}/o.png"], "no such file"),
    (["noise", CAT, "--t", "5,500", "-o", "{d}/o.png"], "outside 0…99"),
    (["noise", CAT, "--t", "a,b", "-o", "{d}/o.png"], "comma-separated integers"),
    (["noise", CAT, "--schedule", "bogus", "-o", "{d}/o.png"], "unknown schedule preset"),
    (["noise", CAT, "--schedule", "{d}/nope.json", "-o", "{d}/o.png"], "no such file"),
    (["noise", CAT, "-o", "{d}/missing-folder/o.png"], "does not exist"),
    (["schedule", "linear", "--T", "1"], "--T: must be an integer in 2…"),
    (["schedule", "linear", "--beta-start", "2"], "--beta-start: must be a finite number in (0, 1)"),
    (["schedule", "--load", "{d}/garbage.json"], "not valid JSON"),
    (["schedule", "linear", "--T", "x"], "--T: must be an integer"),
    (["bogus-command"], "invalid choice"),
])
def test_bad_input_exits_2_with_one_line_and_no_output(tmp_path, args, msg):
    (tmp_path / "garbage.json").write_text("{ truncated")
    r = run_cli(*[a.replace("{d}", str(tmp_path)) for a in args])
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and msg in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["garbage.json"]
