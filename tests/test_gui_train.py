"""The Train panel against core.train: the loss curve holds exactly the losses core yields for the panel's config;
the EMA sample grid is core's; Stop answers at once, saves a checkpoint and enables Resume, which continues the run
bit for bit (every tensor of the checkpoint and the model equals a straight run's); closing the window mid-training
leaves a checkpoint core resumes from, bit for bit too; "Use this model" selects the run in Generate; bad input, an
output place that can never be written and warnings are one line. Runs use the tiny UNet on a few 8×8 images, a
handful of steps."""
import json
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch

pytest.importorskip("pytestqt")
from PySide6.QtCore import QSettings, Qt  # noqa: E402
from PySide6.QtWidgets import QWidget  # noqa: E402

from safetensors.torch import load_file  # noqa: E402

from core.train import train  # noqa: E402
from ddpm_gui import generate_panel as gp  # noqa: E402
from ddpm_gui.main_window import MainWindow  # noqa: E402
from ddpm_gui.worker import WorkerRunner, live_workers  # noqa: E402
from conftest import save_photo_folder  # noqa: E402

TIMEOUT = 180_000  # a loaded 2-core machine; a run here takes seconds when it is idle


pytestmark = [pytest.mark.usefixtures("one_torch_thread"),  # tiny tensors: one thread (conftest)
              pytest.mark.filterwarnings("ignore:.*could not be read as images:UserWarning")]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Four 12×12 photos (trained at 8×8) and one file that is not an image."""
    return save_photo_folder(tmp_path_factory.mktemp("data") / "photos")


@pytest.fixture
def window(qtbot):
    w = MainWindow()
    qtbot.addWidget(w)
    w.show()
    w.show_panel(w.train_panel)
    yield w
    w.close()


def _setup(panel, images, out, steps, sample_every=0):
    panel.select_data(str(images))
    panel.resolutionSpin.setValue(8)
    panel.sizeCombo.setCurrentIndex(panel.sizeCombo.findData("tiny"))
    panel.stepsSpin.setValue(steps)
    panel.batchSpin.setValue(2)
    panel.sampleEverySpin.setValue(sample_every)
    panel.deviceCombo.setCurrentIndex(panel.deviceCombo.findData("cpu"))
    panel.set_out(out)


def _core_run(cfg):
    """The same run headless: (steps, losses, loss_avgs, last sample grid)."""
    steps, losses, avgs, grid = [], [], [], None
    for ev in train(cfg):
        if ev.kind == "step":
            steps.append(ev.step)
            losses.append(ev.loss)
            avgs.append(ev.loss_avg)
        elif ev.kind == "sample":
            grid = ev.grid
    return np.array(steps), np.array(losses), np.array(avgs), grid


def _same_tensors(a, b):
    """Every tensor of a/checkpoint and a/model equals b's, bit for bit."""
    for f in ("checkpoint/model.safetensors", "checkpoint/train_state.safetensors", "model/model.safetensors"):
        ta, tb = load_file(str(a / f)), load_file(str(b / f))
        assert ta.keys() == tb.keys(), f
        assert all(torch.equal(ta[k], tb[k]) for k in ta), f


def _window_means(steps, losses, half=25):
    """The plot's smoothed loss, the slow way: the mean of the losses within ±half steps of each step."""
    return np.array([losses[np.abs(steps - s) <= half].mean() for s in steps])


