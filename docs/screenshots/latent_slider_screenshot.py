"""Regenerate docs/screenshots/latent_slider_tiny.png: the main view in latent space (offscreen; from the
repository root):

    python docs/screenshots/latent_slider_screenshot.py [T]

A tiny *random* Stable Diffusion pipeline (tests/sd_tiny.py, built offline in a temporary folder: its VAE is
untrained, so the decoded picture is not the cat — it shows the layout, not a real model's reconstruction), the
built-in cat, Latent space on, t = T (default 300) decoded by the full VAE, x_0 as the VAE sees it beside it.
"""
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent / "tests"))


def main() -> None:
    import torch
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from core.jobs.pipelines import load_pipeline_job
    from ddpm_gui.main_window import MainWindow
    from sd_tiny import save_tiny_pipeline

    torch.set_num_threads(1)
    t = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    tmp = Path(tempfile.mkdtemp())
    os.environ.setdefault("DDPM_STUDIO_CACHE", str(tmp / "cache"))
    *_stages, pipe = list(load_pipeline_job(str(save_tiny_pipeline(tmp / "tiny-sd")), "cpu"))
    app = QApplication.instance() or QApplication([])
    w = MainWindow()
    w.resize(1440, 900)
    w.show()

    def wait(signal, pred=lambda *a: True, ms=60_000):
        loop, got = QEventLoop(), []

        def on(*args):
            if pred(*args) and not got:
                got.append(args)
                loop.quit()
        signal.connect(on)
        QTimer.singleShot(ms, loop.quit)
        return loop, got

    w.set_pipeline(pipe)
    loop, _ = wait(w.latent.encoded)
    w.set_latent_space(True)
    loop.exec()
    w.showX0Check.setChecked(True)
    loop, got = wait(w.latent.frameShown, lambda tt, d: (tt, d) == (t, "vae"))
    w.set_timestep(t)
    loop.exec()
    loop, _ = wait(w.latent.stripShown)
    w._update_strip()
    loop.exec()
    for _ in range(20):
        app.processEvents()
    out = HERE / "latent_slider_tiny.png"
    w.save_screenshot(out)
    print(f"wrote {out}" + ("" if got else " (the VAE frame did not arrive)"))
    w.close()


if __name__ == "__main__":
    main()
