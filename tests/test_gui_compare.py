"""The Compare tab (issue 19): a grid runs on the worker and fills in cell by cell with the headless grid's images;
a cell opens in Generate's replay or copies its settings there; an invalid cell shows why; Cancel keeps finished
cells; the exports write every cell."""
import json

import numpy as np
import pytest

pytest.importorskip("pytestqt")

from PySide6.QtWidgets import QLabel  # noqa: E402

from core.compare import GridRun, run_grid  # noqa: E402
from ddpm_gui.compare_panel import ComparePanel  # noqa: E402
from ddpm_gui.main_window import MainWindow  # noqa: E402

TIMEOUT = 60_000
ORACLE = "oracle:builtin:mnist"
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def window(qtbot):
    w = MainWindow()
    qtbot.addWidget(w)
    w.show()
    panel = getattr(w, "compare_panel", None) or ComparePanel.install(w)
    w.show_panel(panel)
    w.compare = panel
    yield w
    w.close()


def _picture(panel, row, col):
    return panel.table.cellWidget(row, col).findChild(QLabel, "compareCellPicture")


def _grid(panel, rows, cols, n=2, model=ORACLE):
    panel.modelCombo.select(model)
    panel.set_axis(0, *rows)
    panel.set_axis(1, *cols)
    panel.set_axis(2, "")
    panel.batchSpin.setValue(n)


def test_the_tab_fills_in_the_grid_with_the_headless_images(window, qtbot):
    p = window.compare
    _grid(p, ("sampler", "ddpm,ddim"), ("steps", "3,5"))
    finished = []
    p.cellFinished.connect(finished.append)
    with qtbot.waitSignal(p.runEnded, timeout=TIMEOUT):
        assert p.start()
    assert sorted(finished) == [0, 1, 2, 3] and finished[:2] == [0, 2]   # 3-step cells first
    headless = GridRun(p.run.plan)
    for _ in run_grid(p.run.plan, headless, schedules={"window": window.schedule}, score=False):
        pass
    for ui, ref in zip(p.run.results, headless.results):
        assert ui.status == "done" and np.array_equal(ui.images, ref.images)
        assert _picture(p, ui.cell.row, ui.cell.col).pixmap().width() > 0
    assert p.table.horizontalHeaderItem(1).text() == "steps 5" and p.table.verticalHeaderItem(0).text() == "ddpm"
    assert len(p.plot.getPlotItem().listDataItems()) == 2 and "Done: 4 cells" in p.status_text


def test_a_cell_opens_in_generates_replay_and_copies_its_settings(window, qtbot):
    p, gen = window.compare, window.generate_panel
    _grid(p, ("guidance", "1,3"), ("seed", "4,5"))
    p.samplerCombo.setCurrentIndex(p.samplerCombo.findData("ddim"))
    p.stepsSpin.setValue(6)
    with qtbot.waitSignal(p.runEnded, timeout=TIMEOUT):
        p.start()
    p.select_cell(3)
    res = p.run.results[3]
    assert p.openButton.isEnabled() and p.open_in_generate()
    assert gen.recording is res.recording and len(gen.recording) == 6
    assert gen.timelineSlider.maximum() == 5 and gen.timelineSlider.value() == 5 and gen.replayButton.isEnabled()
    assert window.panelTabs.currentWidget() is gen
    assert np.array_equal(gen.recording.final.clip(-1, 1), res.images)
    window.show_panel(p)
    with qtbot.waitSignal(gen.modelReady, timeout=TIMEOUT, raising=False):
        assert p.copy_to_generate(3)
    qtbot.waitUntil(lambda: gen.classCombo.currentData() == "each", timeout=TIMEOUT)
    assert gen.modelCombo.spec() == ORACLE and gen.samplerCombo.currentData() == "ddim"
    assert (gen.stepsSpin.value(), gen.seedSpin.value(), gen.batchSpin.value()) == (6, 5, 2)
    assert gen.guidanceSpin.value() == 3.0


def test_an_invalid_cell_says_why_and_the_rest_run(window, qtbot):
    p = window.compare
    _grid(p, ("steps", "2,2000"), ("seed", "0,1"), n=1)
    with qtbot.waitSignal(p.runEnded, timeout=TIMEOUT):
        p.start()
    status = [r.status for r in p.run.results]
    assert status == ["done", "done", "invalid", "invalid"]
    assert "2000" in _picture(p, 1, 0).text() and "could not run" in p.status_text
    p.select_cell(2)
    assert not p.openButton.isEnabled() and "2000" in p.cellLabel.text()


def test_cancel_keeps_finished_cells_and_exports_carry_every_cell(window, qtbot, tmp_path):
    p = window.compare
    _grid(p, ("steps", "2,400,800"), ("seed", "0"), n=1)
    cancelled = []
    p.runCancelled.connect(cancelled.append)
    p.cellFinished.connect(lambda i: p.cancel())
    with qtbot.waitSignal(p.runEnded, timeout=TIMEOUT):
        p.start()
    assert cancelled == [1] and p.run.results[0].status == "done" and p.run.results[1:] == [None, None]
    assert "kept" in p.status_text and p.exportButton.isEnabled()
    for kind in ("png", "csv", "json", "npz"):
        assert p.export(kind, tmp_path / f"grid.{kind}")
    cells = json.loads((tmp_path / "grid.json").read_text())
    assert [c["status"] for c in cells] == ["done", "not run", "not run"]
    assert (tmp_path / "grid.csv").read_text().count("\n") == 4
    z = np.load(tmp_path / "grid.npz")
    assert z["images"].shape == (3, 1, 1, 28, 28) and list(z["valid"]) == [True, False, False]
