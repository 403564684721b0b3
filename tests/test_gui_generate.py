"""The Generate panel against the headless sampler: the frames and the final image of a run in the window equal
core.samplers.sample's (and `ddpm sample`'s) for the same model, sampler, steps and seed; Cancel stops within one
model call; closing mid-run exits cleanly; a worker exception is shown; exports write one frame per step."""
import gc
import os
import subprocess
import sys
import textwrap
import threading
import time
import weakref

import numpy as np
import pytest
import torch

pytest.importorskip("pytestqt")
from PIL import Image  # noqa: E402
from PySide6.QtCore import QSettings, Qt  # noqa: E402
from PySide6.QtWidgets import QWidget  # noqa: E402

from core.images import batch_grid, load_image, photo_to_model_input, save_image  # noqa: E402
from core.models.denoiser import Denoiser  # noqa: E402
from core.models.load import load_model  # noqa: E402
from core.samplers import sample  # noqa: E402
from core.schedule import NoiseSchedule  # noqa: E402
from ddpm_gui import generate_panel as gp  # noqa: E402
from ddpm_gui import widgets  # noqa: E402
from ddpm_gui.main_window import MainWindow  # noqa: E402
from ddpm_gui.worker import live_workers  # noqa: E402
from conftest import save_tiny_unet  # noqa: E402

TIMEOUT = 30_000


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors: one thread (conftest)


@pytest.fixture
def window(qtbot):
    w = MainWindow()
    qtbot.addWidget(w)
    w.show()
    w.show_panel(w.generate_panel)
    yield w
    w.close()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A tiny random class-conditional UNet saved as a model folder, trained schedule = Ho et al.'s linear."""
    return save_tiny_unet(tmp_path_factory.mktemp("models") / "tiny", T=1000, num_classes=3)


@pytest.fixture(scope="module")
def small_photo(tmp_path_factory):
    rng = np.random.default_rng(3)
    path = tmp_path_factory.mktemp("photos") / "square.png"
    save_image(path, rng.integers(0, 256, (12, 12, 3), dtype=np.uint8))
    return path


class SlowDenoiser(Denoiser):
    """Sleeps in every model call and counts calls; raises on call ``fail_at`` (for the error path)."""

    def __init__(self, delay=0.02, fail_at=None):
        super().__init__(resolution=4, channels=1, prediction_type="epsilon",
                         schedule=NoiseSchedule.preset("linear", T=1000), name="slow")
        self.delay, self.fail_at, self.calls = delay, fail_at, 0
        self.calls_lock = threading.Lock()
        self.inputs = []  # weak references to every x_t the sampler passed in (to check the run frees them)

    def model_output(self, x_t, t, class_labels=None, schedule=None):
        with self.calls_lock:
            self.calls += 1
            n = self.calls
            self.inputs.append(weakref.ref(x_t))
        if self.fail_at is not None and n >= self.fail_at:
            raise RuntimeError("the GPU caught fire\nTraceback details nobody needs")
        time.sleep(self.delay)
        return torch.zeros_like(x_t)


def use_slow_model(monkeypatch, panel, den):
    real = gp.load_model
    monkeypatch.setattr(gp, "load_model", lambda spec, device="cpu", **kw: den if spec == "/slow" else real(
        spec, device=device, **kw))
    panel.select_model("/slow")


def run(qtbot, panel, signal="runFinished"):
    with qtbot.waitSignal(panel.runEnded, timeout=TIMEOUT):
        with qtbot.waitSignal(getattr(panel, signal), timeout=TIMEOUT) as blocker:
            qtbot.mouseClick(panel.generateButton, Qt.MouseButton.LeftButton)
    return blocker.args[0]


def headless(den, schedule, **kw):
    steps = list(sample(den, schedule=schedule, **kw))
    return steps, steps[-1].x_t.numpy()


