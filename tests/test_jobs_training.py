"""core.jobs.training headless: the updates the Train tab receives (every step exactly once, in order, with core's
losses; bare yields as cancel points; a close mid-run saves a checkpoint that resumes bit for bit), the loss curve
and its centred mean, the run's notes and warnings as one line, the status texts, and the run folder's checks.
Runs use the tiny UNet on four 8×8 images and a handful of steps."""
import json
import math
import re
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from core.jobs.training import (LossCurve, StepBuffer, TrainSession, TrainUpdate, centered_mean, check_resume,
                                check_start, data_notes, describe_run, folder_summary, new_run_folder,
                                newest_model_folder, run_state, saved_recipe, stopped_text, training_updates,
                                update_text, warning_text)
from core.train import TrainConfig, TrainEvent, train
from conftest import save_photo_folder  # noqa: E402

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),  # tiny tensors: one thread (conftest)
              pytest.mark.filterwarnings("ignore:.*could not be read as images:UserWarning")]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return save_photo_folder(tmp_path_factory.mktemp("data") / "photos")


def _cfg(images, out, **kw):
    base = dict(data=str(images), out=str(out), steps=5, batch_size=2, resolution=8, model_size="tiny",
                sample_every=0, checkpoint_every=0, sample_steps=2, warmup_steps=2, device="cpu")
    return TrainConfig(**{**base, **kw})


@pytest.fixture
def frozen_clock(monkeypatch):
    """The job's clock stands still: with a long emit interval, only the first step and sample grids are shown."""
    import core.jobs.training as job

    class Clock:
        @staticmethod
        def perf_counter():
            return 100.0
    monkeypatch.setattr(job, "time", Clock)


def _core_losses(cfg):
    return [(ev.step, ev.loss, ev.loss_avg) for ev in train(cfg) if ev.kind == "step"]


def _same_tensors(a, b):
    for f in ("checkpoint/model.safetensors", "checkpoint/train_state.safetensors", "model/model.safetensors"):
        ta, tb = load_file(str(a / f)), load_file(str(b / f))
        assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta), f


# ----- the updates ---------------------------------------------------------------------------------------------
def test_every_step_reaches_the_ui_once_with_cores_losses(images, tmp_path):
    cfg = _cfg(images, tmp_path / "run", sample_every=2)
    session = TrainSession(cfg.out)
    out = list(training_updates(cfg, False, session, emit_interval=0.0))
    ups = [u for u in out if u is not None]
    started, *progress, done = ups
    assert started.kind == "started" and (started.step, started.total) == (0, 5)
    assert started.notes == ("skipped 1 file that could not be read as images",) and started.num_classes == 0
    assert started.info.startswith("tiny UNet (")
    assert " on " + str(images) + ": 4 images 3×8×8; cpu, fp32" in started.info
    assert len(started.history_steps) == 0
    assert [u.kind for u in progress] == ["progress"] * len(progress) and done.kind == "done"
    steps = np.concatenate([u.steps for u in ups])
    np.testing.assert_array_equal(steps, [1, 2, 3, 4, 5])  # each once, in order
    ref = _core_losses(replace(cfg, out=str(tmp_path / "ref")))
    np.testing.assert_allclose(np.concatenate([u.losses for u in ups]), [r[1] for r in ref], rtol=1e-6)
    np.testing.assert_allclose(np.concatenate([u.loss_avgs for u in ups]), [r[2] for r in ref], rtol=1e-6)
    assert [u.grid_step for u in ups if u.grid is not None] == [2, 4, 5]  # every grid is shown
    assert done.step == 5 and done.model_path == str(tmp_path / "run" / "model") and done.checkpoint_step == 5
    assert session.saved_path is None  # nothing stopped it


