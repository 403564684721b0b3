"""Faults in the window (issue 13): closing never crashes or hangs whatever a worker is doing; a large photo opens
on a worker without stalling the UI; no exception from a file escapes (one line, the previous state kept); no export
overwrites an input; a worker's Python warnings reach the status bar as one line."""
import os
import struct
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import numpy as np
import pytest

pytest.importorskip("pytestqt")
from PIL import Image  # noqa: E402
from PySide6.QtCore import QSettings, QTimer  # noqa: E402

from core.images import load_image, save_image  # noqa: E402
from core.schedule import NoiseSchedule  # noqa: E402
from ddpm_gui.main_window import MainWindow  # noqa: E402
from ddpm_gui.worker import live_workers  # noqa: E402
from conftest import save_tiny_unet  # noqa: E402

TIMEOUT = 60_000
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # fixtures: tests/conftest.py


def gradient(h, w):
    img = np.empty((h, w, 3), np.uint8)
    img[..., 0] = np.linspace(0, 255, w).astype(np.uint8)[None, :]
    img[..., 1] = np.linspace(0, 255, h).astype(np.uint8)[:, None]
    img[..., 2] = 90
    return img


def crafted_dds(path):
    """A file Pillow takes for a DDS texture with an unknown pixel format: Image.open raises NotImplementedError."""
    header = struct.pack("<3I", 0x1007, 4, 4) + bytes(56) + struct.pack("<4I", 32, 0, 0, 0) + bytes(36)
    path.write_bytes(b"DDS " + struct.pack("<I", 124) + header)
    return path


def one_line(text):
    return bool(text) and "\n" not in text and "Traceback" not in text


# ----- 1. closing ---------------------------------------------------------------------------------------------
CLOSE_SCRIPT = textwrap.dedent("""
    import sys, time
    import numpy as np, torch
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication
    from core.models.denoiser import Denoiser
    from core.schedule import NoiseSchedule
    from ddpm_gui import app as ddpm_gui_app, generate_panel as gp
    from ddpm_gui.worker import live_workers

    mode = sys.argv[1]
    block = {"on": False}
    closed = []

    class Slow(Denoiser):
        def model_output(self, x_t, t, class_labels=None, schedule=None):
            time.sleep(30 if block["on"] else 0.02)   # 30 s: one model call that cannot be interrupted
            return torch.zeros_like(x_t)

    den = Slow(resolution=4, channels=1, schedule=NoiseSchedule.preset("linear", T=1000), name="slow")
    real_load = gp.load_model

    def load_model(spec, device="cpu", **kw):
        if mode == "load":
            time.sleep(30)                             # a model load stuck on a slow disk
        elif mode == "load-native":                    # 30 s inside torch's and safetensors' native code
            end = time.monotonic() + 30
            while time.monotonic() < end:
                real_load("builtin:mnist")
        return den

    gp.load_model = load_model
    qapp = QApplication([])

    def window():
        return next(w for w in qapp.topLevelWidgets() if w.objectName() == "mainWindow")

    def close():
        if closed:
            return
        closed.append(1)
        print("running:", sorted(x.name for x in live_workers() if x.isRunning()), flush=True)
        t0 = time.monotonic()
        window().close()                               # the last window: the app quits
        print(f"close took {time.monotonic() - t0:.2f} s", flush=True)
        print(f"exiting at {time.time():.3f}", flush=True)

    def drive():
        w = window()
        p = w.generate_panel
        if mode.startswith("load"):
            p.select_model("/slow")                    # preloads on a worker
            QTimer.singleShot(800, close)
        elif mode.startswith("generate"):
            p.select_model("/slow")
            p.samplerCombo.setCurrentIndex(p.samplerCombo.findData("ddpm"))
            def painted(i):
                if i >= 3 and not block["on"]:
                    block["on"] = mode == "generate-blocked"
                    QTimer.singleShot(200, close)
            p.stepPainted.connect(painted)
            QTimer.singleShot(300, p.generate)
        elif mode == "chain":
            rng = np.random.default_rng(0)
            w.set_image_array(rng.random((700, 700, 3), dtype=np.float32) * 2 - 1, "noise")   # a long walk
            w.set_mode("chain")
            w.frameShown.connect(lambda t: 0 < t < 999 and QTimer.singleShot(0, close))
            w.set_timestep(999)

    QTimer.singleShot(0, drive)
    QTimer.singleShot(60000, close)                    # a watchdog, not a wait
    sys.exit(ddpm_gui_app.main([]))                    # the real `ddpm-gui`
""")


