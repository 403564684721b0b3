"""core.train: the loop's events, exact resume, atomic checkpoints, loss weights, and that it actually learns.

Runs use the ``tiny`` UNet on 8×8 or 12×12 images so the file stays fast on a 2-core CPU."""
import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from core.data import Dataset
from core.models.checkpoint import load_checkpoint
from core.train import TrainConfig, lr_at, loss_weights, train, unet_config_for
from conftest import DIE_DURING_SWAP


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors: one thread (conftest)


def _data(n=8, res=8, labels=True, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n, 1, res, res)).astype(np.float32)
    y = (np.arange(n) % 2).astype(np.int64) if labels else None
    return Dataset(x, y, 2 if labels else 0, 0, "toy", ("a", "b") if labels else ())


def _cfg(tmp_path, name="run", **kw):
    base = dict(data="toy", out=str(tmp_path / name), steps=4, batch_size=4, model_size="tiny", sample_every=0,
                checkpoint_every=0, warmup_steps=2, sample_steps=2, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_events_checkpoints_and_final_model(tmp_path):
    tr = train(_cfg(tmp_path, steps=4, checkpoint_every=2, sample_every=4), dataset=_data())
    events = list(tr)
    assert [e.kind for e in events] == ["step", "step", "checkpoint", "step", "step", "sample", "checkpoint", "done"]
    steps = [e for e in events if e.kind == "step"]
    assert [e.step for e in steps] == [1, 2, 3, 4] and all(e.total == 4 for e in events)
    assert all(math.isfinite(e.loss) and e.loss > 0 and e.it_per_s > 0 for e in steps)
    grid = events[5].grid
    assert grid.dtype == np.uint8 and grid.ndim == 3 and grid.shape[2] == 3
    assert (tmp_path / "run" / "samples" / "step_000004.png").is_file()
    # the checkpoint and the final model load as ordinary models holding the EMA weights
    for folder in (tmp_path / "run" / "checkpoint", tmp_path / "run" / "model"):
        den = load_checkpoint(folder)
        assert _same_weights(den.net, tr.ema) and den.num_classes == 2 and den.resolution == 8
        assert den.meta["trained_steps"] == 4 and den.meta["class_names"] == ["a", "b"]
    assert not (tmp_path / "run" / "model" / "train_state.safetensors").exists()  # inference files only
    assert not _same_weights(tr.ema, tr.model)  # EMA lags the raw weights


@pytest.mark.parametrize("labels, clip", [(True, True), (False, True), (True, False)])
def test_the_preview_is_generates_ddim_on_the_saved_model(tmp_path, labels, clip):
    """The EMA grid is core.samplers.sample run directly on the saved model, as Generate runs "DDIM, N steps":
    the model's default (leading) spacing and clipping, η = 0, seed 0, each class in turn."""
    from core.images import make_grid, to_uint8
    from core.samplers import run_to_end, sample
    from core.samplers.timesteps import spaced_timesteps

    tr = train(_cfg(tmp_path, steps=2, sample_steps=5, T=100, clip_sample=clip), dataset=_data(labels=labels))
    grid = [e for e in tr if e.kind == "sample"][-1].grid
    den = load_checkpoint(tmp_path / "run" / "model")
    n, k = (4, 2) if labels else (16, None)
    last = run_to_end(sample(den, sampler="ddim", steps=5, seed=0, n=n,
                             class_labels=[i % 2 for i in range(n)] if labels else None))
    want = make_grid(to_uint8(last.x_t.permute(0, 2, 3, 1).numpy()), ncols=k, pad=2)
    np.testing.assert_array_equal(grid, want)
    assert den.clip_sample is clip
    # "DDIM, 5 steps" visits the same timesteps in both tabs: leading spacing, not linspace
    steps = [s.t for s in sample(den, sampler="ddim", steps=5, n=1, class_labels=0 if labels else None)]
    assert steps == spaced_timesteps(100, 5, "leading").tolist() == [80, 60, 40, 20, 0]


def test_close_stops_at_once_and_save_still_works(tmp_path):
    tr = train(_cfg(tmp_path, steps=100), dataset=_data())
    next(tr)
    tr.close()
    assert list(tr) == [] and tr.step == 1
    path = tr.save()
    state = json.loads((path / "train_state.json").read_text())
    assert state["step"] == 1


def test_resume_is_exact(tmp_path):
    kw = dict(steps=6, checkpoint_every=3, label_dropout=0.5)
    straight = train(_cfg(tmp_path, "a", **kw), dataset=_data())
    list(straight)
    first = train(_cfg(tmp_path, "b", **{**kw, "steps": 3}), dataset=_data())
    list(first)
    resumed = train(_cfg(tmp_path, "b", **kw), resume=True, dataset=_data())
    assert resumed.step == 3
    list(resumed)
    assert resumed.step == 6
    assert _same_weights(straight.model, resumed.model) and _same_weights(straight.ema, resumed.ema)
    sa, sb = straight.opt.state_dict()["state"], resumed.opt.state_dict()["state"]
    assert all(torch.equal(sa[i][k], sb[i][k]) for i in sa for k in sa[i])


def test_refuses_to_overwrite_and_to_resume_nothing(tmp_path):
    list(train(_cfg(tmp_path, steps=1, checkpoint_every=1), dataset=_data()))
    with pytest.raises(ValueError, match="--resume"):
        train(_cfg(tmp_path, steps=2), dataset=_data())
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(_cfg(tmp_path, "empty"), resume=True, dataset=_data())
    with pytest.raises(ValueError, match="cannot change batch_size when resuming"):
        train(_cfg(tmp_path, steps=2), resume=True, dataset=_data(), change=("batch_size",))


def test_a_failed_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    tr = train(_cfg(tmp_path, steps=3, checkpoint_every=1), dataset=_data())
    next(tr), next(tr)  # step 1 and its checkpoint
    import core.train as mod

    def broken(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(mod, "write_model_files", broken)
    with pytest.raises(OSError):
        tr.save()
    folder = tmp_path / "run" / "checkpoint"
    assert json.loads((folder / "train_state.json").read_text())["step"] == 1
    assert [p.name for p in folder.parent.iterdir() if p.name.startswith(".")] == []  # no temp folder left
    load_checkpoint(folder)


def test_loss_falls_when_learning_a_few_images(tmp_path):
    """ε-prediction on 4 fixed 8×8 images: the average loss over the last 20 steps is well below the first 20."""
    tr = train(_cfg(tmp_path, steps=120, batch_size=16, lr=2e-3, warmup_steps=10), dataset=_data(n=4, labels=False))
    losses = [e.loss for e in tr if e.kind == "step"]
    assert np.mean(losses[-20:]) < 0.6 * np.mean(losses[:20])


@pytest.mark.parametrize("prediction", ["sample", "v_prediction"])
def test_other_predictions_train_and_save(tmp_path, prediction):
    tr = train(_cfg(tmp_path, steps=2, prediction_type=prediction, min_snr_gamma=5.0), dataset=_data())
    events = list(tr)
    assert events[-1].kind == "done"
    assert load_checkpoint(events[-1].path).prediction_type == prediction


def test_min_snr_weights_and_warmup():
    snr = torch.tensor([0.01, 1.0, 5.0, 100.0])
    np.testing.assert_allclose(loss_weights(snr, "epsilon", 5.0), [1.0, 1.0, 1.0, 0.05])
    np.testing.assert_allclose(loss_weights(snr, "sample", 5.0), [0.01, 1.0, 5.0, 5.0])
    np.testing.assert_allclose(loss_weights(snr, "v_prediction", 5.0), [0.01 / 1.01, 0.5, 5 / 6, 5 / 101], rtol=1e-6)
    assert torch.equal(loss_weights(snr, "epsilon", None), torch.ones(4))
    cfg = TrainConfig(lr=1e-3, warmup_steps=10)
    assert lr_at(0, cfg) == pytest.approx(1e-4) and lr_at(9, cfg) == pytest.approx(1e-3) and lr_at(500, cfg) == 1e-3


def test_model_sizes_and_bad_options():
    small = unet_config_for("small", 28, 1, 10)
    assert small.base_channels == 32 and small.attention_resolutions == ()
    medium = unet_config_for("medium", 28, 1, 10)
    assert medium.base_channels == 48 and medium.attention_resolutions == () and medium.channel_mults == (1, 2, 2)
    assert unet_config_for("base", 32, 3, 0).attention_resolutions == (8,)
    with pytest.raises(ValueError, match="model size"):
        unet_config_for("huge", 28, 1, 0)
    with pytest.raises(ValueError, match="label_dropout"):
        TrainConfig(label_dropout=1.0)
    with pytest.raises(ValueError, match="steps"):
        TrainConfig(steps=0)


# ----- a checkpoint swap killed at any point --------------------------------------------------------------------
@pytest.fixture(scope="module")
def straight6(tmp_path_factory):
    """Six steps in one go (the run the resumed ones must equal)."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tr = train(_cfg(tmp_path_factory.mktemp("straight"), steps=6), dataset=_data())
        list(tr)
    finally:
        torch.set_num_threads(prev)
    return tr


@pytest.mark.skipif(os.name != "posix", reason="the child is killed with os._exit")
@pytest.mark.parametrize("mode, die_after, step", [
    ("swap", 0, 2),      # killed while writing the step-4 checkpoint: step 2's is in place
    ("swap", 1, 4),      # killed after the atomic swap, before the old folder was removed
    ("rename", 1, 2),    # no atomic swap on this file system: killed after the new folder was marked complete
    ("rename", 2, 4),    # … after checkpoint/ was moved aside: no checkpoint/ until the next start puts it back
    ("rename", 3, 4),    # … after the new one was renamed in, before the old one was removed
])
def test_a_checkpoint_swap_killed_at_any_point_resumes_from_a_complete_checkpoint(tmp_path, straight6, mode,
                                                                                   die_after, step):
    root = Path(__file__).resolve().parents[1]
    tr = train(_cfg(tmp_path, steps=6), dataset=_data())
    tr.train_step(), tr.train_step()
    tr.save()                                        # run/checkpoint at step 2
    tr.train_step(), tr.train_step()
    staging = tr.save(tmp_path / "staging")          # the step-4 checkpoint the killed save was writing
    ckpt = tmp_path / "run" / "checkpoint"
    proc = subprocess.run([sys.executable, "-c", DIE_DURING_SWAP, str(ckpt), str(staging), str(die_after), mode],
                          env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr
    # a plain rerun still sees the run (it does not silently start again from step 0) …
    with pytest.raises(ValueError, match="--resume"):
        train(_cfg(tmp_path, steps=6), dataset=_data())
    # … and --resume continues from the complete checkpoint that is left, with no temporary folder about
    resumed = train(_cfg(tmp_path, steps=6), resume=True, dataset=_data())
    assert resumed.step == step
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoint"]
    list(resumed)
    assert _same_weights(straight6.model, resumed.model) and _same_weights(straight6.ema, resumed.ema)


def test_an_output_place_that_can_never_be_written_is_refused_before_any_work(tmp_path, monkeypatch):
    import core.train as mod
    monkeypatch.setattr(mod, "load_dataset", lambda *a, **k: pytest.fail("data loaded before the output check"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        train(_cfg(tmp_path, "file/run", data="builtin:mnist"))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "samples").write_text("a file where the run writes a folder")
    with pytest.raises(NotADirectoryError, match="samples: is a file"):
        train(_cfg(tmp_path, data="builtin:mnist"))


def test_a_run_that_fails_to_start_leaves_no_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(_cfg(tmp_path, "fresh"), resume=True, dataset=_data())
    assert not (tmp_path / "fresh").exists()


def test_no_grad_scaler_where_it_does_nothing_and_no_warning(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning (GradScaler's "CUDA is not available") fails the test
        tr = train(_cfg(tmp_path, "bf16", precision="bf16"), dataset=_data())
        assert tr.scaler is None and tr.precision == "bf16"
        tr = train(_cfg(tmp_path, "fp32"), dataset=_data())
        assert tr.scaler is None and tr.precision == "fp32"
        with pytest.raises(ValueError, match="fp16 autocast needs a GPU"):  # found now, not at the first step
            train(_cfg(tmp_path, "fp16", precision="fp16"), dataset=_data())


@pytest.mark.parametrize("field, value", [("weight_decay", float("nan")), ("grad_clip", float("inf")),
                                          ("grad_clip", -1.0), ("min_snr_gamma", float("inf")),
                                          ("lr", float("nan")), ("ema_decay", float("nan"))])
def test_non_finite_options_are_refused(field, value):
    with pytest.raises(ValueError, match=field.split("_")[0] if field != "lr" else "learning rate"):
        TrainConfig(**{field: value})