def test_training_moves_the_curve_with_cores_values_and_hands_the_model_to_generate(window, qtbot, images, tmp_path):
    panel = window.train_panel
    _setup(panel, images, tmp_path / "run", steps=6, sample_every=3)
    cfg = panel.config()
    assert (cfg.data, cfg.resolution, cfg.model_size, cfg.steps, cfg.batch_size, cfg.sample_every) == \
        (str(images), 8, "tiny", 6, 2, 3)
    with qtbot.waitSignal(panel.runEnded, timeout=TIMEOUT):
        with qtbot.waitSignal(panel.runFinished, timeout=TIMEOUT) as finished:
            qtbot.mouseClick(panel.startButton, Qt.MouseButton.LeftButton)
            assert panel.running and not panel.startButton.isEnabled() and panel.stopButton.isEnabled()
    assert finished.args == [str(tmp_path / "run" / "model")]

    steps, raw, smooth = panel.curve()
    x, y = panel.rawCurve.getOriginalDataset()
    np.testing.assert_array_equal(x, steps)  # the plot holds the panel's data
    np.testing.assert_array_equal(y, raw)
    ref_steps, ref_loss, ref_avg, ref_grid = _core_run(replace(cfg, out=str(tmp_path / "ref")))
    np.testing.assert_array_equal(steps, ref_steps)  # every step, in order, none missing
    np.testing.assert_allclose(raw, ref_loss, rtol=1e-5)
    np.testing.assert_allclose(smooth, _window_means(ref_steps, ref_loss), rtol=1e-5)
    np.testing.assert_array_equal(panel.smoothCurve.getOriginalDataset()[1], smooth)
    np.testing.assert_allclose(panel.loss_averages(), ref_avg, rtol=1e-5)  # core's loss_avg, shown in the status
    assert f"{ref_avg[-1]:.4f}" in panel.status_text
    assert len(set(np.round(raw, 6))) > 1  # the curve moves
    np.testing.assert_array_equal(panel.samples_image(), ref_grid)  # the EMA grid of step 6, as core draws it
    assert "step 6" in panel.sampleView.title.text()
    assert panel.progressBar.value() == 6
    assert "Done: 6 steps" in panel.status_text and "skipped 1 file" in panel.status_text
    assert panel.resumeButton.isEnabled() and panel.useModelButton.isEnabled()

    qtbot.mouseClick(panel.useModelButton, Qt.MouseButton.LeftButton)
    generate = window.generate_panel
    assert generate.current_model() == (gp.FOLDER, str(tmp_path / "run" / "model"))
    assert window.panelTabs.currentWidget() is generate


def test_stop_answers_at_once_and_resume_continues_exactly(window, qtbot, images, tmp_path):
    panel = window.train_panel
    out = tmp_path / "run"
    _setup(panel, images, out, steps=100_000)
    cfg = panel.config()
    with qtbot.waitSignal(panel.runEnded, timeout=TIMEOUT):
        with qtbot.waitSignal(panel.runStopped, timeout=TIMEOUT) as stopped:
            panel.start()
            qtbot.waitUntil(lambda: len(panel.curve()[0]) >= 2, timeout=TIMEOUT)
            qtbot.mouseClick(panel.stopButton, Qt.MouseButton.LeftButton)
            assert not panel.stopButton.isEnabled() and "Stopping" in panel.status_text  # at once
    s = stopped.args[0]
    state = json.loads((out / "checkpoint" / "train_state.json").read_text())
    assert state["step"] == s >= 2
    np.testing.assert_array_equal(panel.curve()[0], np.arange(1, s + 1))  # the steps not yet shown arrive too
    assert f"Stopped at step {s}" in panel.status_text
    assert panel.resumeButton.isEnabled() and panel.startButton.isEnabled() and not panel.running

    panel.stepsSpin.setValue(s + 2)
    with qtbot.waitSignal(panel.runEnded, timeout=TIMEOUT):
        with qtbot.waitSignal(panel.runFinished, timeout=TIMEOUT):
            qtbot.mouseClick(panel.resumeButton, Qt.MouseButton.LeftButton)
    steps, raw, smooth = panel.curve()
    np.testing.assert_array_equal(steps, np.arange(1, s + 3))  # from the saved step on, no gap, no repeat
    ref_steps, ref_loss, ref_avg, _ = _core_run(replace(cfg, out=str(tmp_path / "ref"), steps=s + 2))
    np.testing.assert_allclose(raw, ref_loss, rtol=1e-5)  # stop + resume = one uninterrupted run
    np.testing.assert_allclose(panel.loss_averages(), ref_avg, rtol=1e-5)
    np.testing.assert_allclose(smooth, _window_means(ref_steps, ref_loss), rtol=1e-5)
    assert json.loads((out / "model" / "config.json").read_text())["trained_steps"] == s + 2
    _same_tensors(out, tmp_path / "ref")  # weights, EMA, optimizer moments, RNG: as if it had never stopped


def test_closing_mid_training_leaves_a_checkpoint_core_resumes(qtbot, images, tmp_path):
    w = MainWindow()
    qtbot.addWidget(w)
    w.show()
    panel = w.train_panel
    out = tmp_path / "run"
    _setup(panel, images, out, steps=100_000)
    cfg = panel.config()
    panel.start()
    qtbot.waitUntil(lambda: len(panel.curve()[0]) >= 2, timeout=TIMEOUT)
    w.close()
    assert not live_workers()
    names = {p.name for p in (out / "checkpoint").iterdir()}
    assert {"config.json", "model.safetensors", "schedule.json", "train_state.json",
            "train_state.safetensors"} <= names
    saved = json.loads((out / "checkpoint" / "train_state.json").read_text())["step"]
    assert saved >= 2
    trainer = train(replace(cfg, steps=saved + 2), resume=True)
    assert trainer.step == saved
    assert next(trainer).step == saved + 1
    list(trainer)
    list(train(replace(cfg, out=str(tmp_path / "ref"), steps=saved + 2)))
    _same_tensors(out, tmp_path / "ref")