@pytest.mark.parametrize("mode, busy", [("load", "generate-model"), ("load-native", "generate-model"),
                                        ("generate", "generate"), ("generate-blocked", "generate"),
                                        ("chain", "markov-chain")])
def test_closing_exits_cleanly_within_a_second_or_two_whatever_a_worker_is_doing(mode, busy, tmp_path):
    """``ddpm-gui`` in a subprocess, so an abort ('QThread: Destroyed while thread is still running', or C++'s
    'terminate called' when a daemon thread comes back from torch while Python finalizes) fails the test. A worker
    stuck for 30 s in one call (a model load, a model call) is abandoned; one that yields stops at its next yield."""
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", OMP_NUM_THREADS="1",
               DDPM_STUDIO_SETTINGS=str(tmp_path / "ddpm-gui.ini"))
    proc = subprocess.run([sys.executable, "-c", CLOSE_SCRIPT, mode], capture_output=True, text=True,
                          timeout=120, env=env)
    ended = time.time()
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    for bad in ("Destroyed while thread", "QThread", "Traceback", "Fatal", "Abort", "terminate called"):
        assert bad not in proc.stderr, proc.stderr[-2000:]
    out = proc.stdout
    assert f"'{busy}'" in out.split("running:")[1].splitlines()[0], out      # the worker really was busy
    assert float(out.split("close took")[1].split()[0]) < 2.5, out
    assert ended - float(out.split("exiting at")[1].split()[0]) < 5.0, out   # no wait for the 30-s call
    assert (tmp_path / "ddpm-gui.ini").is_file()                              # the settings were saved


# ----- 2. a large photo opens on a worker -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def big_png(tmp_path_factory):
    path = tmp_path_factory.mktemp("big") / "big.png"
    Image.fromarray(gradient(6000, 6000)).save(path, compress_level=1)
    return path


@pytest.fixture
def frozen_heap():
    """As ``ddpm-gui`` does after start-up (gc.freeze): the ~220,000 objects of the loaded libraries and the window
    are left out of full garbage collections, which would otherwise stall the UI thread ~200 ms each, whatever it
    is doing. Unfrozen afterwards, so this test process collects its windows as before."""
    import gc
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


def runqueue_seconds() -> float:
    """How long this thread has waited, runnable, for a CPU (Linux schedstat): time another busy process took,
    not time this process made the UI wait. 0 where the kernel does not say."""
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0


def test_a_large_photo_opens_on_a_worker_while_the_ui_keeps_running(window, qtbot, big_png, frozen_heap):
    """A 10-ms heartbeat on the UI thread while a 6000×6000 PNG opens. A stall is the time between two beats less
    the time the UI thread sat in the kernel's run queue (on this shared 2-core machine other jobs take the cores);
    what is left is what this process made the UI wait: its own work on the UI thread, or the GIL held by the
    worker. It must stay under 100 ms; the plain wall-clock gap (what a user would see on a machine this busy) under
    half a second. Reading and converting the photo on the UI thread took ~5 s."""
    ticks = []
    heartbeat = QTimer()
    heartbeat.setInterval(10)
    heartbeat.timeout.connect(lambda: ticks.append((time.perf_counter(), runqueue_seconds())))
    heartbeat.start()
    qtbot.wait(100)
    start = (time.perf_counter(), runqueue_seconds())
    loaded = []
    window.photoLoaded.connect(lambda _label: loaded.append(time.perf_counter() - start[0]))
    with qtbot.waitSignal(window.frameShown, timeout=TIMEOUT):
        with qtbot.waitSignal(window.photoLoaded, timeout=TIMEOUT):
            assert window.open_image(big_png) is True          # returns at once: the photo loads on a worker
            assert window.photo_loading and not window.photoBusy.isHidden()
            assert "big.png" in window.statusBar().currentMessage()
    qtbot.wait(300)   # the first paint of the new photo
    heartbeat.stop()
    beats = np.array([start] + [t for t in ticks if t[0] >= start[0]])
    wall = np.diff(beats[:, 0])
    own = wall - np.diff(beats[:, 1])
    print(f"photo shown after {loaded[0]:.2f} s; longest UI stall {own.max() * 1000:.0f} ms "
          f"({wall.max() * 1000:.0f} ms wall clock, {len(beats)} heartbeats)")
    long = [f"{g * 1000:.0f} ms at {t - start[0]:.2f} s" for g, t in zip(own, beats[1:, 0]) if g > 0.05]
    assert own.max() < 0.100, f"the UI stalled {own.max() * 1000:.0f} ms (stalls over 50 ms: {long})"
    assert wall.max() < 0.5
    assert window.x0.shape == (2048, 2048, 3) and window.photo_path == big_png and not window.photo_loading
    assert window.photoBusy.isHidden()
    assert "photo 6000×6000 shown at 2048×2048" in window.statusBar().currentMessage()
    expected = np.asarray(Image.fromarray(gradient(6000, 6000)).resize((2048, 2048), Image.Resampling.LANCZOS))
    assert np.abs(np.round((window.x0 + 1) * 127.5) - expected).mean() < 1.0
    assert window.displayed_image() is not None


