"""The main window against independent expectations: the pixels shown at t are what core computes from the photo
and the seed; the level of detail; coalescing; the readout's numbers; the seed; the Markov-chain mode; Play.
(Files, drag and drop, paste, the strip and settings: test_gui_files.py.)"""
import math

import numpy as np
import pytest
import torch

pytest.importorskip("pytestqt")
from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtWidgets import QWidget  # noqa: E402

from core.forward import ForwardPreview, draw_noise, markov_chain, q_sample  # noqa: E402
from core.images import load_image, sample_path, to_uint8  # noqa: E402
from core.schedule import NoiseSchedule  # noqa: E402
from ddpm_gui.image_views import u8_from_qimage  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # fixtures: tests/conftest.py


def show_t(qtbot, w, t):
    with qtbot.waitSignal(w.frameShown, timeout=5000, check_params_cb=lambda shown: shown == t):
        w.timestepSlider.setValue(t)


def painted_pixels(w) -> np.ndarray:
    """What pyqtgraph draws: the QImage it built from the array handed to the view."""
    item = w.xtPane.item
    if item._renderRequired:
        item.render()
    return u8_from_qimage(item.qimage)


def test_window_opens_on_the_cat_with_ho_et_al_linear_schedule(window):
    assert window.windowTitle() == "DDPM Studio"
    assert window.photoLabel.text() == "Chelsea the cat · 451×300"
    x0 = load_image(sample_path("chelsea"))
    assert np.array_equal(window.x0, x0)
    s = window.schedule
    assert s.T == 1000 and np.allclose(s.betas, np.linspace(1e-4, 0.02, 1000))
    assert window.timestepSlider.maximum() == 999 and window.timestepSpin.maximum() == 999
    # every control says what it does, with its formula where it has one
    says = {"timestepSlider": ["Timestep t (0…T−1)", "x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε", "Page Up/Down by T/20"],
            "timestepSpin": ["Timestep t (0…T−1)"],
            "timestepReadout": ["ᾱ_t = Π(1−β_s)", "SNR = 10·log10(ᾱ_t/(1−ᾱ_t)) dB",
                                "PSNR(x_t, x_0) = 10·log10(2²/MSE) dB", "before display clipping"],
            "schedulePlot": ["Drag the orange points", "ᾱ_t strictly decreasing", "double-click adds a point"],
            "schedulePreset": ["linear: β_t = linspace(β_start, β_end)", "cos²((t/T + s)/(1 + s)·π/2)"],
            "noiseSeedSpin": ["Seed of ε", "`ddpm noise --seed`"],
            "newNoiseButton": ["new ε ~ N(0, I)"],
            "playButton": ["Animate t", "T−1", "pause"],
            "modeCombo": ["x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε", "x_t = √(1−β_t)·x_{t−1} + √β_t·ε_t",
                          "in distribution, not pixel for pixel"],
            "stripTimesteps": ["comma-separated", "19, 39, 59, 79, 99", "`ddpm noise`"],
            "exportStripButton": ["one PNG", "full resolution", "`ddpm noise IMAGE --seed S`"],
            "scheduleT": ["number of noising steps"],
            "betaStartSpin": ["β_0"], "betaEndSpin": ["β_{T−1}"],
            "zeroSnrCheck": ["ᾱ_{T−1} = 0", "Lin et al. 2023"],
            "pinScheduleButton": ["reference curve"],
            "scheduleCurve": ["β_t", "log-SNR λ_t = log(ᾱ_t/(1−ᾱ_t))"]}
    for name, parts in says.items():
        widget = window.findChild(QWidget, name)
        assert widget is not None, name
        for part in parts:
            assert part in widget.toolTip(), (name, part, widget.toolTip())
    names = [w.objectName() for w in window.findChildren(QWidget) if w.objectName()]
    assert names.count("seedSpin") == 1  # the Generate panel's; the photo's noise seed is noiseSeedSpin