def test_widgets_have_the_required_names_and_tooltips(window):
    panel = window.generate_panel
    assert window.panelTabs.indexOf(panel) >= 0
    for name in ("modelCombo", "samplerCombo", "stepsSpin", "seedSpin", "generateButton", "cancelButton",
                 "etaSpin", "diceButton", "batchSpin", "deviceCombo", "classCombo", "guidanceSpin", "startCombo",
                 "timelineSlider", "replayButton", "exportButton", "followTimestepCheck", "generateProgress"):
        w = panel.findChild(QWidget, name)
        assert w is not None, name
        assert w.toolTip(), f"{name} has no tooltip"
    assert panel.generateButton.isEnabled() and not panel.cancelButton.isEnabled()
    assert not panel.timelineSlider.isEnabled() and not panel.exportButton.isEnabled()  # nothing recorded yet


def test_tiny_model_run_equals_the_headless_sampler_frame_by_frame(window, qtbot, tiny_model, tmp_path):
    panel = window.generate_panel
    panel.select_model(str(tiny_model))
    panel.samplerCombo.setCurrentIndex(panel.samplerCombo.findData("ddpm"))
    panel.stepsSpin.setValue(12)
    panel.seedSpin.setValue(7)
    panel.batchSpin.setValue(4)
    with qtbot.waitSignal(panel.runStarted, timeout=TIMEOUT):
        qtbot.mouseClick(panel.generateButton, Qt.MouseButton.LeftButton)
    assert not panel.generateButton.isEnabled() and panel.cancelButton.isEnabled()
    with qtbot.waitSignal(panel.runEnded, timeout=TIMEOUT):
        pass
    final = panel.recording.final
    assert panel.generateButton.isEnabled() and not panel.cancelButton.isEnabled()

    den = load_model(str(tiny_model))
    steps, expected = headless(den, den.schedule, sampler="ddpm", steps=12, seed=7, n=4)
    assert np.array_equal(final, expected)
    rec = panel.recording
    assert [f.index for f in rec.frames] == list(range(1, 13)) and [f.t for f in rec.frames] == [s.t for s in steps]
    for f, s in zip(rec.frames, steps):
        assert np.array_equal(f.xt, batch_grid(s.x_t)) and np.array_equal(f.x0, batch_grid(s.x0_pred))
    assert np.array_equal(panel.xtPane.image, batch_grid(steps[-1].x_t))   # the last frame is on screen
    assert panel.status_text.startswith("Done: 12 steps") and panel.progressBar.value() == 12

    # the same run with `ddpm sample`: the exported final PNG has its pixels
    from core.cli import main as ddpm
    cli_png, gui_png = tmp_path / "cli.png", tmp_path / "gui.png"
    assert ddpm(["sample", "--model", str(tiny_model), "--sampler", "ddpm", "--steps", "12", "--seed", "7",
                 "--n", "4", "--device", "cpu", "-o", str(cli_png)]) == 0
    assert panel.export("final", gui_png)
    assert np.array_equal(np.asarray(Image.open(gui_png)), np.asarray(Image.open(cli_png)))

    # the slider and the schedule marker followed t; the timeline replays every step
    assert window.timestep == rec.frames[-1].t
    assert panel.timelineSlider.isEnabled() and panel.timelineSlider.maximum() == 11
    panel.show_frame(3)
    assert np.array_equal(panel.xtPane.image, rec.frames[3].xt) and np.array_equal(panel.x0Pane.image, rec.frames[3].x0)
    assert window.timestep == rec.frames[3].t
    qtbot.waitUntil(lambda: round(window.schedule_panel.marker.value()) == rec.frames[3].t, timeout=5000)


def test_class_and_guidance_reach_the_sampler(window, qtbot, tiny_model):
    panel = window.generate_panel
    with qtbot.waitSignal(panel.modelReady, timeout=TIMEOUT):
        panel.select_model(str(tiny_model))
    assert panel.classCombo.isVisible() and panel.classCombo.count() == 2 + 3
    panel.classCombo.setCurrentIndex(panel.classCombo.findData("each"))
    panel.guidanceSpin.setValue(2.5)
    panel.samplerCombo.setCurrentIndex(panel.samplerCombo.findData("dpmpp2m"))
    panel.stepsSpin.setValue(5)
    panel.batchSpin.setValue(3)
    final = run(qtbot, panel)
    den = load_model(str(tiny_model))
    _, expected = headless(den, den.schedule, sampler="dpmpp2m", steps=5, seed=0, n=3, class_labels=[0, 1, 2],
                           guidance=2.5)
    assert np.array_equal(final, expected)


