"""The schedule panel in the window: edits that change the schedule and the image, refused edits that keep the last
valid schedule, undo/redo, presets, the t marker, Pin, Save/Load. (The editor's math, headless:
test_schedule_edit.py.)"""
import numpy as np
import pytest

pytest.importorskip("pytestqt")
from core.schedule import NoiseSchedule  # noqa: E402
from core.schedule_edit import LOGSNR, knots_from_params  # noqa: E402


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread):
    """Tiny tensors on one thread (tests/conftest.py)."""


@pytest.fixture
def window(window, qtbot):
    """conftest's window, at t = 300."""
    with qtbot.waitSignal(window.frameShown, timeout=5000):
        window.set_timestep(300)
    return window


def expected_frame(w, schedule, t):
    from core.forward import ForwardPreview, draw_noise
    from core.images import load_image, sample_path
    x0 = load_image(sample_path("chelsea"))
    return ForwardPreview(x0, draw_noise(x0.shape, 0).numpy()).render(t, schedule)


def test_moving_a_control_point_changes_the_schedule_and_the_image(window, qtbot):
    panel = window.schedule_panel
    before_sched = window.schedule
    before_img = window.displayed_image().copy()
    i = 1                                   # the point at t = 250 on β (log axis)
    t_i = panel.knots.t[i]
    with qtbot.waitSignal(window.frameShown, timeout=5000):
        assert panel.move_point(i, t_i, 0.012)
    s = window.schedule
    assert s.betas[t_i] == pytest.approx(0.012)
    assert s.name == "custom" and s != before_sched
    assert np.all(np.diff(np.concatenate([[1.0], s.alphas_cumprod])) < 0)
    img = window.displayed_image()
    assert not np.array_equal(img, before_img)
    assert np.array_equal(img, expected_frame(window, s, 300))   # the new schedule's x_t at the same t
    assert panel.presetCombo.currentData() == "custom"


def test_dragging_a_point_with_the_mouse_reshapes_the_curve(window, qtbot):
    from PySide6.QtCore import QPointF
    panel = window.schedule_panel
    plot = panel.plot
    vb = plot.getViewBox()
    i = 2                                                     # t = 500
    x, y = panel.point_position(i)                            # y is log10(β) on the log axis
    start = plot.mapFromScene(vb.mapViewToScene(QPointF(x, y)))
    end = plot.mapFromScene(vb.mapViewToScene(QPointF(x, y - 0.5)))   # drag down by half a decade
    before = window.schedule
    vp = plot.viewport()
    qtbot.mousePress(vp, QtLeft(), pos=start)
    for k in range(1, 11):
        qtbot.mouseMove(vp, start + (end - start) * k / 10)
    qtbot.mouseRelease(vp, QtLeft(), pos=end)
    qtbot.waitUntil(lambda: window.schedule is not before, timeout=3000)
    t_i = panel.knots.t[i]
    assert window.schedule.betas[t_i] == pytest.approx(before.betas[500] / 10 ** 0.5, rel=0.1)
    assert panel.undo_stack.count() == 1                      # one drag = one undo step
    assert panel.point_position(i)[1] == pytest.approx(y - 0.5, abs=0.05)   # the point went where it was dragged


def test_double_click_adds_a_point_and_right_click_removes_it(window, qtbot):
    from PySide6.QtCore import QPointF, Qt
    panel = window.schedule_panel
    plot, vb = panel.plot, panel.plot.getViewBox()
    n = len(panel.knots)
    y = float(np.log10(window.schedule.betas[600]))
    pos = plot.mapFromScene(vb.mapViewToScene(QPointF(600, y)))
    # what a real double-click sends: press, release, double-click, release
    qtbot.mouseClick(plot.viewport(), Qt.MouseButton.LeftButton, pos=pos)
    qtbot.mouseDClick(plot.viewport(), Qt.MouseButton.LeftButton, pos=pos)
    qtbot.mouseRelease(plot.viewport(), Qt.MouseButton.LeftButton, pos=pos)
    qtbot.waitUntil(lambda: len(panel.knots) == n + 1, timeout=3000)
    i = min(range(len(panel.knots)), key=lambda k: abs(panel.knots.t[k] - 600))
    assert abs(panel.knots.t[i] - 600) <= 3
    x, y = panel.point_position(i)
    pos = plot.mapFromScene(vb.mapViewToScene(QPointF(x, y)))
    qtbot.mouseClick(plot.viewport(), Qt.MouseButton.RightButton, pos=pos)
    qtbot.waitUntil(lambda: len(panel.knots) == n, timeout=3000)


def QtLeft():
    from PySide6.QtCore import Qt
    return Qt.MouseButton.LeftButton


