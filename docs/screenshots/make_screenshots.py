"""Regenerate the README's screenshots (offscreen; run from the repository root):

    python docs/screenshots/make_screenshots.py

main_window.png    the window as it opens, at t = 180 with x_0 shown (= ddpm-gui --screenshot … --t 180 --show x0)
schedule_editor.png  a schedule reshaped by moving two points of √ᾱ_t up, Ho et al.'s linear schedule pinned
                     for comparison, the Markov-chain mode at t = 400
"""
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
HERE = Path(__file__).resolve().parent


def main() -> None:
    subprocess.run([sys.executable, "-m", "ddpm_gui.app", "--screenshot", str(HERE / "main_window.png"),
                    "--t", "180", "--show", "x0"], check=True)

    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from ddpm_gui import MainWindow

    app = QApplication.instance() or QApplication([])
    w = MainWindow()
    w.resize(1440, 900)
    w.show()
    panel = w.schedule_panel
    panel.set_pinned(True)
    panel.set_curve("sqrt_alphas_cumprod")
    for t_near, value in ((340, 0.68), (500, 0.50)):  # keep more signal in the middle steps
        k = panel.knots
        i = min(range(len(k)), key=lambda j: abs(k.t[j] - t_near))
        if not panel.move_point(i, k.t[i], value):
            raise SystemExit(f"edit refused: {w.statusBar().currentMessage()}")
    w.set_mode("chain")
    w.set_timestep(400)
    loop = QEventLoop()
    w._chain_runner.running_changed.connect(lambda running: running or loop.quit())
    QTimer.singleShot(30_000, loop.quit)
    loop.exec()
    loop = QEventLoop()
    QTimer.singleShot(300, loop.quit)
    loop.exec()
    w.save_screenshot(HERE / "schedule_editor.png")
    print(f"wrote {HERE / 'schedule_editor.png'}")
    w.close()


if __name__ == "__main__":
    main()
