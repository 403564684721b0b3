"""The README's Stable Diffusion screenshots, made with the built-in latent model ``builtin:mnist-sd``:

- ``generate_mnist_sd.png``: Generate mid-run with the prompt "a bold 3" (DDPM, 1000 steps, batch 4, w = 5): x_t
  and x̂_0 decoded step by step, the unconditional vs conditional x̂_0, the frames taking over the image area;
- ``latent_slider_mnist_sd.png``: the latent slider on a training digit — D(z_t/s) by the full VAE at rest, the
  digit as the VAE sees it, the 4 latent channels, their histogram against N(0, 1), the pipeline's schedule.

    QT_QPA_PLATFORM=offscreen python docs/screenshots/mnist_sd_screenshots.py
"""
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
HERE = Path(__file__).resolve().parent


def wait(signal, ok=lambda *a: True, ms=120_000) -> bool:
    from PySide6.QtCore import QEventLoop, QTimer
    loop, got = QEventLoop(), []

    def on(*args):
        if ok(*args) and not got:
            got.append(args)
            loop.quit()
    signal.connect(on)
    QTimer.singleShot(ms, loop.quit)
    loop.exec()
    return bool(got)


def settle(app, ms: int = 200) -> None:
    from PySide6.QtCore import QEventLoop, QTimer
    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec()
    app.processEvents()


def digit_photo(folder: Path) -> Path:
    """A training 3, enlarged to 128² (the slider fits it back to the model's 32²)."""
    import numpy as np
    from PIL import Image

    from core.data import load_dataset
    data = load_dataset("builtin:mnist", split="train")
    i = int(np.flatnonzero(data.labels == 3)[0])
    grey = ((data.images[i, 0] + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
    path = folder / "three.png"
    Image.fromarray(grey).convert("RGB").resize((128, 128), Image.LANCZOS).save(path)
    return path


def main() -> int:
    import torch
    from PySide6.QtWidgets import QApplication

    from ddpm_gui.main_window import MainWindow
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp())
    os.environ.setdefault("DDPM_STUDIO_CACHE", str(tmp / "cache"))
    app = QApplication.instance() or QApplication([])
    w = MainWindow()
    w.resize(1440, 900)
    w.show()
    panel = w.generate_panel
    w.show_panel(panel)
    panel.select_model("builtin:mnist-sd")
    if not wait(panel.pipelineChanged, lambda p: p is not None):
        raise SystemExit(f"builtin:mnist-sd did not load: {panel.status_text}")
    panel.preview_share = None
    box = panel.prompts
    box.promptEdit.setPlainText("a bold 3")
    box.guidanceValueSpin.setValue(5.0)
    box.guidancePartsCheck.setChecked(True)
    panel.samplerCombo.setCurrentIndex(panel.samplerCombo.findData("ddpm"))
    panel.stepsSpin.setValue(999)
    panel.batchSpin.setValue(4)
    panel.seedSpin.setValue(7)
    panel.generate()
    if not wait(panel.stepPainted, lambda i: i >= 700):
        raise SystemExit(f"step 700 was not reached: {panel.status_text}")
    settle(app, 150)
    w.save_screenshot(HERE / "generate_mnist_sd.png")
    print(f"wrote {HERE / 'generate_mnist_sd.png'} at {panel.status_text}")
    panel.cancel()
    wait(panel.runEnded, ms=30_000)

    w.open_image(digit_photo(tmp))
    settle(app, 500)
    w.show_panel(w.schedule_panel)
    wait_encoded = w.latent.encoded
    w.set_latent_space(True)
    wait(wait_encoded, ms=30_000)
    t = 400
    w.set_timestep(t)
    wait(w.latent.frameShown, lambda tt, d: (tt, d) == (t, "vae"), ms=30_000)
    w._update_strip()
    wait(w.latent.stripShown, ms=30_000)
    settle(app, 300)
    w.save_screenshot(HERE / "latent_slider_mnist_sd.png")
    print(f"wrote {HERE / 'latent_slider_mnist_sd.png'}")
    w.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