def test_moving_the_slider_shows_exactly_what_core_computes_for_that_t_and_seed(window, qtbot):
    x0 = load_image(sample_path("chelsea"))
    eps = draw_noise(x0.shape, 0).numpy()   # seed 0, drawn independently of the window
    sched = NoiseSchedule.preset("linear", T=1000)
    ref = ForwardPreview(x0, eps)
    for t in (137, 0, 500, 999):
        show_t(qtbot, window, t)
        shown = window.displayed_image()
        assert window.xtPane.stride == 1                 # a 451×300 photo in a large view: every pixel
        assert np.array_equal(shown, ref.render(t, sched))
        assert np.array_equal(painted_pixels(window), shown)
        # and the same image as eq. 5 written out, up to float rounding at the ⌊·⌋ boundary
        direct = to_uint8(x0 * math.sqrt(sched.alphas_cumprod[t]) + eps * math.sqrt(1 - sched.alphas_cumprod[t]))
        diff = np.abs(shown.astype(int) - direct)
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-4
    # keyboard on the slider: one step right
    window.timestepSlider.setFocus()
    with qtbot.waitSignal(window.frameShown, timeout=5000, check_params_cb=lambda t: t == 998):
        qtbot.keyClick(window.timestepSlider, Qt.Key.Key_Left)
    assert window.timestepSpin.value() == 998


def test_a_large_photo_renders_at_the_views_level_of_detail_and_in_full_when_zoomed_in(window, qtbot):
    rng = np.random.default_rng(5)
    x0 = (rng.random((1200, 1600, 3), dtype=np.float32) * 2 - 1)
    with qtbot.waitSignal(window.frameShown, timeout=5000):
        window.set_image_array(x0, "big")
    show_t(qtbot, window, 321)
    full = ForwardPreview(x0, draw_noise(x0.shape, 0).numpy()).render(321, window.schedule)
    s = window.xtPane.stride
    view_px = window.xtPane.view.viewport().height()
    assert s >= 2 and s <= 1200 / view_px                # one screen pixel covers ≥ s photo pixels
    assert np.array_equal(window.displayed_image(), full[::s, ::s])
    assert window.xtPane.item.mapRectToParent(window.xtPane.item.boundingRect()).width() >= 1600
    # zoom in to 1:1 or closer: the view re-renders every pixel
    with qtbot.waitSignal(window.frameShown, timeout=5000):
        window.xtPane.viewbox.setRange(xRange=(100, 100 + view_px * 0.5), yRange=(100, 100 + view_px * 0.5),
                                       padding=0)
    assert window.xtPane.stride == 1
    assert np.array_equal(window.displayed_image(), full)


def test_fast_drags_render_only_the_newest_t(window, qtbot):
    show_t(qtbot, window, 10)
    before = window.frames_rendered
    with qtbot.waitSignal(window.frameShown, timeout=5000) as blocker:
        for t in range(11, 300):      # 289 value changes before the event loop runs once
            window.timestepSlider.setValue(t)
    assert blocker.args == [299]
    assert window.frames_rendered == before + 1


def test_readout_numbers_match_an_independent_computation(window, qtbot):
    t = 250
    show_t(qtbot, window, t)
    betas = np.linspace(1e-4, 0.02, 1000)
    ab = np.prod(1 - betas[:t + 1])
    x0 = load_image(sample_path("chelsea")).astype(np.float64)
    eps = draw_noise(x0.shape, 0).numpy().astype(np.float64)
    xt = math.sqrt(ab) * x0 + math.sqrt(1 - ab) * eps
    psnr = 10 * math.log10(4 / np.mean((xt - x0) ** 2))
    v = window.readout_values
    assert v["t"] == t
    assert v["beta"] == pytest.approx(betas[t], rel=1e-12)
    assert v["alpha_bar"] == pytest.approx(ab, rel=1e-10)
    assert v["sqrt_one_minus_alpha_bar"] == pytest.approx(math.sqrt(1 - ab), rel=1e-10)
    assert v["snr_db"] == pytest.approx(10 * math.log10(ab / (1 - ab)), rel=1e-9)
    assert v["psnr_db"] == pytest.approx(psnr, abs=1e-6)
    text = window.readout.text()
    assert "t = <b>250</b>" in text and f"{psnr:.2f} dB" in text
    # the histogram drifts towards N(0, 1): at the last step it matches the normal density closely
    show_t(qtbot, window, 999)
    qtbot.waitUntil(lambda: window.histogram_t == 999, timeout=3000)   # it follows the photo within ~33 ms
    h = window.histogram
    centers = (h.edges[:-1] + h.edges[1:]) / 2
    normal = np.exp(-centers**2 / 2) / math.sqrt(2 * math.pi)
    assert np.abs(h.counts - normal).max() < 0.03


