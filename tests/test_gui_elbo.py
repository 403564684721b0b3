"""The ELBO panel against the headless bound: the terms and the total the window shows (and plots) equal
core.vlb.variational_bound's for the same model, images, schedule, variance and seed; a trained model keeps its own
schedule; Cancel stops the run and gives Compute back at once; after a recompute the previous curve stays, faint;
hovering a point names its value and share; errors are one line and lose nothing."""
import threading
import time

import numpy as np
import pytest
import torch

pytest.importorskip("pytestqt")
from PySide6.QtCore import QPointF, Qt  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402
from PySide6.QtWidgets import QWidget  # noqa: E402

from core.data import load_dataset  # noqa: E402
from core.jobs.bound import ElboRun  # noqa: E402
from core.model_spec import cache_key  # noqa: E402
from core.images import from_uint8, load_image, photo_to_model_input, save_image  # noqa: E402
from core.models.denoiser import Denoiser  # noqa: E402
from core.models.load import load_model, oracle_for_array  # noqa: E402
from core.schedule import NoiseSchedule  # noqa: E402
from core.vlb import variational_bound  # noqa: E402
from ddpm_gui.main_window import MainWindow  # noqa: E402
from conftest import save_tiny_unet  # noqa: E402

TIMEOUT = 60_000


def image_for_model(path, resolution, channels):
    """The photo file as ``ddpm elbo --image`` evaluates it (1×C×H×W on the uint8 grid), straight from core.images."""
    return photo_to_model_input(load_image(path), resolution, channels, on_uint8_grid=True)[None]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors: one thread (conftest)