def test_between_updates_every_step_is_a_cancel_point(images, tmp_path, frozen_clock):
    cfg = _cfg(images, tmp_path / "run", steps=4)
    out = list(training_updates(cfg, False, TrainSession(cfg.out), emit_interval=50.0))
    # started, step 1 (the first update is due at once), bare yields for steps 2…4, then the sample grid of the
    # end with the steps not shown yet (a grid is never held back), then done
    assert [None if u is None else u.kind for u in out] == ["started", "progress", None, None, None, "progress",
                                                            "done"]
    np.testing.assert_array_equal(out[1].steps, [1])
    np.testing.assert_array_equal(out[5].steps, [2, 3, 4])
    assert out[5].grid is not None and out[5].grid_step == 4
    assert len(out[6].steps) == 0 and out[6].step == 4


def test_closing_mid_run_saves_a_checkpoint_that_resumes_exactly(images, tmp_path, frozen_clock):
    cfg = _cfg(images, tmp_path / "run", steps=6)
    session = TrainSession(cfg.out)
    gen = training_updates(cfg, False, session, emit_interval=50.0)
    assert next(gen).kind == "started"
    assert next(gen).kind == "progress"      # step 1
    assert next(gen) is None and next(gen) is None   # steps 2 and 3, not shown yet
    gen.close()
    assert session.saved_step == 3 and session.saved_path == str(tmp_path / "run" / "checkpoint")
    np.testing.assert_array_equal(session.tail[0], [2, 3])  # the steps that had not reached the UI
    assert run_state(cfg.out)["step"] == 3

    resumed = [u for u in training_updates(cfg, True, TrainSession(cfg.out), emit_interval=-1.0) if u is not None]
    assert resumed[0].kind == "started" and resumed[0].step == 3
    np.testing.assert_array_equal(np.concatenate([u.steps for u in resumed]), [4, 5, 6])
    list(train(replace(cfg, out=str(tmp_path / "ref"))))
    _same_tensors(tmp_path / "run", tmp_path / "ref")


def test_a_resumed_run_brings_its_history_and_a_finished_one_is_done_at_once(images, tmp_path):
    cfg = _cfg(images, tmp_path / "run", steps=12)
    list(train(cfg))
    ups = [u for u in training_updates(cfg, True, TrainSession(cfg.out)) if u is not None]
    assert [u.kind for u in ups] == ["started", "done"]
    np.testing.assert_array_equal(ups[0].history_steps, [10])
    ref = _core_losses(replace(cfg, out=str(tmp_path / "ref")))
    np.testing.assert_allclose(ups[0].history_losses, [np.mean([r[1] for r in ref[:10]])], rtol=1e-6)
    assert ups[1].step == 12 and ups[1].model_path == str(tmp_path / "run" / "model")


def test_step_buffer_hands_out_each_step_once():
    buf = StepBuffer()
    for s in (1, 2):
        buf.add(TrainEvent("step", s, 9, loss=s / 10, loss_avg=s / 20))
    steps, losses, avgs = buf.take()
    assert steps.dtype == np.int64 and steps.tolist() == [1, 2] and losses.tolist() == [0.1, 0.2]
    assert avgs.tolist() == [0.05, 0.1]
    assert [len(a) for a in buf.take()] == [0, 0, 0]


def test_describe_run_is_the_line_ddpm_train_prints(images, tmp_path):
    trainer = train(_cfg(images, tmp_path / "run"))
    n = sum(p.numel() for p in trainer.model.parameters())
    assert describe_run(trainer) == f"tiny UNet ({n / 1e6:.2f} M parameters) on {images}: 4 images 3×8×8; cpu, fp32"


# ----- notes, warnings and status lines --------------------------------------------------------------------------
def test_notes_and_warnings_are_one_line_each_said_once():
    class Data:
        skipped = 3
    assert data_notes(Data()) == ("skipped 3 files that could not be read as images",)
    Data.skipped = 0
    assert data_notes(Data()) == ()
    note = ("skipped 1 file that could not be read as images",)
    assert warning_text(note, []) == note[0]
    assert warning_text(note, ["odd"]) == f"{note[0]} · odd"
    loader = "/d: skipped 1 file that could not be read as images (notes.png)"  # the loader's warning says it
    assert warning_text(note, [loader, "odd"]) == f"{loader} · odd"
    assert warning_text((), []) == ""


