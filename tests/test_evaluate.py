"""core.evaluate and ddpm evaluate: the Fréchet distance against an independent computation, the near-copy test,
the shipped classifier's held-out accuracy, and the command end to end on a tiny model."""
import json

import numpy as np
import pytest
import torch

from core.cli import main
from core.evaluate import frechet_distance, near_copy_mask, nearest_train_distances, parse_class


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors: one thread (conftest)


def _frechet_by_general_eig(a, b):
    """Independent route: Tr((Σa Σb)^½) from the (real, non-negative) eigenvalues of the non-symmetric Σa Σb."""
    ca, cb = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    lam = np.linalg.eigvals(ca @ cb).real
    return ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(ca) + np.trace(cb) - 2 * np.sqrt(np.clip(lam, 0, None)).sum()


def test_frechet_matches_independent_formula_and_known_cases():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 6)) @ rng.normal(size=(6, 6))
    b = rng.normal(size=(300, 6)) * 2.0 + 1.0
    assert frechet_distance(a, b) == pytest.approx(_frechet_by_general_eig(a, b), rel=1e-8)
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-8)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    shift = np.array([3.0, 0, 0, 4.0, 0, 0])  # same covariance, means 5 apart → d² = 25
    assert frechet_distance(a, a + shift) == pytest.approx(25.0, rel=1e-8)
    # 1-D Gaussians: d² = (μ1 − μ2)² + (σ1 − σ2)²
    x = rng.normal(size=(1000, 1))
    y = 3.0 * (x - x.mean()) + 2.0
    assert frechet_distance(x, y) == pytest.approx((x.mean() - 2.0) ** 2 + (2.0 * x.std(ddof=1)) ** 2, rel=1e-8)


def test_near_copies_are_found_and_fresh_images_are_not():
    rng = np.random.default_rng(1)
    train = rng.uniform(-1, 1, (300, 1, 6, 6))
    copies = train[:20] + rng.normal(scale=0.02, size=(20, 1, 6, 6))
    fresh = rng.uniform(-1, 1, (20, 1, 6, 6))
    assert near_copy_mask(copies, train).all()
    assert not near_copy_mask(fresh, train).any()
    d = nearest_train_distances(train[:3], train)
    np.testing.assert_allclose(d[:, 0], 0.0, atol=1e-6)  # each training image is its own nearest neighbour
    assert np.all(np.diff(d, axis=1) >= 0)


def test_shipped_classifier_recognises_held_out_digits():
    from core.classifier import classify, load_classifier
    from core.data import load_dataset
    held = load_dataset("builtin:mnist", split="heldout")
    probs, feats = classify(load_classifier(), held.images)
    assert (probs.argmax(1) == held.labels).mean() >= 0.95
    assert feats.shape == (500, 128)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-6)


def test_shipped_classifier_is_confident_on_digits_and_not_on_noise():
    """The confident share means "a recognisable digit" only if real digits pass and noise does not (a plain CNN
    calls most noise images a confident digit; outlier exposure is what fixes that)."""
    import torch
    from core.classifier import confident_share, load_classifier
    from core.classifier.train import noise_images
    from core.data import load_dataset
    net = load_classifier()
    assert confident_share(net, load_dataset("builtin:mnist", split="heldout").images) >= 0.95
    # fresh noise, drawn with a seed the training never used, and plain N(0, 1) noise
    assert confident_share(net, noise_images(500, torch.Generator().manual_seed(12345))) <= 0.05
    plain = torch.randn(500, 1, 28, 28, generator=torch.Generator().manual_seed(7)).clamp(-1, 1)
    assert confident_share(net, plain) <= 0.05


def test_parse_class():
    assert parse_class(None) is None and parse_class("all") == "all" and parse_class("7") == 7
    for bad in ("10", "-1", "seven"):
        with pytest.raises(ValueError, match="--class"):
            parse_class(bad)


@pytest.fixture(scope="module")
def tiny_digit_model(tmp_path_factory):
    from core.data import load_dataset
    from core.train import TrainConfig, train
    out = tmp_path_factory.mktemp("tiny")
    data = load_dataset("builtin:mnist", split="heldout")
    with torch.random.fork_rng():
        torch.set_num_threads(1)
        tr = train(TrainConfig(data="builtin:mnist", out=str(out / "run"), steps=2, batch_size=8,
                               model_size="tiny", sample_every=0, checkpoint_every=0, device="cpu"), dataset=data)
        events = list(tr)
    return events[-1].path