@pytest.fixture(scope="module")
def small_photo(tmp_path_factory):
    rng = np.random.default_rng(7)
    path = tmp_path_factory.mktemp("photos") / "square.png"
    save_image(path, rng.integers(0, 256, (12, 12, 3), dtype=np.uint8))
    return path


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A tiny random unconditional UNet on 8×8 grey images, trained schedule = linear, T = 200."""
    return save_tiny_unet(tmp_path_factory.mktemp("models") / "tiny", T=200, num_classes=0)


@pytest.fixture
def window(qtbot, small_photo):
    w = MainWindow(small_photo)
    qtbot.addWidget(w)
    w.show()
    w.show_panel(w.elbo_panel)
    w.schedule_panel.set_schedule(NoiseSchedule.preset("linear", T=40))
    yield w
    w.close()


def compute(qtbot, panel) -> ElboRun:
    with qtbot.waitSignal(panel.resultReady, timeout=TIMEOUT) as blocker:
        assert panel.compute()
    return blocker.args[0]


def original(item):
    x, y = item.getOriginalDataset()
    return (np.empty(0), np.empty(0)) if x is None else (np.asarray(x), np.asarray(y))


def assert_plot_shows(panel, terms):
    """The plotted points are the terms: L_{t−1} at t for t = 2…T, L_0 at t = 1, L_T at t = T + 1."""
    T = len(terms) - 1
    x, y = original(panel.klCurve)                     # NaN (a break in the line) where log y cannot draw: 0
    np.testing.assert_array_equal(x, np.arange(2, T + 1))
    np.testing.assert_array_equal(y, np.where(terms[1:T] > 0, terms[1:T], np.nan))
    assert original(panel.decoderPoint)[0].tolist() == [1] and original(panel.decoderPoint)[1].tolist() == [terms[0]]
    assert original(panel.priorPoint)[0].tolist() == [T + 1] and original(panel.priorPoint)[1].tolist() == [terms[T]]


def test_the_photo_oracle_bound_equals_core_and_follows_the_window_schedule(qtbot, window, small_photo):
    panel = window.elbo_panel
    panel.select_model("photo")
    panel.select_source("photo")
    panel.set_variance("large")
    panel.seedSpin.setValue(3)
    run = compute(qtbot, panel)

    model = load_model(f"oracle:{small_photo}")
    x0 = image_for_model(small_photo, model.resolution, model.channels)
    ref = variational_bound(model, x0, window.schedule, "large", seed=3)
    assert run.T == 40 and run.any_schedule and run.variance == "large"
    np.testing.assert_allclose(run.per_image, ref.per_image, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(run.terms, ref.terms, rtol=1e-12, atol=1e-15)
    assert panel.result is run
    assert_plot_shows(panel, run.terms)
    assert f"<b>{ref.bits_per_dim:.4g}</b> bits/dim" in panel.totalLabel.text()
    assert "Accepts any schedule" in panel.modelNote.text() and panel.autoCheck.isEnabled()
    assert panel.computeButton.isEnabled() and not panel.cancelButton.isEnabled()
    assert panel.progressBar.value() == panel.progressBar.maximum() == 40


def test_a_trained_model_keeps_its_own_schedule_and_its_dataset_bound_equals_core(qtbot, window, tiny_model):
    panel = window.elbo_panel
    panel.select_model(str(tiny_model))
    panel.select_source("builtin:mnist", n=2)
    panel.seedSpin.setValue(5)                         # (the photo oracle's bound does not depend on the noise)
    run = compute(qtbot, panel)

    model = load_model(str(tiny_model))
    x0 = load_dataset("builtin:mnist", resolution=8, split="heldout", channels=1).images[:2]
    ref = variational_bound(model, x0, seed=5)         # its own schedule (T = 200), its own variance
    assert run.T == 200 and not run.any_schedule and run.per_image.shape == (2, 201)
    np.testing.assert_allclose(run.per_image, ref.per_image, rtol=1e-12, atol=1e-15)
    assert "Tied to its training schedule (linear, T = 200)" in panel.modelNote.text()
    assert not panel.autoCheck.isEnabled()

    window.schedule_panel.set_schedule(NoiseSchedule.preset("cosine", T=40))  # the window's schedule moves …
    again = compute(qtbot, panel)
    np.testing.assert_array_equal(again.terms, run.terms)                   # … this model's bound does not
    assert "tied to its training schedule" in panel.status_text


class SlowDenoiser(Denoiser):
    """Sleeps in every model call and counts calls (so a test can see the run stop)."""

    def __init__(self, delay=0.5):
        super().__init__(resolution=4, channels=1, prediction_type="epsilon",
                         schedule=NoiseSchedule.preset("linear", T=2000), name="slow")
        self.delay, self.calls = delay, 0
        self.lock = threading.Lock()

    def model_output(self, x_t, t, class_labels=None, schedule=None):
        with self.lock:
            self.calls += 1
        time.sleep(self.delay)
        return torch.zeros_like(x_t)


def test_cancel_stops_the_run_and_gives_compute_back_at_once(qtbot, window):
    panel = window.elbo_panel
    panel.select_model("photo")
    first = compute(qtbot, panel)                      # a curve to keep (the photo oracle, T = 40)
    slow = SlowDenoiser()
    panel.select_model("slow-model")
    panel.cache.get(cache_key("slow-model", panel._device()), lambda: slow)  # already "loaded": no file needed
    panel.select_source("photo")
    with qtbot.waitSignal(panel.progressed, timeout=TIMEOUT, check_params_cb=lambda done, total: done > 0):
        assert panel.compute()
    assert panel.running and not panel.computeButton.isEnabled() and panel.cancelButton.isEnabled()
    with qtbot.waitSignal(panel.runCancelled, timeout=TIMEOUT):
        clicked = time.perf_counter()
        qtbot.mouseClick(panel.cancelButton, Qt.MouseButton.LeftButton)
        answered = time.perf_counter() - clicked
        assert panel.computeButton.isEnabled() and not panel.cancelButton.isEnabled() and not panel.running
    assert answered < 0.25                                  # the click is answered at once, not after the batch
    assert "Cancelled" in panel.status_text
    calls = slow.calls
    qtbot.wait(3 * int(slow.delay * 1000))
    assert slow.calls == calls < 16                         # stopped: no model call after the cancel (16 = all)
    assert panel.result is first                            # nothing lost: the curve from before is still shown
    assert_plot_shows(panel, first.terms)


def test_a_recompute_keeps_the_previous_curve_faint_and_shows_how_the_bound_moved(qtbot, window, small_photo):
    panel = window.elbo_panel
    panel.select_model("photo")
    panel.select_source("photo")                      # (with the built-in model installed, the default is its digits)
    panel.set_variance("large")
    first = compute(qtbot, panel)
    assert original(panel.prevCurve)[1].size == 0     # nothing to compare with yet

    window.schedule_panel.set_schedule(NoiseSchedule.preset("cosine", T=40))
    assert "Recompute to see how the bound moves" in panel.status_text
    second = compute(qtbot, panel)
    model = load_model(f"oracle:{small_photo}")
    ref = variational_bound(model, image_for_model(small_photo, model.resolution, model.channels),
                            window.schedule, "large")
    np.testing.assert_allclose(second.terms, ref.terms, rtol=1e-12, atol=1e-15)
    assert abs(second.bits_per_dim - first.bits_per_dim) > 1e-3   # the schedule moved the bound

    assert panel.previous is first and panel.result is second
    assert_plot_shows(panel, second.terms)
    x, y = original(panel.prevCurve)                   # the previous KL curve, drawn …
    np.testing.assert_array_equal(y, np.where(first.terms[1:40] > 0, first.terms[1:40], np.nan))
    assert panel.prevCurve.opts["pen"].color().alpha() < 128 <= panel.klCurve.opts["pen"].color().alpha()  # … faint
    np.testing.assert_array_equal(original(panel.prevPoints)[1], first.terms[[0, 40]])
    assert "previous" in panel.totalLabel.text() and f"{first.bits_per_dim:.4g}" in panel.totalLabel.text()

    panel.autoCheck.setChecked(True)                   # and on every schedule edit, by itself
    with qtbot.waitSignal(panel.resultReady, timeout=TIMEOUT) as blocker:
        window.schedule_panel.set_schedule(NoiseSchedule.preset("linear", T=30))
    assert blocker.args[0].T == 30 and panel.previous is second


def test_hovering_a_point_shows_its_value_and_share_of_the_total(qtbot, window):
    panel = window.elbo_panel
    panel.select_model("photo")
    panel.select_source("photo")                      # (with the built-in model installed, the default is its digits)
    panel.set_variance("large")
    run = compute(qtbot, panel)
    qtbot.wait(50)  # let the plot lay out its new range
    for k in (5, 0, 40):                               # a KL term, L_0 and L_T
        pos = panel.plot.mapFromScene(panel.point_scene_pos(k))
        with qtbot.waitSignal(panel.hovered, timeout=5000, check_params_cb=lambda kk, k=k: kk == k):
            QTest.mouseMove(panel.plot.viewport(), pos)
        share = 100 * run.terms[k] / run.terms.sum()
        text = panel.hoverLabel.text()
        v = run.terms[k]
        assert f"t = {k + 1}:" in text and f"{share:.3g} %" in text
        assert f"<b>{v:.4g}</b>" in text or f"<b>{v:.3e}</b>" in text
        box = panel.hoverText.mapRectToScene(panel.hoverText.boundingRect())   # the box beside the point …
        assert panel.hoverText.isVisible() and 0 < box.width() < 300           # … drawn at screen size …
        assert panel.plot.sceneBoundingRect().contains(box)                    # … inside the plot
    pos = panel.plot.mapFromScene(panel.point_scene_pos(5))
    qtbot.mouseClick(panel.plot.viewport(), Qt.MouseButton.LeftButton, pos=pos)
    qtbot.waitUntil(lambda: window.timestep == 5, timeout=5000)  # L_5 is about x_6: the code's timestep 5
    QTest.mouseMove(panel.plot.viewport(), panel.plot.mapFromScene(panel.plot.sceneBoundingRect().topLeft()
                                                                   + QPointF(2, 2)))
    qtbot.waitUntil(lambda: panel.hover_k is None, timeout=5000)


def test_a_new_pasted_photo_gets_its_own_oracle_even_when_its_array_has_the_old_id(qtbot, window):
    """The photo oracle is cached under the pixels' hash, not id() of the array: Python reuses ids, so a pasted
    photo B could get photo A's oracle. Here B is pasted in A's very array (the same id, for certain)."""
    panel = window.elbo_panel
    rng = np.random.default_rng(11)
    a, b = (from_uint8(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)) for _ in range(2))
    pasted = a.copy()
    window.set_image_array(pasted, "pasted image")
    assert window.photo_path is None and window.x0 is pasted
    panel.select_model("photo")
    panel.select_source("photo")
    panel.set_variance("small")
    compute(qtbot, panel)
    pasted[...] = b
    window.set_image_array(pasted, "pasted image")
    assert window.x0 is pasted                         # the same array object: id() cannot tell A from B
    run = compute(qtbot, panel)
    model = oracle_for_array(b)
    x0 = photo_to_model_input(b, model.resolution, model.channels, on_uint8_grid=True)[None]
    ref = variational_bound(model, x0, window.schedule, "small")
    np.testing.assert_allclose(run.terms, ref.terms, rtol=1e-12, atol=1e-15)   # B's oracle: every KL term 0
    assert np.abs(run.terms[1:-1]).max() < 1e-9


def test_errors_are_one_line_and_keep_the_curve(qtbot, window, tmp_path):
    panel = window.elbo_panel
    panel.select_model("photo")
    first = compute(qtbot, panel)
    empty = tmp_path / "empty"
    empty.mkdir()
    for setup in (lambda: panel.select_source(str(empty), n=2),          # a folder with no images
                  lambda: panel.select_model(str(tmp_path / "no-such-model"))):  # a model that is not there
        setup()
        with qtbot.waitSignal(panel.runFailed, timeout=TIMEOUT) as blocker:
            panel.compute()
        message = blocker.args[0]
        assert message and "\n" not in message and "Traceback" not in message
        assert window.last_error == message and panel.status_text == message
        assert panel.computeButton.isEnabled() and not panel.running
        assert panel.result is first                    # nothing lost
        assert_plot_shows(panel, first.terms)
        panel.select_source("photo")
        panel.select_model("photo")


def test_every_control_is_named_and_explains_itself(window):
    import re

    from PySide6.QtWidgets import QAbstractButton, QComboBox, QSpinBox
    panel = window.elbo_panel
    controls = [w for w in panel.findChildren(QWidget) if isinstance(w, (QAbstractButton, QComboBox, QSpinBox))]
    controls += [panel.plot, panel.totalLabel, panel.hoverLabel, panel.progressBar]
    assert len(controls) >= 12
    for w in controls:
        assert re.fullmatch(r"elbo[A-Z][A-Za-z0-9]*", w.objectName()), (type(w).__name__, w.objectName())
        assert w.toolTip(), w.objectName()
    assert "L_VLB" in panel.computeButton.toolTip() and "KL(" in panel.plot.toolTip()