def test_a_large_photo_that_fails_to_decode_keeps_the_photo_and_says_why(window, qtbot, tmp_path):
    cut = tmp_path / "cut.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (1000, 1000, 3), dtype=np.uint8)).save(cut)
    cut.write_bytes(cut.read_bytes()[:100_000])          # the header says 1000×1000: opened on a worker
    before, path = window.x0.copy(), window.photo_path
    with qtbot.waitSignal(window.photoFailed, timeout=TIMEOUT) as blocker:
        assert window.open_image(cut) is True
    assert one_line(blocker.args[0]) and "cut.png" in blocker.args[0]
    assert window.last_error == blocker.args[0] and window.statusBar().currentMessage() == blocker.args[0]
    assert np.array_equal(window.x0, before) and window.photo_path == path and window.photoBusy.isHidden()


def test_opening_a_small_photo_while_a_large_one_loads_shows_the_small_one(window, qtbot, big_png, tmp_path):
    small = tmp_path / "small.png"
    Image.fromarray(gradient(40, 60)).save(small)
    assert window.open_image(big_png) and window.photo_loading
    assert window.open_image(small) and not window.photo_loading   # small: shown at once, the large one dropped
    qtbot.waitUntil(lambda: not any(w.name == "photo" and w.isRunning() for w in live_workers()), timeout=TIMEOUT)
    qtbot.wait(50)
    assert window.photo_path == small and np.array_equal(window.x0, load_image(small))


# ----- 3. no exception escapes ----------------------------------------------------------------------------------
@pytest.mark.parametrize("exc", [NotImplementedError("no decoder for this"), struct.error("unpack requires 4 bytes"),
                                 SyntaxError("not a PNG file"), Image.DecompressionBombError("too many pixels"),
                                 OSError("broken data stream"), RecursionError("maximum recursion depth exceeded"),
                                 MemoryError(), KeyError("EXIF")])
def test_whatever_pillow_raises_is_one_line_and_the_photo_stays(window, qtbot, tmp_path, monkeypatch, exc):
    path = tmp_path / "photo.png"
    Image.fromarray(gradient(40, 60)).save(path)
    before, photo = window.x0.copy(), window.photo_path

    def broken(*_a, **_k):
        raise exc
    monkeypatch.setattr(Image, "open", broken)
    with qtbot.waitSignal(window.photoFailed, timeout=5000):
        assert window.open_image(path) is False
    assert one_line(window.last_error) and "photo.png" in window.last_error
    assert window.statusBar().currentMessage() == window.last_error
    assert np.array_equal(window.x0, before) and window.photo_path == photo


def test_a_crafted_file_that_makes_pillow_raise_not_implemented_is_one_line(window, qtbot, tmp_path):
    bad = crafted_dds(tmp_path / "crafted.png")
    with pytest.raises(NotImplementedError):
        Image.open(bad)
    before = window.x0.copy()
    assert window.open_image(bad) is False
    assert one_line(window.last_error) and "crafted.png" in window.last_error
    assert np.array_equal(window.x0, before)


def write_deep_json(path, depth=10_000):
    path.write_text('{"betas": ' + "[" * depth + "]" * depth + "}")
    return path


