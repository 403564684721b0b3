"""docs/screenshots/generate_sd_tiny.png: the Generate tab mid-run with the tests' tiny *random* Stable Diffusion
pipeline (tests/sd_tiny.py; no real weights exist on this machine, so the pictures are noise-like by design):
prompt, guidance, preview decoder, x_t beside x̂_0 and the unconditional vs conditional x̂_0.

    QT_QPA_PLATFORM=offscreen python docs/screenshots/generate_sd_screenshot.py
"""
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "tests"))

from PySide6.QtCore import QEventLoop, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402


def wait(signal, ok=lambda *a: True, ms=120_000) -> bool:
    loop, got = QEventLoop(), []
    signal.connect(lambda *a: ok(*a) and not got and (got.append(1) or loop.quit()))
    QTimer.singleShot(ms, loop.quit)
    loop.exec()
    return bool(got)


def main() -> int:
    from sd_tiny import save_tiny_pipeline
    app = QApplication.instance() or QApplication([])
    from ddpm_gui.main_window import MainWindow
    folder = save_tiny_pipeline(Path(tempfile.mkdtemp()) / "tiny-sd")
    w = MainWindow()
    w.resize(1440, 900)
    w.show()
    panel = w.generate_panel
    w.show_panel(panel)
    panel.select_model(str(folder))
    if not wait(panel.pipelineChanged):
        raise SystemExit(f"the pipeline did not load: {panel.status_text}")
    panel.preview_share = None
    box = panel.prompts
    box.promptEdit.setPlainText("a watercolor fox in the snow")
    box.negativePromptEdit.setPlainText("blurry")
    box.set_image_size(64, 64)
    box.guidancePartsCheck.setChecked(True)
    panel.samplerCombo.setCurrentIndex(panel.samplerCombo.findData("ddim"))
    panel.stepsSpin.setValue(400)
    panel.batchSpin.setValue(4)
    panel.seedSpin.setValue(2024)
    panel.generate()
    if not wait(panel.stepPainted, lambda i: i >= 120):
        raise SystemExit(f"step 120 was not reached: {panel.status_text}")
    loop = QEventLoop()
    QTimer.singleShot(150, loop.quit)
    loop.exec()
    w.save_screenshot(HERE / "generate_sd_tiny.png")
    print(f"wrote {HERE / 'generate_sd_tiny.png'} at {panel.status_text}")
    panel.cancel()
    wait(panel.runEnded, ms=30_000)
    app.processEvents()
    w.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