def test_an_output_place_that_can_never_be_written_is_one_line_and_nothing_starts(window, qtbot, images, tmp_path):
    panel = window.train_panel
    (tmp_path / "notes.txt").write_text("x")
    _setup(panel, images, tmp_path / "notes.txt" / "run", steps=3)
    with qtbot.assertNotEmitted(panel.runStarted):
        with qtbot.waitSignal(panel.runFailed, timeout=5000) as failed:
            assert not panel.start()
    msg = failed.args[0]
    assert "notes.txt is a file, not a folder" in msg and "\n" not in msg and window.last_error == msg
    assert not panel.running and panel.runner.current is None and panel.runner.runs_started == 0
    assert panel.startButton.isEnabled() and panel.status_text == msg


@pytest.mark.skipif(not hasattr(WorkerRunner, "warned"), reason="needs the worker's warning relay (runner.warned)")
def test_a_warning_while_training_is_one_line_in_the_status(window, qtbot, images, tmp_path, monkeypatch):
    import core.train
    real = core.train.Trainer._update_ema

    def noisy(self):
        warnings.warn("something odd in a library\n  with a second line", UserWarning)
        return real(self)
    monkeypatch.setattr(core.train.Trainer, "_update_ema", noisy)
    panel = window.train_panel
    _setup(panel, images, tmp_path / "run", steps=2)
    with qtbot.waitSignal(panel.runEnded, timeout=TIMEOUT):
        panel.start()
    text = panel.status_text
    assert text.startswith("Done: 2 steps") and "\n" not in text
    assert text.count("something odd in a library") == 1 and "second line" not in text
    assert "skipped 1 file" in text  # the data loader's warning, the same way


def test_resuming_a_run_from_another_session_shows_its_history(window, qtbot, images, tmp_path):
    """A checkpoint written by core (as `ddpm train` would) resumes in the panel: the curve starts with the run's
    saved history (means of 10 steps), then every new step, with the losses of one uninterrupted run."""
    panel = window.train_panel
    out = tmp_path / "run"
    _setup(panel, images, out, steps=12)
    cfg = panel.config()
    list(train(cfg))  # 12 steps headless: history [10, mean of steps 1…10], checkpoint at step 12
    panel.select_data("builtin:mnist")
    panel.sizeCombo.setCurrentIndex(panel.sizeCombo.findData("base"))
    panel.batchSpin.setValue(64)
    panel.set_out(out)
    assert panel.resumeButton.isEnabled() and "finished at step 12" in panel.runInfo.text()
    # the run keeps its recipe when resumed, and the panel shows that recipe rather than its last values
    assert (panel.data_spec(), panel.resolutionSpin.value(), panel.sizeCombo.currentData(),
            panel.batchSpin.value()) == (str(images), 8, "tiny", 2)
    panel.stepsSpin.setValue(14)
    with qtbot.waitSignal(panel.runEnded, timeout=TIMEOUT):
        qtbot.mouseClick(panel.resumeButton, Qt.MouseButton.LeftButton)
    steps, raw, _ = panel.curve()
    ref_steps, ref_loss, _, _ = _core_run(replace(cfg, out=str(tmp_path / "ref"), steps=14))
    np.testing.assert_array_equal(steps, [10, 13, 14])
    np.testing.assert_allclose(raw, [ref_loss[:10].mean(), ref_loss[12], ref_loss[13]], rtol=1e-5)
    assert "Done: 14 steps" in panel.status_text