def test_status_lines():
    u = TrainUpdate("progress", 10, 100, it_per_s=2.0, lr=2e-4)
    assert update_text(u, "0.1234") == "step 10/100 · loss 0.1234 · 2 it/s · ETA 0:45 · lr 0.0002"
    assert update_text(replace(u, it_per_s=0.0), "–").endswith("ETA --:-- · lr 0.0002")
    assert update_text(TrainUpdate("started", 3, 9), "") == "step 3/9 · waiting for the first step…"
    assert update_text(TrainUpdate("done", 9, 9, model_path="/r/model"), "0.5") == \
        "Done: 9 steps, loss 0.5. “Use this model” opens model/ in Generate"
    s = TrainSession("/r")
    assert stopped_text(s, 9) == "Stopped before the first step (nothing to save)"
    s.saved_step, s.saved_path = 4, "/r/checkpoint"
    assert stopped_text(s, 9) == "Stopped at step 4/9; resumable checkpoint in /r/checkpoint — Resume continues it"


# ----- the loss curve ------------------------------------------------------------------------------------------
def test_centered_mean_is_the_weighted_window_mean():
    rng = np.random.default_rng(1)
    steps = np.arange(1, 121)
    values = rng.uniform(0.1, 1.0, 120)
    slow = np.array([values[np.abs(steps - s) <= 25].mean() for s in steps])
    np.testing.assert_allclose(centered_mean(steps, values, np.ones(120)), slow, rtol=1e-12)
    # history points stand for 10 steps each: weighted by 10 against the single steps after them
    got = centered_mean([10, 20, 21], [1.0, 2.0, 4.0], [10, 10, 1], half=25)
    np.testing.assert_allclose(got, [(10 + 20 + 4) / 21] * 3)
    np.testing.assert_allclose(centered_mean([1, 100], [1.0, 3.0], [1, 1], half=5), [1.0, 3.0])


def test_loss_curve_holds_every_step_and_a_resumed_history():
    c = LossCurve()
    assert c.loss_text() == "–" and c.last_step is None and len(c.mean) == 0
    c.load_history([10, 20], [0.5, 0.4])
    assert c.weights == [10, 10] and all(math.isnan(v) for v in c.avgs)
    assert c.loss_text() == "0.4000"  # history has no exponential average
    assert not c.append(np.zeros(0, np.int64), np.zeros(0), np.zeros(0))
    assert c.append([21, 22], [0.3, 0.2], [0.35, 0.3])
    assert c.steps == [10, 20, 21, 22] and c.weights == [10, 10, 1, 1] and c.last_step == 22
    np.testing.assert_allclose(c.mean, centered_mean(c.steps, c.raw, c.weights))
    assert c.loss_text() == "0.3000 (exponential average; this step 0.2000)"
    c.clear("/run")
    assert c.out == "/run" and c.steps == [] and not c.continues("/run", 0)
    c.append([1], [0.9], [0.9])
    assert c.continues("/run", 1) and not c.continues("/run", 2) and not c.continues("/other", 1)


# ----- the run folder ------------------------------------------------------------------------------------------
def test_run_state_and_the_newest_model_folder(images, tmp_path):
    out = tmp_path / "run"
    assert run_state(out) is None and newest_model_folder(out) is None
    (out / "checkpoint").mkdir(parents=True)
    (out / "checkpoint" / "train_state.json").write_text("{not json")
    assert run_state(out) is None
    (out / "checkpoint" / "train_state.json").write_text('["a list"]')
    assert run_state(out) is None and saved_recipe(None) == {}
    (out / "checkpoint").rename(tmp_path / "junk")
    cfg = _cfg(images, out, steps=3, checkpoint_every=2)
    trainer = train(cfg)
    next(trainer), next(trainer), next(trainer)  # steps 1, 2 and the checkpoint at 2
    assert run_state(out)["step"] == 2 and saved_recipe(run_state(out))["model_size"] == "tiny"
    assert newest_model_folder(out) == out / "checkpoint"
    list(trainer)
    assert newest_model_folder(out) == out / "model"  # both hold 3 steps: model/ comes first
    (out / "model" / "config.json").write_text(json.dumps({"trained_steps": 1}))
    assert newest_model_folder(out) == out / "checkpoint"


