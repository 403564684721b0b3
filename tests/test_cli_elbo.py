"""``ddpm elbo``: the JSON contract, the model's own variance as the default, photos and dataset images, refusals."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from core.cli import main
from core.models.checkpoint import save_checkpoint
from core.models.unet import UNet, UNetConfig
from core.schedule import NoiseSchedule


def run_cli(capsys, *argv):
    code = main(["elbo", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def grey_png(tmp_path_factory):
    rng = np.random.default_rng(0)
    u = rng.integers(0, 256, size=(8, 8), dtype=np.uint8)
    u[0, 0], u[0, 1] = 0, 255
    path = tmp_path_factory.mktemp("img") / "digit.png"
    Image.fromarray(np.stack([u] * 3, axis=2)).save(path)  # RGB file, grey content
    return path, u


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A random 28×28 UNet saved as a model folder with a T = 20 schedule and fixed-large variance."""
    torch.manual_seed(0)
    net = UNet(UNetConfig(resolution=28, in_channels=1, base_channels=8, channel_mults=(1, 2),
                          attention_resolutions=(), groups=4))
    folder = tmp_path_factory.mktemp("models") / "tiny"
    save_checkpoint(folder, net, NoiseSchedule.preset("linear", T=20, beta_start=1e-3, beta_end=0.2),
                    variance_type="fixed_large")
    return folder


def test_json_terms_sum_to_the_total_and_the_oracle_of_the_image_has_no_kl(capsys, grey_png):
    path, u = grey_png
    code, out, err = run_cli(capsys, "--model", f"oracle:{path}", "--image", str(path), "--json")
    assert code == 0, err
    assert len(out.strip().splitlines()) == 1
    d = json.loads(out)
    terms = d["terms"]
    assert len(terms) == 1001 and d["T"] == 1000  # an oracle gets Ho et al.'s linear schedule by default
    assert math.fsum(terms) == pytest.approx(d["bits_per_dim"], rel=1e-12)
    assert max(abs(v) for v in terms[1:-1]) < 1e-9
    ab = float(np.prod(1 - NoiseSchedule.preset("linear", T=1000).betas))
    x = u.astype(np.float64) / 127.5 - 1
    prior = np.mean(0.5 * (ab * x**2 + (1 - ab) - 1 - math.log(1 - ab))) / math.log(2)
    assert terms[-1] == pytest.approx(prior, rel=1e-9)
    assert d["variance"] == "small" and d["n_images"] == 1 and d["dims"] == 64


def test_variance_defaults_to_the_models_own_and_can_be_overridden(capsys, tiny_model):
    code, out, err = run_cli(capsys, "--model", str(tiny_model), "--data", "builtin:mnist", "--n", "2", "--json")
    assert code == 0, err
    large = json.loads(out)
    assert large["variance"] == "large" and large["T"] == 20 and len(large["terms"]) == 21
    assert large["n_images"] == 2 and large["dims"] == 784 and "heldout" in large["images"]
    assert all(math.isfinite(v) for v in large["terms"])
    code, out, _ = run_cli(capsys, "--model", str(tiny_model), "--data", "builtin:mnist", "--n", "2", "--json",
                           "--variance", "small")
    small = json.loads(out)
    assert small["variance"] == "small"
    assert small["terms"][0] == pytest.approx(large["terms"][0])  # same decoder variance (β̃ at index 1) …
    assert small["terms"][-1] == pytest.approx(large["terms"][-1])  # … and the same prior; only the KLs move
    assert small["terms"][1:-1] != pytest.approx(large["terms"][1:-1])


def test_a_colour_photo_is_resized_and_made_grey_for_a_grey_model(capsys, tiny_model):
    from core.images import sample_path
    code, out, err = run_cli(capsys, "--model", str(tiny_model), "--image", str(sample_path("chelsea")), "--json",
                             "--seed", "3")
    assert code == 0, err
    d = json.loads(out)
    assert d["dims"] == 784 and d["seed"] == 3 and math.isfinite(d["bits_per_dim"])


def test_summary_names_the_parts(capsys, tiny_model):
    code, out, err = run_cli(capsys, "--model", str(tiny_model), "--data", "builtin:mnist", "--n", "1")
    assert code == 0, err
    for word in ("prior", "KL", "decoder", "total", "bits/dim", "variance large"):
        assert word in out
    assert "elbo [" in err  # progress on stderr, never mixed into stdout