def test_evaluate_command_json(tiny_digit_model, capsys):
    rc = main(["evaluate", "--model", tiny_digit_model, "--n", "20", "--steps", "2", "--class", "all",
               "--guidance", "2", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["n"] == 20 and out["class_label"] == "all" and out["guidance"] == 2.0
    assert len(out["digit_shares"]) == 10 and sum(out["digit_shares"]) == pytest.approx(1.0)
    for key in ("confident_share", "near_copy_share", "near_copy_share_real", "on_label_share"):
        assert 0.0 <= out[key] <= 1.0
    assert out["frechet"] > 0 and out["frechet_floor"] > 0
    assert out["frechet_ratio"] == pytest.approx(out["frechet"] / out["frechet_floor"])
    assert out["near_copy_share_real"] <= 0.05  # real held-out digits are not copies of training digits
    # an untrained model's blobs are far from real digits: well above the real-vs-real floor
    assert out["frechet_ratio"] > 3 and out["goals"]["on_label_share"]["met"] is False


@pytest.mark.parametrize("argv, message", [
    (["--class", "12"], "--class"),
    (["--guidance", "3"], "--guidance needs --class"),
    (["--n", "5"], "--n must be at least 20"),
    (["--model", "/nonexistent/model"], "no such model"),
    (["--device", "tpu"], "unknown device"),
])
def test_evaluate_bad_input_is_one_line(argv, message, capsys):
    assert main(["evaluate", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def _evaluation(**kw):
    from core.evaluate import Evaluation
    base = dict(model="m", n=100, sampler="ddim", steps=50, seed=0, class_label=None, guidance=1.0,
                confident_share=0.95, confident_share_real=0.98, digit_shares=[0.1] * 10, frechet=20.0,
                frechet_floor=10.0, near_copy_share=0.0, near_copy_share_real=0.0, on_label_share=None, classifier_heldout_accuracy=0.97, sample_seconds=1.0)
    base.update(kw)
    return Evaluation(**base)


def test_goals_follow_the_issue_thresholds():
    from core.evaluate import check_goals
    ok = check_goals(_evaluation())
    assert set(ok) == {"confident_share", "near_copy_share", "digit_shares", "frechet_ratio"}
    assert all(g["met"] for g in ok.values())
    bad = check_goals(_evaluation(confident_share=0.89, digit_shares=[0.04] + [0.96 / 9] * 9, frechet=30.5,
                                  near_copy_share=0.21))
    assert not any(g["met"] for g in bad.values())
    guided = check_goals(_evaluation(class_label="3", on_label_share=0.94, digit_shares=[0.0] * 3 + [1.0] + [0.0] * 6))
    assert set(guided) == {"confident_share", "near_copy_share", "on_label_share"} and not guided["on_label_share"]["met"]
    every = check_goals(_evaluation(class_label="all", on_label_share=0.96))
    assert every["on_label_share"]["met"] and "frechet_ratio" in every


def test_builtin_model_draws_the_digit_it_is_asked_for():
    """The shipped model, guided (w = 3, DDIM 20 steps): the classifier reads nearly every digit as its label."""
    from core.evaluate import evaluate
    ev = evaluate("builtin:mnist", n=20, steps=20, class_label="all", guidance=3.0, batch=20)
    assert ev.on_label_share >= 0.9 and ev.confident_share >= 0.9


def test_random_affine_is_the_identity_at_zero_and_moves_pixels_otherwise():
    import torch
    from core.classifier.train import random_affine
    from core.data import load_dataset
    x = torch.from_numpy(load_dataset("builtin:mnist", split="heldout").images[:16])
    same = random_affine(x, torch.Generator().manual_seed(0), degrees=0.0, scale=0.0, shift=0.0)
    torch.testing.assert_close(same, x, atol=1e-5, rtol=0)
    moved = random_affine(x, torch.Generator().manual_seed(0))
    assert moved.shape == x.shape and moved.min() >= -1 - 1e-6 and moved.max() <= 1 + 1e-6
    assert (moved - x).abs().mean() > 0.05  # jittered digits differ from the originals...
    # ...but only a little: ink stays where it was for the most part (jitter is ±10°, ±10%, ±2 px)
    ink, ink_moved = x > 0, moved > 0
    assert (ink & ink_moved).sum() / ink.sum() > 0.3