def test_oracle_over_the_photo_and_denoise_from_here_equal_the_headless_sampler(window, qtbot, small_photo):
    panel = window.generate_panel
    assert window.open_image(small_photo)
    panel.select_model("photo")
    panel.samplerCombo.setCurrentIndex(panel.samplerCombo.findData("ddim"))
    panel.stepsSpin.setValue(8)
    panel.etaSpin.setValue(0.5)
    panel.seedSpin.setValue(11)
    final = run(qtbot, panel)
    oracle = load_model(f"oracle:{small_photo}")
    _, expected = headless(oracle, window.schedule, sampler="ddim", steps=8, eta=0.5, seed=11)
    assert np.array_equal(final, expected)
    assert np.abs(final - load_image(small_photo).transpose(2, 0, 1)[None]).max() < 0.05  # the oracle memorises

    window.set_timestep(250)
    panel.set_start("here")
    final = run(qtbot, panel)
    _, expected = headless(oracle, window.schedule, sampler="ddim", steps=8, eta=0.5, seed=11,
                           x_start=photo_to_model_input(load_image(small_photo), oracle.resolution, oracle.channels),
                           t_start=250)
    assert np.array_equal(final, expected)
    assert panel.recording.frames[0].t == 250


def test_cancel_stops_within_one_model_call_and_re_enables_generate(window, qtbot, monkeypatch):
    panel = window.generate_panel
    den = SlowDenoiser(delay=0.02)
    use_slow_model(monkeypatch, panel, den)
    panel.samplerCombo.setCurrentIndex(panel.samplerCombo.findData("ddpm"))   # 1000 steps: ~20 s if not cancelled
    with qtbot.waitSignal(panel.stepPainted, timeout=TIMEOUT, check_params_cb=lambda i: i >= 5):
        qtbot.mouseClick(panel.generateButton, Qt.MouseButton.LeftButton)
    with qtbot.waitSignal(panel.runCancelled, timeout=5000) as blocker:
        calls_at_click = den.calls
        t0 = time.perf_counter()
        qtbot.mouseClick(panel.cancelButton, Qt.MouseButton.LeftButton)
        assert panel.status_text.startswith("Cancelling")          # the click is answered at once
        assert not panel.cancelButton.isEnabled()
    elapsed = time.perf_counter() - t0
    n = blocker.args[0]
    assert den.calls - calls_at_click <= 1                          # at most the call in progress finished
    assert n == den.calls and elapsed < 2.0
    qtbot.waitUntil(lambda: panel.generateButton.isEnabled(), timeout=5000)
    assert not panel.cancelButton.isEnabled() and not panel.running
    assert panel.status_text == f"cancelled at step {n}/1000"
    assert len(panel.recording) == n and panel.timelineSlider.isEnabled()   # the partial run can be replayed
    gc.collect()
    assert den.inputs and all(r() is None for r in den.inputs)     # the run's tensors are freed (on a GPU too)
    calls = den.calls
    time.sleep(0.1)
    assert den.calls == calls                                       # it really stopped

    # the next run is not affected by the earlier cancel
    panel.stepsSpin.setValue(3)
    run(qtbot, panel)
    assert den.calls == calls + 3 and panel.status_text.startswith("Done: 3 steps")


def test_a_worker_exception_is_shown_as_one_line(window, qtbot, monkeypatch):
    panel = window.generate_panel
    use_slow_model(monkeypatch, panel, SlowDenoiser(delay=0.0, fail_at=3))
    message = run(qtbot, panel, signal="runFailed")
    assert message == "the GPU caught fire (RuntimeError)"
    assert panel.statusLabel.text() == message and window.last_error == message
    assert panel.generateButton.isEnabled() and not panel.cancelButton.isEnabled()
    assert len(panel.recording) == 2                                # the two steps before the failure