def test_bad_input_is_one_line_and_the_dataset_is_remembered(qtbot, images, tmp_path):
    settings = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    w = MainWindow(settings=settings)
    qtbot.addWidget(w)
    panel = w.train_panel
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    _setup(panel, empty, tmp_path / "run", steps=3)
    with qtbot.waitSignal(panel.runEnded, timeout=TIMEOUT):
        with qtbot.waitSignal(panel.runFailed, timeout=TIMEOUT) as failed:
            panel.start()
    msg = failed.args[0]
    assert "no readable images" in msg and "\n" not in msg and w.last_error == msg
    assert not panel.running and panel.startButton.isEnabled()
    assert not (tmp_path / "run" / "checkpoint").exists()

    panel.set_out("")
    assert not panel.start() and "output folder" in panel.status_text
    panel.select_data(str(images))
    w.close()

    w2 = MainWindow(settings=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(w2)
    p2 = w2.train_panel
    assert p2.data_spec() == str(images)  # the chosen folder comes back selected
    folders = [p2.dataCombo.itemData(i)[1] for i in range(p2.dataCombo.count())
               if (p2.dataCombo.itemData(i) or (None,))[0] == "folder"]
    assert folders == [str(images), str(empty)]
    assert p2.resolutionSpin.value() == 8 and p2.sizeCombo.currentData() == "tiny"
    w2.close()


def test_every_control_has_a_name_and_a_tooltip(window):
    panel = window.train_panel
    says = {  # each control's tooltip says what it does
        "trainDatasetCombo": "built-in MNIST digits or a folder of images",
        "trainResolutionSpin": "Image size the model trains at",
        "trainModelSizeCombo": "UNet size: tiny and small train in minutes on a CPU",
        "trainStepsSpin": "Total optimizer steps of the run",
        "trainBatchSpin": "Images per optimizer step",
        "trainSampleEverySpin": "deterministic DDIM, 25 steps, the same seed each time",
        "trainDeviceCombo": "Where training runs: auto = CUDA (bf16/fp16 autocast), then MPS, then CPU (fp32)",
        "trainOutEdit": "checkpoint/ (resumable), samples/step_N.png and, at the end, model/",
        "trainOutBrowseButton": "Choose the output folder",
        "trainStartButton": "Train a new model in the output folder",
        "trainStopButton": "Stop after the step in flight and save a resumable checkpoint",
        "trainResumeButton": "Continue the run in the output folder exactly where its checkpoint left off",
        "trainUseModelButton": "in the Generate panel",
        "trainProgress": "Optimizer steps done / total",
        "trainLossPlot": "its mean over the 51 steps around each step",
        "trainStatus": "The loss as `ddpm train` prints it",
    }
    for name, text in says.items():
        w = panel.findChild(QWidget, name)
        assert w is not None and text in w.toolTip(), name
    assert panel.sampleView.objectName() == "trainSampleView"
    assert "A grid of samples from the EMA weights" in panel.sampleView.view.toolTip()
    tips = [panel.sizeCombo.itemData(i, Qt.ItemDataRole.ToolTipRole) for i in range(panel.sizeCombo.count())]
    assert tips[0] == "tiny: base 16 channels, multipliers (1, 2, 2), no attention in the res-blocks"
    assert not panel.stopButton.isEnabled() and not panel.resumeButton.isEnabled()  # a fresh output folder


@pytest.mark.skipif(not hasattr(WorkerRunner, "warned"), reason="needs the worker's warning relay (runner.warned)")
def test_skipped_files_are_said_once_when_the_loaders_warning_arrives_too(window, qtbot, images, tmp_path):
    # this time the data loader's warning is relayed too (the module's mark ignores it; pytest restores the filters)
    warnings.filterwarnings("always", message=".*could not be read as images", category=UserWarning)
    panel = window.train_panel
    _setup(panel, images, tmp_path / "run", steps=2)
    with qtbot.waitSignal(panel.runEnded, timeout=TIMEOUT):
        panel.start()
    text = panel.status_text
    assert text.startswith("Done: 2 steps") and "\n" not in text
    assert text.count("skipped 1 file") == 1 and f"{images}: skipped 1 file" in text and "(notes.png)" in text


def test_a_hand_edited_list_of_folders_never_breaks_the_dataset_menu(qtbot, images, tmp_path):
    settings = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)

    def folders():
        w = MainWindow(settings=settings)
        qtbot.addWidget(w)
        combo = w.train_panel.dataCombo
        out = [combo.itemData(i)[1] for i in range(combo.count()) if (combo.itemData(i) or (None,))[0] == "folder"]
        w.close()
        return out
    for broken in ("[[[", '{"a": 1}', "[" * 5000 + "]" * 5000):
        settings.setValue("train/recentFolders", broken)
        assert folders() == []
    settings.setValue("train/recentFolders", json.dumps([str(images), 7, "", str(images), str(tmp_path)]))
    assert folders() == [str(images), str(tmp_path)]  # text entries only, each once
    settings.setValue("train/recentFolders", json.dumps([f"/data/{i}" for i in range(12)]))
    assert folders() == [f"/data/{i}" for i in range(8)]  # at most eight
