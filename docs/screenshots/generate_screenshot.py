"""Regenerate docs/screenshots/generate.png: a Generate run in progress (offscreen; from the repository root):

    python docs/screenshots/generate_screenshot.py [STEP]

The built-in MNIST model, DDIM with 50 steps, a batch of 16 (each class in turn, guidance w = 2), seed 2024,
grabbed once step STEP (default 30) has been painted: x_t still noisy, x̂_0 already readable digits. Without the
built-in model: the oracle over the built-in digits, DDPM with 1000 steps, at step 20·STEP.
"""
import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
HERE = Path(__file__).resolve().parent


def main() -> None:
    import torch
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from ddpm_gui.main_window import MainWindow

    torch.set_num_threads(1)
    at = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    app = QApplication.instance() or QApplication([])
    w = MainWindow()
    w.resize(1440, 900)
    w.show()
    panel = w.generate_panel
    w.show_panel(panel)

    def wait(signal, pred=lambda *a: True, ms=120_000):
        loop, got = QEventLoop(), []

        def on(*args):
            if pred(*args) and not got:
                got.append(args)
                loop.quit()
        signal.connect(on)
        QTimer.singleShot(ms, loop.quit)
        loop.exec()
        signal.disconnect(on)
        return got

    from core.models.load import builtin_models
    builtin = "builtin:mnist" in builtin_models()
    panel.select_model("builtin:mnist" if builtin else "oracle:builtin:mnist")
    wait(panel.modelReady, ms=60_000)
    panel.samplerCombo.setCurrentIndex(panel.samplerCombo.findData("ddim" if builtin else "ddpm"))
    panel.batchSpin.setValue(16)
    panel.classCombo.setCurrentIndex(panel.classCombo.findData("each"))
    if builtin:
        panel.guidanceSpin.setValue(2.0)
    else:
        at *= 20
    panel.seedSpin.setValue(2024)
    panel.generate()
    if not wait(panel.stepPainted, lambda i: i >= at):
        raise SystemExit(f"step {at} was not reached: {panel.status_text}")
    loop = QEventLoop()
    QTimer.singleShot(120, loop.quit)
    loop.exec()
    w.save_screenshot(HERE / "generate.png")
    print(f"wrote {HERE / 'generate.png'} at {panel.status_text}")
    panel.cancel()
    wait(panel.runEnded, ms=10_000)
    w.close()
    del app


if __name__ == "__main__":
    main()