def test_seed_fixes_the_noise_and_new_noise_redraws_it(window, qtbot):
    show_t(qtbot, window, 400)
    first = window.displayed_image().copy()
    with qtbot.waitSignal(window.frameShown, timeout=5000):
        window.set_seed(1234)
    assert np.array_equal(window.noise, draw_noise(window.x0.shape, 1234).numpy())
    assert not np.array_equal(window.displayed_image(), first)
    old_seed = window.seed
    with qtbot.waitSignal(window.frameShown, timeout=5000):
        window.newNoiseButton.click()
    assert window.seed != old_seed
    assert np.array_equal(window.noise, draw_noise(window.x0.shape, window.seed).numpy())


def test_markov_chain_mode_walks_eq_2_on_a_worker_from_the_same_seed(window, qtbot, monkeypatch):
    window.schedule_panel.apply_notes_example()          # T = 100
    window.set_mode("chain")
    assert window.modeNote.isVisible() and "not pixel for pixel" in window.modeNote.text()
    t = 60
    with qtbot.waitSignal(window.frameShown, timeout=20000, check_params_cb=lambda shown: shown == t):
        window.timestepSlider.setValue(t)
    x0 = load_image(sample_path("chelsea"))
    *_, state = markov_chain(x0, window.schedule, seed=0, t_end=t)   # independent walk of eq. 2
    assert np.array_equal(window.displayed_image(), to_uint8(state))
    # same distribution as the closed form, different pixels
    closed = q_sample(torch.from_numpy(x0), t, draw_noise(x0.shape, 0), window.schedule).numpy()
    chain = state.numpy()
    assert not np.array_equal(to_uint8(closed), window.displayed_image())
    assert abs(chain.std() - closed.std()) < 0.02 and abs(chain.mean() - closed.mean()) < 0.02
    assert window.readout_values["psnr_db"] == pytest.approx(10 * math.log10(4 / np.mean((chain - x0) ** 2)),
                                                              abs=1e-4)
    # a large photo walks the chain on every s-th pixel (the cap, made small here), still eq. 2 exactly
    import core.jobs.chain
    monkeypatch.setattr(core.jobs.chain, "CHAIN_MAX_PIXELS", 60_000)
    rng = np.random.default_rng(6)
    big = (rng.random((400, 600, 3), dtype=np.float32) * 2 - 1)
    with qtbot.waitSignal(window.frameShown, timeout=20000, check_params_cb=lambda shown: shown == t):
        window.set_image_array(big, "big")
    s = window.chain_stride
    assert s >= 2 and window.xtPane.stride == s
    *_, small = markov_chain(np.ascontiguousarray(big[::s, ::s]), window.schedule, seed=0, t_end=t)
    assert np.array_equal(window.displayed_image(), to_uint8(small))
    assert "every" in window.modeNote.text()
    # back to the closed form
    with qtbot.waitSignal(window.frameShown, timeout=5000):
        window.set_image_array(x0, "cat")
    with qtbot.waitSignal(window.frameShown, timeout=5000):
        window.set_mode("closed")
    assert np.array_equal(window.displayed_image(), ForwardPreview(x0, draw_noise(x0.shape, 0).numpy()).render(
        t, window.schedule))


def test_play_animates_t_and_pause_stops_it(window, qtbot):
    window.set_timestep(0)
    window.playButton.click()
    assert window.playButton.isChecked() and "Pause" in window.playButton.text()
    qtbot.waitUntil(lambda: window.timestep > 30, timeout=5000)
    window.playButton.click()
    stopped_at = window.timestep
    qtbot.wait(150)
    assert window.timestep == stopped_at and "Play" in window.playButton.text()
    window.set_timestep(990)                      # near the end: it stops at T−1 by itself
    window.playButton.click()
    qtbot.waitUntil(lambda: not window.playButton.isChecked(), timeout=5000)
    assert window.timestep == 999


def test_add_panel_puts_a_tab_beside_the_schedule(window):
    from PySide6.QtWidgets import QLabel
    panel = QLabel("generate here")
    i = window.add_panel("Generate", panel)
    assert window.panelTabs.tabText(i) == "Generate" and window.panelTabs.tabText(0) == "Schedule"
    window.show_panel(panel)
    assert window.panelTabs.currentWidget() is panel
