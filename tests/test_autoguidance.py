"""Autoguidance (core.models.autoguidance, ``ddpm autoguide``, ``--autoguidance W``): ε̃ = ε_0 + w·(ε_1 − ε_0),
checked against the two networks called by hand; the folder layout, its faults, and every front end honouring it."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.cli import main
from core.models.autoguidance import AutoguidedDenoiser, set_weight
from core.models.checkpoint import ModelLoadError, load_checkpoint, save_checkpoint
from core.models.load import load_model
from core.samplers import sample
from core.schedule import NoiseSchedule
from conftest import perturbed_unet, save_guided_pair

_net = perturbed_unet


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return save_guided_pair(tmp_path_factory.mktemp("ag"), weight=2)


def test_guided_output_is_the_combination_of_the_two_networks(folders):
    model, guide, out = folders
    den = load_model(str(out))
    assert isinstance(den, AutoguidedDenoiser) and den.weight == 2.0
    strong, weak = load_checkpoint(model), load_checkpoint(out / "guide")  # the guide as stored (fp16 weights)
    x, t, y = torch.randn(4, 1, 8, 8), torch.tensor([39, 20, 5, 0]), torch.tensor([0, 1, 2, 3])  # 3 = null label
    with torch.no_grad():
        e1, e0 = strong.model_output(x, t, y), weak.model_output(x, t, y)
        got = den.model_output(x, t, y)
    torch.testing.assert_close(got, e0 + 2.0 * (e1 - e0), rtol=0, atol=1e-5)
    assert float((got - e1).abs().max()) > 1e-3  # the guide changes the answer
    # the guide's weights were stored in fp16 and are computed with in fp32, within fp16 rounding of the original
    ref = load_checkpoint(guide)
    assert next(weak.net.parameters()).dtype == torch.float32
    for a, b in zip(weak.net.parameters(), ref.net.parameters()):
        torch.testing.assert_close(a, b.half().float(), rtol=0, atol=0)


def test_interval_guides_only_inside_it(folders):
    model, _, out = folders
    den = load_model(str(out))
    den.t_min, den.t_max = 10, 30
    strong, weak = load_checkpoint(model), load_checkpoint(out / "guide")
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([35, 20, 3])
    with torch.no_grad():
        got, e1, e0 = den.model_output(x, t), strong.model_output(x, t), weak.model_output(x, t)
    # outside: the model alone (to float rounding: beside the guide the model may run on fewer threads)
    torch.testing.assert_close(got[[0, 2]], e1[[0, 2]], rtol=0, atol=1e-6)
    torch.testing.assert_close(got[1], e0[1] + 2 * (e1[1] - e0[1]), rtol=0, atol=1e-5)


def test_weight_one_is_the_model_alone_bit_for_bit(folders):
    model, _, out = folders
    plain = [s.x_t for s in sample(load_model(str(model)), sampler="ddim", steps=8, seed=3, n=2)][-1]
    den = set_weight(load_model(str(out)), 1.0)
    assert den.weight == 1.0
    same = [s.x_t for s in sample(den, sampler="ddim", steps=8, seed=3, n=2)][-1]
    assert torch.equal(plain, same)
    guided = [s.x_t for s in sample(load_model(str(out)), sampler="ddim", steps=8, seed=3, n=2)][-1]
    assert not torch.equal(plain, guided)


def test_set_weight_copies_and_refuses_models_without_a_guide(folders):
    model, _, out = folders
    den = load_model(str(out))
    other = set_weight(den, 3.0)
    assert other.weight == 3.0 and den.weight == 2.0 and other.guide is den.guide
    assert set_weight(den, None) is den
    plain = load_model(str(model))
    assert set_weight(plain, 1.0) is plain
    with pytest.raises(ValueError, match="no autoguidance guide"):
        set_weight(plain, 2.0)


def test_cli_sample_override_matches_the_plain_model(folders, tmp_path):
    model, _, out = folders
    a, b, c = tmp_path / "a.npz", tmp_path / "b.npz", tmp_path / "c.npz"
    common = ["--sampler", "ddim", "--steps", "6", "--n", "2", "--seed", "1"]
    assert main(["sample", "--model", str(model), *common, "-o", str(a)]) == 0
    assert main(["sample", "--model", str(out), "--autoguidance", "1", *common, "-o", str(b)]) == 0
    assert main(["sample", "--model", str(out), *common, "-o", str(c)]) == 0
    xa, xb, xc = (np.load(p)["images"] for p in (a, b, c))
    assert np.array_equal(xa, xb) and not np.array_equal(xa, xc)


def test_cli_refusals_are_one_line(folders, tmp_path, capsys):
    model, guide, out = folders
    assert main(["sample", "--model", str(model), "--autoguidance", "2", "-o", str(tmp_path / "x.png")]) == 2
    assert "no autoguidance guide" in capsys.readouterr().err
    assert main(["autoguide", "--model", str(model), "--guide", str(guide), "--weight", "2", "-o", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["autoguide", "--model", str(model), "--guide", str(guide), "--weight", "11", "-o",
                 str(tmp_path / "n")]) == 2
    capsys.readouterr()
    # a guide of another width is fine (Karras et al. guide with smaller models): same classes, size and T
    other = save_checkpoint(tmp_path / "wide", _net(2, base_channels=16), NoiseSchedule.preset("linear", T=40))
    assert main(["autoguide", "--model", str(model), "--guide", str(other), "--weight", "2", "-o",
                 str(tmp_path / "n2")]) == 0
    assert load_model(str(tmp_path / "n2")).guide.net.config.base_channels == 16
    capsys.readouterr()
    classes = save_checkpoint(tmp_path / "k5", _net(3, num_classes=5), NoiseSchedule.preset("linear", T=40))
    assert main(["autoguide", "--model", str(model), "--guide", str(classes), "--weight", "2", "-o",
                 str(tmp_path / "n3")]) == 2
    err = capsys.readouterr().err
    assert "num classes" in err and err.count("\n") == 1 and not (tmp_path / "n3").exists()
    short = save_checkpoint(tmp_path / "T20", _net(4), NoiseSchedule.preset("linear", T=20))
    assert main(["autoguide", "--model", str(model), "--guide", str(short), "--weight", "2", "-o",
                 str(tmp_path / "n4")]) == 2
    assert "schedule" in capsys.readouterr().err


@pytest.mark.parametrize("entry, message", [
    ({"guide": "../elsewhere", "weight": 2}, "sub-folder"),
    ({"guide": "missing", "weight": 2}, "is missing"),
    ({"guide": "guide", "weight": "strong"}, "must be numbers"),
    ({"guide": "guide", "weight": 2, "t_min": 30, "t_max": 10}, "t_min ≤ t_max"),
    ("guide", "must be an object"),
])
def test_broken_config_entries_are_one_line_errors(folders, tmp_path, entry, message):
    import shutil
    _, _, out = folders
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["autoguidance"] = entry
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match=message) as e:
        load_model(str(bad))
    assert "\n" not in str(e.value)


def test_evaluate_reports_the_weight_used():
    from core.evaluate import evaluate
    den = load_model("builtin:mnist")
    guided = isinstance(den, AutoguidedDenoiser)
    ev = evaluate(den, n=20, steps=2, batch=20, autoguidance=1.0 if guided else None)
    assert ev.autoguidance == (1.0 if guided else None)
    assert ev.to_dict()["autoguidance"] == ev.autoguidance