def test_a_refused_edit_keeps_the_last_valid_schedule(window, qtbot):
    panel = window.schedule_panel
    before = window.schedule
    img = window.displayed_image().copy()
    assert panel.move_point(2, panel.knots.t[2], 1.5) is False           # β > 1
    assert window.schedule is before
    assert "Refused" in window.statusBar().currentMessage() and "β" in window.statusBar().currentMessage()
    panel.set_curve("alphas_cumprod")
    assert panel.knots.space == LOGSNR
    ab_left = panel.schedule.alphas_cumprod[panel.knots.t[1]]
    assert panel.move_point(2, panel.knots.t[2], min(0.999, ab_left + 0.05)) is False   # ᾱ rising
    assert window.schedule is before and panel.undo_stack.count() == 0
    assert "ᾱ must decrease" in window.statusBar().currentMessage()
    assert np.array_equal(window.displayed_image(), img)


def test_undo_and_redo_with_the_keyboard(window, qtbot):
    from PySide6.QtCore import Qt
    panel = window.schedule_panel
    original = window.schedule
    assert panel.move_point(1, panel.knots.t[1], 0.001)
    edited = window.schedule
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=3000)
    window.timestepSlider.setFocus()
    with qtbot.waitSignal(window.frameShown, timeout=5000):
        qtbot.keyClick(window.timestepSlider, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert window.schedule == original
    assert np.array_equal(window.displayed_image(), expected_frame(window, original, 300))
    qtbot.keyClick(window.timestepSlider, Qt.Key.Key_Z,
                   Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert window.schedule == edited


def test_add_and_remove_points(window, qtbot):
    panel = window.schedule_panel
    n = len(panel.knots)
    sched = window.schedule
    assert panel.add_point(123)
    assert len(panel.knots) == n + 1 and 123 in panel.knots.t and window.schedule is sched   # no change yet
    i = panel.knots.t.index(123)
    assert panel.move_point(i, 123, 0.006)
    assert window.schedule.betas[123] == pytest.approx(0.006)
    assert panel.remove_point(i)
    assert 123 not in panel.knots.t
    assert panel.remove_point(0) is False and "first and last" in window.statusBar().currentMessage()
    panel.undo_stack.undo()                     # undo the removal
    assert window.schedule.betas[123] == pytest.approx(0.006)


def test_presets_T_and_the_notes_example_update_slider_and_image(window, qtbot):
    panel = window.schedule_panel
    with qtbot.waitSignal(window.frameShown, timeout=5000):
        panel.presetCombo.setCurrentIndex(panel.presetCombo.findData("cosine"))
        panel.presetCombo.activated.emit(panel.presetCombo.currentIndex())
    assert window.schedule == NoiseSchedule.preset("cosine")
    assert np.array_equal(window.displayed_image(), expected_frame(window, window.schedule, 300))
    panel.tSpin.setValue(200)
    assert window.schedule == NoiseSchedule.preset("cosine", T=200)
    assert window.timestepSlider.maximum() == 199 and window.timestep == 199
    panel.notesButton.click()
    assert window.schedule == NoiseSchedule.preset("linear", T=100, beta_start=1e-4, beta_end=0.05)
    panel.zeroSnrCheck.setChecked(True)
    assert window.schedule.alphas_cumprod[-1] == 0.0
    # a bad preset value is refused and the controls snap back
    panel.betaEndSpin.setValue(0.00001)   # β_end < β_start is allowed by core; a T of 1 is not
    before = window.schedule
    assert panel.apply_preset(T=1) is False and window.schedule is before
    assert panel.tSpin.value() == before.T


def test_the_t_marker_moves_the_slider_and_follows_it(window, qtbot):
    panel = window.schedule_panel
    qtbot.waitUntil(lambda: panel.marker.value() == 300, timeout=3000)
    with qtbot.waitSignal(window.frameShown, timeout=5000, check_params_cb=lambda t: t == 640):
        panel.marker.setValue(640.2)     # what a drag of the red line does
    assert window.timestep == 640
    window.set_timestep(10)
    qtbot.waitUntil(lambda: panel.marker.value() == 10, timeout=3000)   # follows within ~33 ms


def test_pin_save_and_load(window, qtbot, tmp_path):
    panel = window.schedule_panel
    panel.pinButton.click()
    assert panel.pinned == window.schedule and panel.pinCurve.isVisible()
    assert panel.move_point(2, panel.knots.t[2], 0.004)
    assert panel.pinned == NoiseSchedule.preset("linear") and panel.pinned != window.schedule
    path = tmp_path / "edited.json"
    assert panel.save_schedule(path)
    edited = window.schedule
    panel.apply_preset("sigmoid")
    assert panel.load_schedule(path)
    assert window.schedule == edited
    assert panel.knots.t == tuple(knots_from_params(edited).t)
    bad = tmp_path / "bad.json"
    bad.write_text('{"betas": [0.1, 2.0]}')
    assert panel.load_schedule(bad) is False
    assert "bad.json" in window.last_error and "beta[1]" in window.last_error
    assert window.schedule == edited
