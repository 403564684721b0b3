"""The main window's files and clipboard: bad files keep the photo, drag and drop, paste, the exported strip equals
`ddpm noise`, and the settings that ``ddpm-gui`` remembers."""
import numpy as np
import pytest

pytest.importorskip("pytestqt")
from PIL import Image  # noqa: E402
from PySide6.QtCore import QMimeData, QPoint, QPointF, QSettings, Qt, QUrl  # noqa: E402
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QGuiApplication, QImage  # noqa: E402
from PySide6.QtWidgets import QApplication, QMessageBox  # noqa: E402

from core.images import load_image, sample_path  # noqa: E402
from core.schedule import NoiseSchedule  # noqa: E402
from ddpm_gui import MainWindow  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # fixtures: tests/conftest.py


def test_a_corrupt_file_shows_its_reason_and_keeps_the_photo(window, qtbot, tmp_path):
    bad = tmp_path / "broken.png"
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(good)
    bad.write_bytes(good.read_bytes()[:60])  # a PNG cut short
    before = window.x0.copy()
    assert window.open_image(bad) is False
    assert "broken.png" in window.last_error and "\n" not in window.last_error
    boxes = [b for b in window.findChildren(QMessageBox) if b.isVisible()]
    assert boxes and boxes[-1].text() == window.last_error
    assert np.array_equal(window.x0, before)
    assert window.statusBar().currentMessage() == window.last_error


def drop_on(widget, paths=(), image: QImage | None = None):
    mime = QMimeData()
    if paths:
        mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    if image is not None:
        mime.setImageData(image)
    pos = QPointF(widget.width() / 2, widget.height() / 2)
    enter = QDragEnterEvent(QPoint(int(pos.x()), int(pos.y())), Qt.DropAction.CopyAction, mime,
                            Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, enter)
    drop = QDropEvent(pos, Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                      Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, drop)
    return enter.isAccepted(), drop.isAccepted()


def test_dropping_a_file_on_the_photo_loads_it(window, qtbot, tmp_path):
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    path = tmp_path / "dropped.png"
    Image.fromarray(pixels).save(path)
    with qtbot.waitSignal(window.imageChanged, timeout=5000):
        entered, dropped = drop_on(window.xtPane.view.viewport(), [path])
    assert entered and dropped
    assert np.array_equal(window.x0, pixels.astype(np.float32) / 127.5 - 1)
    assert window.photo_path == path
    qtbot.waitUntil(lambda: window.displayed_image().shape == (48, 64, 3), timeout=5000)
    # a dropped corrupt file: message, photo kept
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg at all")
    drop_on(window.xtPane.view.viewport(), [bad])
    assert "bad.jpg" in window.last_error
    assert window.photo_path == path


def test_paste_an_image_from_the_clipboard(window, qtbot):
    rng = np.random.default_rng(4)
    pixels = np.ascontiguousarray(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8))
    qimg = QImage(pixels.data, 50, 30, 150, QImage.Format.Format_RGB888).copy()
    QGuiApplication.clipboard().setImage(qimg)
    with qtbot.waitSignal(window.imageChanged, timeout=5000):
        assert window.paste_image()
    assert np.array_equal(window.x0, pixels.astype(np.float32) / 127.5 - 1)
    assert window.photo_path is None


def test_exported_strip_equals_the_cli_strip(window, qtbot, tmp_path):
    from core.cli import main as ddpm
    window.set_seed(7)
    gui_png = tmp_path / "gui.png"
    assert window.export_strip(gui_png)
    cli_png = tmp_path / "cli.png"
    assert ddpm(["noise", str(sample_path("chelsea")), "--schedule", "linear", "--T", "1000", "--seed", "7",
                 "-o", str(cli_png)]) == 0
    assert np.array_equal(np.asarray(Image.open(gui_png)), np.asarray(Image.open(cli_png)))
    # the notes' example is one click away, and the strip follows it (19, 39, 59, 79, 99)
    window.schedule_panel.notesButton.click()
    assert window.schedule.T == 100 and window.strip_timesteps() == [19, 39, 59, 79, 99]
    assert window.export_strip(gui_png)
    assert ddpm(["noise", str(sample_path("chelsea")), "--seed", "7", "-o", str(cli_png)]) == 0
    assert np.array_equal(np.asarray(Image.open(gui_png)), np.asarray(Image.open(cli_png)))
    # bad timesteps: a one-line message, no file
    window.stripEdit.setText("5, 400")
    assert window.export_strip(tmp_path / "none.png") is False
    assert "400" in window.last_error and not (tmp_path / "none.png").exists()


def test_settings_remember_geometry_photo_schedule_t_and_seed(qtbot, tmp_path):
    ini = str(tmp_path / "ddpm-gui.ini")
    w1 = MainWindow(settings=QSettings(ini, QSettings.Format.IniFormat))
    qtbot.addWidget(w1)
    w1.show()
    w1.open_sample("coffee")
    w1.schedule_panel.apply_notes_example()
    w1.set_timestep(42)
    w1.set_seed(99)
    # the offscreen platform's screen is 800×600 and restoring clamps width and place to it: check the height
    w1.resize(w1.width(), w1.minimumSizeHint().height() + 7)
    height = w1.height()
    w1.close()
    w2 = MainWindow(settings=QSettings(ini, QSettings.Format.IniFormat))
    qtbot.addWidget(w2)
    assert w2.schedule == NoiseSchedule.preset("linear", T=100, beta_start=1e-4, beta_end=0.05)
    assert w2.timestep == 42 and w2.seed == 99
    assert np.array_equal(w2.x0, load_image(sample_path("coffee")))
    assert w2.height() == height != MainWindow().height()
    # a garbled settings file falls back to the defaults without an error
    (tmp_path / "bad.ini").write_text("[schedule]\njson=\"{not json\"\n[view]\nt=abc\n[noise]\nseed=-5\n")
    w3 = MainWindow(settings=QSettings(str(tmp_path / "bad.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(w3)
    assert w3.schedule.T == 1000 and w3.seed == 0 and w3.last_error is None


def test_the_strip_view_follows_the_schedule_the_noise_and_its_text_field(window, qtbot):
    view = window.stripView
    qtbot.waitUntil(lambda: view.pixmap() is not None and not view.pixmap().isNull(), timeout=5000)
    assert [c for _f, c in view._captions] == ["x₀", "t = 199", "t = 399", "t = 599", "t = 799", "t = 999"]
    window.schedule_panel.apply_notes_example()            # T = 100: the strip follows a moment later
    qtbot.waitUntil(lambda: view._captions[-1][1] == "t = 99", timeout=5000)
    assert window.stripEdit.text() == "19, 39, 59, 79, 99"
    before = view.pixmap().toImage()
    window.set_seed(5)                                     # new noise: new tiles
    qtbot.waitUntil(lambda: view.pixmap().toImage() != before, timeout=5000)
    window.stripEdit.setText("3; 50")                     # ';' separates too
    window.stripEdit.editingFinished.emit()
    assert [c for _f, c in view._captions] == ["x₀", "t = 3", "t = 50"]
    assert window.strip_timesteps() == [3, 50]
    window.stripEdit.setText("1, x")
    window.stripEdit.editingFinished.emit()
    assert window.statusBar().currentMessage().startswith("Strip: ") and "'1, x'" in window.statusBar().currentMessage()
    assert [c for _f, c in view._captions] == ["x₀", "t = 3", "t = 50"]   # the last valid strip stays
