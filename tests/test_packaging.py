"""A regular (non-editable) `pip install .` carries the resources and runs without the checkout."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_installed_copy_finds_its_resources(tmp_path):
    target = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                        "--target", str(target), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (target / "resources" / "samples" / "chelsea.png").is_file()
    assert (target / "resources" / "LICENSES.md").is_file()
    env = {**os.environ, "PYTHONPATH": str(target)}
    code = ("import core, resources; from core.images import sample_path, load_image; "
            "p = sample_path('chelsea'); assert str(p).startswith(%r), p; print(load_image(p).shape)" % str(target))
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "(300, 451, 3)" in out.stdout
    strip = tmp_path / "strip.png"
    cli = subprocess.run([sys.executable, "-m", "core.cli", "noise", str(target / "resources/samples/coffee.png"),
                          "-o", str(strip)], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert cli.returncode == 0 and strip.is_file(), cli.stderr
