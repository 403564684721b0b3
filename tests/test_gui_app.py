"""`ddpm-gui --screenshot OUT.png [--t N] [IMAGE]` renders the window offscreen and exits; bad input is one line
and exit code 2."""
import os
import subprocess
import sys

import numpy as np
from PIL import Image


def run_gui(*args):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    return subprocess.run([sys.executable, "-m", "ddpm_gui.app", *args], capture_output=True, text=True,
                          timeout=120, env=env)


def test_screenshot_mode_writes_the_window_and_clamps_t(tmp_path):
    out = tmp_path / "shot.png"
    proc = run_gui("--screenshot", str(out), "--t", "5000", "--size", "1200x800")
    assert proc.returncode == 0, proc.stderr
    assert "t = 999" in proc.stdout                      # clamped to the schedule's T−1
    img = np.asarray(Image.open(out).convert("RGB"))
    assert img.shape == (800, 1200, 3)
    assert img.std() > 20                                # a real picture, not a blank window
    assert not any(p.name.startswith(".shot.png") for p in tmp_path.iterdir())   # written atomically


def test_screenshot_mode_refuses_bad_input_with_one_line(tmp_path, capsys):
    from ddpm_gui.app import main   # in-process: bad input is refused before any window is made
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG not really")
    for args, names in ((["--screenshot", str(tmp_path / "out.png"), str(bad)], "bad.png"),
                        (["--screenshot", str(tmp_path / "out.jpg")], ".png"),
                        (["--screenshot", str(tmp_path / "out.png"), "--size", "10x10"], "--size"),
                        (["--screenshot", str(tmp_path / "no" / "out.png")], "does not exist")):
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("ddpm-gui: error:") and names in err[0], err
    assert not list(tmp_path.glob("out.*"))