def test_what_is_checked_before_start_and_resume(images, tmp_path):
    out = tmp_path / "run"
    cfg = _cfg(images, out, steps=2)
    check_start(cfg)
    with pytest.raises(ValueError, match=f"^{re.escape(str(out))} holds no checkpoint to resume$"):
        check_resume(cfg)
    list(train(cfg))
    with pytest.raises(ValueError, match=r"already holds a run \(step 2\): Resume continues it, or choose another"):
        check_start(cfg)
    with pytest.raises(ValueError, match=r"^the run is at step 2 of 2: raise Steps to continue it$"):
        check_resume(cfg)
    assert check_resume(replace(cfg, steps=3)) == 2
    shutil.rmtree(out / "samples")  # the grid of the last step
    (out / "samples").write_text("a file where the run writes a folder")
    with pytest.raises(NotADirectoryError, match="samples: is a file"):
        check_resume(replace(cfg, steps=3))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(NotADirectoryError, match="notes.txt is a file, not a folder"):
        check_start(_cfg(images, tmp_path / "notes.txt" / "run"))


def test_folder_summary_and_a_fresh_folder_name(tmp_path):
    assert folder_summary(None) == "A new run: it writes checkpoint/ (resumable), samples/ and, at the end, model/"
    state = {"step": 4, "config": {"model_size": "tiny", "data": "builtin:mnist", "steps": 10}}
    assert folder_summary(state) == "Holds a tiny run on builtin:mnist at step 4 of 10: Resume continues it"
    assert folder_summary({**state, "step": 10}) == ("Holds a tiny run on builtin:mnist, finished at step 10: raise "
                                                    "Steps and Resume to train it further, or choose another output "
                                                    "folder for a new run")
    assert folder_summary({"step": 1, "config": "odd"}) == "Holds a ? run on ? at step 1 of ?: Resume continues it"
    assert new_run_folder(tmp_path, "builtin:mnist", "small") == tmp_path / "mnist-small"
    (tmp_path / "mnist-small").mkdir()
    (tmp_path / "mnist-small-2").mkdir()
    assert new_run_folder(tmp_path, "builtin:mnist", "small") == tmp_path / "mnist-small-3"
    assert new_run_folder(tmp_path, "/data/photos", "tiny") == tmp_path / "photos-tiny"
    assert new_run_folder(tmp_path, "/", "tiny") == tmp_path / "images-tiny"


def test_the_tabs_texts_and_the_sample_views_title():
    from core.jobs.training import ADD_FOLDER_TIP, DEFAULTS, MNIST_TIP, SIZE_TIPS, TIPS, samples_title
    from core.train import MODEL_SIZES
    assert set(SIZE_TIPS) == set(MODEL_SIZES)
    small = MODEL_SIZES["small"]
    assert SIZE_TIPS["small"].startswith(f"small: base {small['base_channels']} channels, multipliers ")
    assert "4,500 training images" in MNIST_TIP and "sub-folders = classes" in ADD_FOLDER_TIP
    assert "L_simple = ‖ε − ε_θ(√ᾱ_t·x_0 + √(1−ᾱ_t)·ε, t)‖²" in TIPS["trainStartButton"]
    assert f"DDIM, {DEFAULTS.sample_steps} steps" in TIPS["trainSampleEverySpin"]
    assert "mean over the 51 steps" in TIPS["trainLossPlot"]
    assert samples_title(None) == "<b>EMA samples</b> appear at the end"
    assert samples_title(None, every=200) == "<b>EMA samples</b> appear every 200 steps and at the end"
    n = DEFAULTS.sample_steps
    assert samples_title(300) == f"<b>EMA samples</b> at step 300 (DDIM, {n} steps)"
    assert samples_title(300, 10) == f"<b>EMA samples</b> at step 300 (DDIM, {n} steps; classes 0…9 by column)"
    assert samples_title(300, 11) == f"<b>EMA samples</b> at step 300 (DDIM, {n} steps)"
