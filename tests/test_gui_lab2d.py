"""The 2D tab on a MainWindow: its named widgets, the slider and schedule it follows, painting (click adds points,
Undo removes them), Generate with the exact denoiser memorising at 1000 DDPM steps, the CLI's figures equal to the
tab's for the same seed, Learn → Stop → Resume, Measure."""
import json
import sys

import numpy as np
import pytest

pytest.importorskip("pytestqt")
from PySide6.QtCore import QPoint, Qt  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402
from PySide6.QtWidgets import QWidget  # noqa: E402

from core.cli import main  # noqa: E402
from core.lab2d import data as pts  # noqa: E402
from core.lab2d.run import nearest_distance  # noqa: E402
from ddpm_gui.lab2d_panel import Lab2DPanel  # noqa: E402

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from test_lab2d import separated  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TIMEOUT = 60_000


@pytest.fixture
def panel(window):
    p = window.lab2d_panel  # MainWindow installs the 2D tab
    assert isinstance(p, Lab2DPanel) and window.panelTabs.indexOf(p) >= 0
    window.show_panel(p)
    return p


def settled(panel):
    return not panel._dirty and not panel._fields_timer.isActive()


def _mode(panel, samplers):
    panel.modeCombo.setCurrentIndex([panel.modeCombo.itemData(i) for i in range(panel.modeCombo.count())]
                                    .index(samplers))


def test_named_widgets_and_forward_follows_the_slider(window, panel, qtbot):
    for name in ("lab2dDataCombo", "lab2dCanvas", "lab2dFieldCheck", "lab2dLearnButton", "lab2dGenerateButton"):
        assert window.findChild(QWidget, name) is not None, name
    assert window.panelTabs.tabText(window.panelTabs.indexOf(panel)) == "2D"
    assert len(panel.points) == pts.DEFAULT_POINTS
    window.set_timestep(400)
    qtbot.waitUntil(lambda: settled(panel), timeout=5000)
    s = window.schedule
    eps = np.asarray(__import__("core.forward", fromlist=["draw_noise"]).draw_noise((len(panel.points), 2),
                                                                                   window.seed))
    want = np.float32(s.sqrt_alphas_cumprod[400]) * panel.points.astype(np.float32) + \
        np.float32(s.sqrt_one_minus_alphas_cumprod[400]) * eps
    x, y = panel.canvas.cloud.getData()
    assert np.allclose(x, want[:, 0]) and np.allclose(y, want[:, 1])
    assert panel.canvas.heat.isVisible() and len(panel.canvas.arrows.getData()[0]) > 0
    panel.fieldCheck.setChecked(False)
    qtbot.waitUntil(lambda: settled(panel), timeout=5000)
    assert panel.canvas.arrows.getData()[0] is None or len(panel.canvas.arrows.getData()[0]) == 0


def test_painting_adds_points_and_undo(panel, qtbot):
    assert panel.set_data("paint") and len(panel.points) == 0
    assert not panel.generateButton.isEnabled()
    vp = panel.canvas.viewport()
    QTest.mouseClick(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, vp.rect().center())
    qtbot.waitUntil(lambda: len(panel.points) > 0, timeout=5000)
    n1 = len(panel.points)
    c = panel.points.mean(0)
    assert np.linalg.norm(c) < 0.5          # the centre of the view is (0, 0)
    assert np.all(np.linalg.norm(panel.points - c, axis=1) <= 2 * panel.brushSpin.value() + 1e-9)
    panel.paint_at(1.0, 1.0, True)
    panel.paint_at(1.1, 1.0, False)
    assert len(panel.points) > n1
    panel.undo()
    assert len(panel.points) == n1
    panel.clear_points()
    assert len(panel.points) == 0
    panel.undo()
    assert len(panel.points) == n1 and panel.generateButton.isEnabled()
    QTest.mouseMove(vp, QPoint(5, 5))


def test_generate_exact_memorises_at_1000_ddpm_steps(panel, qtbot, tmp_path):
    p = separated(pts.preset("checkerboard", 1000, seed=2), 0.2)
    path = pts.save_points(tmp_path / "sep.csv", p)
    assert panel.load_file(path) and len(panel.points) == len(p)
    _mode(panel, ("ddpm",))
    panel.stepsSpin.setValue(1000)
    panel.particlesSpin.setValue(300)
    with qtbot.waitSignal(panel.generated, timeout=TIMEOUT) as sig:
        assert panel.generate()
    row = sig.args[0]["ddpm"]
    assert row.steps == 1000 and row.particles.shape == (300, 2)
    assert nearest_distance(row.particles, p).max() < 1e-3


def test_cli_figures_equal_the_tab(panel, qtbot, capsys):
    panel.pointsSpin.setValue(500)
    panel.seedSpin.setValue(3)
    panel.set_data("rings")
    _mode(panel, ("ddpm", "ddim"))
    panel.stepsSpin.setValue(20)
    panel.particlesSpin.setValue(400)
    with qtbot.waitSignal(panel.generated, timeout=TIMEOUT) as sig:
        assert panel.generate()
    tab = sig.args[0]
    capsys.readouterr()
    assert main(["lab2d", "--data", "rings", "--points", "500", "--seed", "3", "--sampler", "ddpm,ddim",
                 "--steps", "20", "--n", "400", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["sampler"], r["steps"]) for r in rows] == [("ddpm", 20), ("ddim", 20)]
    for r in rows:
        assert r["energy_distance"] == tab[r["sampler"]].energy


def test_learn_stop_resume_and_measure(panel, qtbot):
    panel.pointsSpin.setValue(300)
    panel.set_data("moons")
    panel.learnSpin.setValue(120)
    with qtbot.waitSignal(panel.learnStepped, timeout=TIMEOUT, check_params_cb=lambda k: k >= 20):
        panel.toggle_learn()
    assert panel.learnButton.text() == "Stop"
    panel.toggle_learn()
    qtbot.waitUntil(lambda: panel.learnButton.text() == "Resume", timeout=TIMEOUT)
    stopped = panel.trainer.step
    assert 20 <= stopped < 120
    panel.toggle_learn()
    qtbot.waitUntil(lambda: panel.learnButton.text() == "Learn more", timeout=TIMEOUT)
    assert panel.trainer.step == 120 and panel.learned is not None and len(panel.losses) == 120
    panel.stepsListEdit.setText("2,4")
    panel.particlesSpin.setValue(200)
    with qtbot.waitSignal(panel.measured, timeout=TIMEOUT) as sig:
        assert panel.measure()
    rows = sig.args[0]
    assert {(r.denoiser, r.sampler, r.steps) for r in rows} == {
        (d, s, k) for d in ("exact", "learned") for s in ("ddpm", "ddim", "dpmpp2m") for k in (2, 4)}
    assert all(np.isfinite(r.energy) for r in rows)
    panel.heatCombo.setCurrentIndex(panel.heatCombo.findData("diff"))
    qtbot.waitUntil(lambda: settled(panel), timeout=5000)
    assert panel.canvas.heat.isVisible() and len(panel.canvas.learned_arrows.getData()[0]) > 0


def test_bad_inputs_are_one_line(panel, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y\nfoo\n")
    assert not panel.load_file(bad)
    assert "bad.csv" in panel.status_text and "\n" not in panel.status_text
    panel.denoiserCombo.setCurrentIndex(panel.denoiserCombo.findData("learned"))
    assert not panel.generate() and "Learn" in panel.status_text
    panel.stepsListEdit.setText("5,x")
    assert not panel.measure()