def test_a_deeply_nested_or_absurd_schedule_file_is_one_line_and_the_schedule_stays(window, qtbot, tmp_path,
                                                                                     monkeypatch):
    panel = window.schedule_panel
    panel.apply_notes_example()
    before = window.schedule
    files = [write_deep_json(tmp_path / "deep.json"),
             tmp_path / "inf.json", tmp_path / "huge.json", tmp_path / "digits.json"]
    files[1].write_text('{"betas": [1e999, 0.5]}')
    files[2].write_text('{"betas": [1' + "0" * 400 + ', 0.5]}')
    files[3].write_text('{"betas": [1' + "0" * 5000 + ', 0.5]}')
    for f in files:
        with qtbot.waitSignal(panel.error, timeout=5000):
            assert panel.load_schedule(f) is False, f
        assert one_line(window.last_error) and f.name in window.last_error, window.last_error
        assert window.schedule is before
    # whatever the parser raises (RecursionError, OverflowError, …) is caught by the panel itself
    for exc in (RecursionError("maximum recursion depth exceeded while decoding a JSON array"),
                OverflowError("int too large to convert to float"), MemoryError()):
        def broken(*_a, exc=exc, **_k):
            raise exc
        monkeypatch.setattr(NoiseSchedule, "load", broken)
        assert panel.load_schedule(files[0]) is False
        assert one_line(window.last_error) and "deep.json" in window.last_error and window.schedule is before


def test_a_settings_file_with_nested_json_opens_the_window_on_its_defaults(qtbot, tmp_path, monkeypatch):
    ini = tmp_path / "ddpm-gui.ini"
    s = QSettings(str(ini), QSettings.Format.IniFormat)
    s.setValue("schedule/json", "[" * 10_000 + "]" * 10_000)
    s.setValue("generate/recentModels", "[" * 10_000 + "]" * 10_000)
    s.sync()

    def broken(*_a, **_k):
        raise RecursionError("maximum recursion depth exceeded")
    monkeypatch.setattr(NoiseSchedule, "from_json", broken)
    w = MainWindow(settings=QSettings(str(ini), QSettings.Format.IniFormat))
    qtbot.addWidget(w)
    assert w.schedule.T == 1000 and w.x0 is not None


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return save_tiny_unet(tmp_path_factory.mktemp("models") / "tiny", T=1000, num_classes=0)


def test_a_crafted_model_folder_or_image_folder_is_one_line_in_generate_and_elbo(window, qtbot, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("[" * 10_000 + "]" * 10_000)
    gp = window.generate_panel
    gp.select_model(str(model))
    with qtbot.waitSignal(gp.runFailed, timeout=TIMEOUT) as blocker:
        gp.generate()
    assert one_line(blocker.args[0]) and one_line(window.last_error)
    qtbot.waitUntil(lambda: gp.modelNote.text().startswith("Cannot load"), timeout=TIMEOUT)
    assert one_line(gp.modelNote.text())

    images = tmp_path / "images"
    images.mkdir()
    crafted_dds(images / "a.png")
    save_image(images / "b.png", gradient(8, 8))
    ep = window.elbo_panel
    window.show_panel(ep)
    ep.select_model("oracle:builtin:mnist")
    ep.select_source(str(images), n=2)
    with qtbot.waitSignal(ep.runFailed, timeout=TIMEOUT) as blocker:
        ep.compute()
    assert one_line(blocker.args[0]) and window.last_error == blocker.args[0]
    assert ep.computeButton.isEnabled() and not ep.running


# ----- 4. exports never overwrite an input ----------------------------------------------------------------------
def test_no_export_of_the_window_overwrites_the_photo_or_the_schedule_file(window, qtbot, tmp_path):
    photo = tmp_path / "photo.png"
    Image.fromarray(gradient(40, 60)).save(photo)
    assert window.open_image(photo)
    original = photo.read_bytes()
    link = tmp_path / "link.png"
    link.symlink_to(photo)
    hard = tmp_path / "hard.png"
    os.link(photo, hard)
    for target in (photo, link, hard):
        assert window.export_strip(target) is False
        assert one_line(window.last_error) and "input" in window.last_error
        with pytest.raises(ValueError, match="input"):
            window.save_screenshot(target)
    panel = window.schedule_panel
    sched = tmp_path / "schedule.json"
    assert panel.save_schedule(sched)
    assert panel.load_schedule(sched)
    saved = sched.read_text()
    sched_link = tmp_path / "schedule-link.json"
    sched_link.symlink_to(sched)
    panel.apply_notes_example()
    for target in (photo, link, sched, sched_link):
        assert panel.save_schedule(target) is False
        assert one_line(window.last_error) and "input" in window.last_error
        assert window.export_strip(target) is False
    assert photo.read_bytes() == original and sched.read_text() == saved
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]    # no temporary file left either
    assert window.export_strip(tmp_path / "strip.png") and panel.save_schedule(tmp_path / "other.json")
    window.save_screenshot(tmp_path / "shot.png")