def test_bad_input_is_one_line_and_nothing_is_lost(window, qtbot, tiny_model):
    panel = window.generate_panel
    panel.select_model(str(tiny_model))
    panel.samplerCombo.setCurrentIndex(panel.samplerCombo.findData("dpmpp2m"))
    window.set_timestep(0)
    panel.set_start("here")                                         # DPM-Solver++ cannot start at t = 0
    message = run(qtbot, panel, signal="runFailed")
    assert "t_start" in message and "\n" not in message
    panel.select_model(str(tiny_model.parent / "missing"))
    message = run(qtbot, panel, signal="runFailed")
    assert "no such model folder" in message
    assert panel.generateButton.isEnabled()


def test_exports_write_one_frame_per_recorded_step_atomically(window, qtbot, tiny_model, tmp_path):
    panel = window.generate_panel
    panel.select_model(str(tiny_model))
    panel.samplerCombo.setCurrentIndex(panel.samplerCombo.findData("ddim"))
    panel.stepsSpin.setValue(9)
    panel.batchSpin.setValue(2)
    run(qtbot, panel)
    n = len(panel.recording)
    assert n == 9
    assert panel.export("gif", tmp_path / "run.gif")
    with Image.open(tmp_path / "run.gif") as im:
        assert im.n_frames == n and im.size[1] >= 256
    assert panel.export("apng", tmp_path / "run.png")
    with Image.open(tmp_path / "run.png") as im:
        assert getattr(im, "n_frames", 1) == n
    assert panel.export("grid", tmp_path / "grid.png")
    assert panel.export("frames", tmp_path / "frames")
    names = sorted(p.name for p in (tmp_path / "frames").iterdir())
    assert names == sorted([f"frame_{i:04d}.png" for i in range(1, n + 1)] + ["final.png"])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]    # no temporary files left behind
    # a folder of other files is never replaced; a bad path is one line
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert not panel.export("frames", tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    assert not panel.export("gif", tmp_path / "nope" / "run.gif")
    assert "nope" in window.last_error and "\n" not in window.last_error


def test_builtin_entry_explains_until_installed_and_model_folders_are_remembered(qtbot, monkeypatch, tmp_path,
                                                                                   tiny_model):
    monkeypatch.setattr(widgets, "builtin_models", lambda: [])
    settings = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    w = MainWindow(settings=settings)
    qtbot.addWidget(w)
    panel = w.generate_panel
    i = panel.modelCombo.findData("builtin:mnist")
    assert "not installed" in panel.modelCombo.itemText(i) and not panel.modelCombo._enabled(i)
    assert "not installed" in panel.modelCombo.itemData(i, Qt.ItemDataRole.ToolTipRole)
    assert panel.current_model() == (gp.ORACLE, "oracle:builtin:mnist")        # a model that works
    monkeypatch.setattr(widgets, "builtin_models", lambda: ["builtin:mnist"])
    panel.modelCombo._refresh_builtins()                                       # what opening the list does
    assert panel.modelCombo._enabled(i) and "not installed" not in panel.modelCombo.itemText(i)
    panel.select_model(str(tiny_model))
    w.close()
    w2 = MainWindow(settings=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(w2)
    assert w2.generate_panel.modelCombo.findData(str(tiny_model)) >= 0
    w2.close()


def test_closing_the_window_mid_run_exits_cleanly():
    """In a subprocess, so a 'QThread: Destroyed while thread is still running' abort fails the test instead of
    killing pytest."""
    script = textwrap.dedent("""
        import sys, time, torch
        from PySide6.QtCore import QEventLoop, QTimer
        from PySide6.QtWidgets import QApplication
        from core.models.denoiser import Denoiser
        from core.schedule import NoiseSchedule
        from ddpm_gui import generate_panel as gp
        from ddpm_gui.main_window import MainWindow
        from ddpm_gui.worker import live_workers

        class Slow(Denoiser):
            def model_output(self, x_t, t, class_labels=None, schedule=None):
                time.sleep(0.02)
                return torch.zeros_like(x_t)

        den = Slow(resolution=4, channels=1, schedule=NoiseSchedule.preset("linear", T=1000), name="slow")
        gp.load_model = lambda spec, device="cpu", **kw: den
        app = QApplication([])
        w = MainWindow()
        w.show()
        p = w.generate_panel
        p.select_model("/slow")
        p.samplerCombo.setCurrentIndex(p.samplerCombo.findData("ddpm"))
        loop = QEventLoop()
        p.stepPainted.connect(lambda i: i >= 3 and loop.quit())
        QTimer.singleShot(20000, loop.quit)
        p.generate()
        loop.exec()
        assert p.running, "the run should still be going"
        w.close()
        assert not live_workers(), live_workers()
        del w
        app.processEvents()
        print("closed cleanly")
    """)
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "closed cleanly" in out.stdout
    assert "QThread" not in out.stderr and "Traceback" not in out.stderr
    assert not live_workers()


def test_a_long_run_keeps_every_kth_step_within_its_memory_budget_first_and_last_included():
    from core.jobs.generate import Recording, RunFrame
    frame_bytes = 2 * 1 * 10 * 10
    rec = Recording(budget=20 * frame_bytes)
    for i in range(1, 101):
        rec.add(RunFrame(i, 100, 1000 - 10 * i, np.full((1, 1, 10, 10), i, np.uint8),
                         np.zeros((1, 1, 10, 10), np.uint8), i * 0.01))
    rec.close()
    idx = [f.index for f in rec.frames]
    assert idx[0] == 1 and idx[-1] == 100
    assert rec.stride == 8 and idx[:-1] == list(range(1, 101, 8))
    assert rec.nbytes <= 20 * frame_bytes + frame_bytes
    assert [int(f.xt[0, 0, 0]) for f in rec.frames] == idx       # each kept frame is that step's picture


def test_autoguidance_spin_follows_a_guided_model_and_its_run_equals_the_sampler(window, qtbot, tiny_model,
                                                                                  tmp_path):
    from core.models.autoguidance import set_weight, write_autoguided
    guide = save_tiny_unet(tmp_path / "guide", T=1000, num_classes=3, seed=1)
    guided = write_autoguided(tmp_path / "guided", tiny_model, guide, 2.0)
    panel = window.generate_panel
    panel.select_model(str(tiny_model))
    qtbot.waitUntil(lambda: panel._loaded_model() is not None, timeout=TIMEOUT)
    assert not panel.autoguidanceSpin.isVisibleTo(panel)   # a model without a guide: no spin
    panel.select_model(str(guided))
    qtbot.waitUntil(lambda: panel.autoguidanceSpin.isVisibleTo(panel), timeout=TIMEOUT)
    assert panel.autoguidanceSpin.value() == 2.0 and "autoguidance w = 2" in panel.modelNote.text()
    assert panel.autoguidanceSpin.toolTip()
    panel.autoguidanceSpin.setValue(1.5)
    panel.samplerCombo.setCurrentIndex(panel.samplerCombo.findData("ddim"))
    panel.stepsSpin.setValue(6)
    panel.seedSpin.setValue(3)
    panel.batchSpin.setValue(2)
    with qtbot.waitSignal(panel.runEnded, timeout=TIMEOUT):
        qtbot.mouseClick(panel.generateButton, Qt.MouseButton.LeftButton)
    den = load_model(str(guided))
    _, expected = headless(set_weight(den, 1.5), den.schedule, sampler="ddim", steps=6, seed=3, n=2)
    assert np.array_equal(panel.recording.final, expected)
    _, own = headless(den, den.schedule, sampler="ddim", steps=6, seed=3, n=2)
    assert not np.array_equal(own, expected)   # the spin's weight was used, not the folder's 2.0