@pytest.mark.parametrize("argv,message", [
    (["--image", "/no/such.png"], "no such file"),
    (["--data", "builtin:mnist", "--n", "0"], "argument --n: must be an integer in 1…100000, got '0'"),
    (["--data", "builtin:mnist", "--n", "100001"], "argument --n: must be an integer in 1…100000"),
    (["--data", "builtin:mnist", "--n", "inf"], "argument --n: must be an integer in 1…100000, got 'inf'"),
    (["--data", "builtin:mnist", "--n", "100000"], "has only 500 images"),
    (["--image", "IMG", "--n", "2"], "--n and --split go with --data"),
    (["--data", "builtin:mnist", "--T", "50"], "--T goes with --schedule"),
    (["--data", "builtin:mnist", "--batch-size", "0"], "argument --batch-size: must be an integer in 1…4096"),
    (["--data", "builtin:mnist", "--batch-size", "1e9"], "argument --batch-size: must be an integer in 1…4096"),
    (["--data", "builtin:mnist", "--schedule", "linear", "--T", "1"], "argument --T: must be an integer in 2…100000"),
    (["--data", "builtin:mnist", "--schedule", "linear", "--T", "nan"], "argument --T: must be an integer in 2…"),
    (["--data", "builtin:mnist", "--seed", "-1"], "argument --seed: must be an integer in 0…"),
    (["--image", "IMG", "--data", "builtin:mnist"], "not allowed with"),
    (["--data", "builtin:mnist", "--variance", "medium"], "invalid choice"),
    (["--data", "builtin:mnist", "--schedule", "linear", "--T", "50"],
     "was trained with T = 20 timesteps; this schedule has T = 50"),
    (["--data", "builtin:mnist", "--schedule", "SCHED30"], "was trained with T = 20 timesteps; this schedule has T = 30"),
    (["--data", "builtin:mnist", "--schedule", "SCHED30", "--T", "20"], "--T goes with --schedule PRESET; the file"),
])
def test_bad_input_exits_2_with_one_line(capsys, tiny_model, grey_png, tmp_path, argv, message):
    NoiseSchedule.preset("linear", T=30).save(tmp_path / "s30.json")
    argv = [{"IMG": str(grey_png[0]), "SCHED30": str(tmp_path / "s30.json")}.get(a, a) for a in argv]
    with_model = ["--model", str(tiny_model), *argv]
    try:
        code, out, err = run_cli(capsys, *with_model)
    except SystemExit as e:  # argparse errors
        code, (out, err) = e.code, capsys.readouterr()
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1 and out == ""


def test_a_missing_model_exits_2(capsys, grey_png):
    code, out, err = run_cli(capsys, "--model", "/no/such/model", "--image", str(grey_png[0]))
    assert code == 2 and "no such model folder" in err and len(err.strip().splitlines()) == 1


def test_a_preset_schedule_takes_the_models_own_T(capsys, tiny_model):
    """As in ``ddpm sample``: --schedule PRESET without --T is built at the model's T (20 here), not 1000; the
    model's own T given explicitly is accepted too."""
    for extra in ([], ["--T", "20"]):
        code, out, err = run_cli(capsys, "--model", str(tiny_model), "--data", "builtin:mnist", "--n", "1", "--json",
                                 "--schedule", "cosine", *extra)
        assert code == 0, err
        d = json.loads(out)
        assert d["T"] == 20 and d["schedule"] == "cosine" and len(d["terms"]) == 21


@pytest.fixture(scope="module")
def unclipped_model(tmp_path_factory):
    torch.manual_seed(1)
    net = UNet(UNetConfig(resolution=8, in_channels=1, base_channels=8, channel_mults=(1,), attention_resolutions=(),
                          groups=4))
    folder = tmp_path_factory.mktemp("models") / "unclipped"
    save_checkpoint(folder, net, NoiseSchedule.preset("linear", T=10, beta_start=1e-3, beta_end=0.3),
                    clip_sample=False)
    return folder


def test_clip_and_no_clip_are_a_pair_defaulting_to_the_models_config(capsys, unclipped_model, tiny_model):
    def bound(model, *flags):
        code, out, err = run_cli(capsys, "--model", str(model), "--data", "builtin:mnist", "--n", "1", "--json",
                                 *flags)
        assert code == 0, err
        return json.loads(out)

    default, clipped, unclipped = (bound(unclipped_model, *f) for f in ([], ["--clip"], ["--no-clip"]))
    assert (default["clip_denoised"], clipped["clip_denoised"], unclipped["clip_denoised"]) == (False, True, False)
    assert default["terms"] == unclipped["terms"] and clipped["terms"] != default["terms"]
    assert bound(tiny_model)["clip_denoised"] is True  # a model saved with the default (clip_sample: true)
    assert bound(tiny_model, "--no-clip")["clip_denoised"] is False