def test_no_generate_export_overwrites_the_models_files_or_the_photo(window, qtbot, tmp_path, tiny_model):
    photo = tmp_path / "photo.png"
    Image.fromarray(gradient(40, 60)).save(photo)
    assert window.open_image(photo)
    panel = window.generate_panel
    window.show_panel(panel)
    panel.select_model(str(tiny_model))
    panel.stepsSpin.setValue(3)
    with qtbot.waitSignal(panel.runEnded, timeout=TIMEOUT):
        with qtbot.waitSignal(panel.runFinished, timeout=TIMEOUT):
            assert panel.generate()
    weights = next(p for p in tiny_model.iterdir() if p.suffix == ".safetensors")
    kept = {p: p.read_bytes() for p in (weights, tiny_model / "config.json", photo)}
    link = tmp_path / "weights-link.png"
    link.symlink_to(weights)
    for kind in ("gif", "apng", "grid", "final"):
        for target in (weights, link, tiny_model / "config.json", photo):
            assert panel.export(kind, target) is False, (kind, target)
            assert one_line(window.last_error) and "input" in window.last_error
    assert panel.export("frames", tiny_model) is False and "input" in window.last_error
    assert {p: p.read_bytes() for p in kept} == kept
    assert panel.export("grid", tmp_path / "grid.png") and (tmp_path / "grid.png").is_file()


# ----- 5. warnings --------------------------------------------------------------------------------------------
def no_worker_running(qtbot):
    """The window's own start-up runs (the Generate panel's model preload, …) have ended."""
    qtbot.waitUntil(lambda: not any(w.isRunning() for w in live_workers()), timeout=TIMEOUT)


def test_a_workers_warning_is_one_line_in_the_status_bar_not_on_stderr(window, qtbot, capfd):
    no_worker_running(qtbot)
    before = warnings.showwarning
    runner = window.create_runner("demo")

    def job():
        warnings.warn("the sampler clipped x0 at step 3\nsecond line of detail", UserWarning)
        yield 1
        warnings.warn("the sampler clipped x0 at step 3\nsecond line of detail", RuntimeWarning)  # same line: once
        return "ok"
    done, lines = [], []
    runner.warned.connect(lines.append)
    runner.start(job, on_finished=done.append)
    qtbot.waitUntil(lambda: bool(done), timeout=5000)
    qtbot.waitUntil(lambda: bool(lines), timeout=5000)
    assert lines == ["the sampler clipped x0 at step 3"]
    assert window.statusBar().currentMessage() == "demo: warning: the sampler clipped x0 at step 3"
    assert window.last_warning == "demo: warning: the sampler clipped x0 at step 3"
    assert "clipped" not in capfd.readouterr().err
    no_worker_running(qtbot)
    assert warnings.showwarning is before


def test_overlapping_runs_each_get_their_own_warnings_and_the_hook_is_restored(window, qtbot):
    no_worker_running(qtbot)
    # Earlier tests in the same process (libraries imported there) leave warning filters that can hide these
    # warnings; this test is about routing them, so it sees every one (pytest restores the filters afterwards).
    warnings.simplefilter("always")
    before = warnings.showwarning
    a, b = window.create_runner("a"), window.create_runner("b")
    got = {"a": [], "b": []}
    a.warned.connect(got["a"].append)
    b.warned.connect(got["b"].append)
    b_done = threading.Event()
    finished = []

    def first():
        warnings.warn("from A, before B", UserWarning)
        yield
        assert b_done.wait(10)
        warnings.warn("from A, after B", UserWarning)

    def second():
        warnings.warn("from B", UserWarning)
        yield
        b_done.set()

    a.start(first, on_finished=finished.append)
    b.start(second, on_finished=finished.append)
    qtbot.waitUntil(lambda: len(finished) == 2, timeout=10_000)
    qtbot.waitUntil(lambda: len(got["a"]) == 2 and len(got["b"]) == 1, timeout=5000)
    assert got == {"a": ["from A, before B", "from A, after B"], "b": ["from B"]}
    no_worker_running(qtbot)
    assert warnings.showwarning is before
    with warnings.catch_warnings(record=True) as caught:        # the UI thread's warnings are untouched
        warnings.simplefilter("always")
        warnings.warn("on the UI thread", UserWarning)
    assert [str(w.message) for w in caught] == ["on the UI thread"]
