"""ddpm train: runs, resumes, refuses bad input with one line, and saves a checkpoint when killed."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.cli import main
from core.models.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors: one thread (conftest)


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    d = tmp_path / "images"
    d.mkdir()
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)).save(d / f"{i}.png")
    (d / "notes.txt").write_text("not an image")
    return d


def _args(folder, out, *extra):
    return ["train", "--data", str(folder), "--out", str(out), "--resolution", "8", "--model-size", "tiny",
            "--batch", "4", "--sample-every", "0", "--checkpoint-every", "0", "--threads", "1", "--device", "cpu",
            *extra]


def test_train_then_resume_further(folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_args(folder, out, "--steps", "2")) == 0
    captured = capsys.readouterr()
    assert "skipped 1 file" in captured.err  # the text file is counted, not fatal
    den = load_checkpoint(out / "model")
    assert den.resolution == 8 and den.channels == 3 and den.meta["trained_steps"] == 2 and den.clip_sample
    assert main(_args(folder, out, "--steps", "3", "--resume", "--no-clip")) == 0
    den = load_checkpoint(out / "model")
    assert den.meta["trained_steps"] == 3 and not den.clip_sample  # an inference default a resume may change
    state = json.loads((out / "checkpoint" / "train_state.json").read_text())
    assert state["step"] == 3 and state["config"]["steps"] == 3


def test_resume_keeps_the_recipe_unless_a_change_is_asked_for(folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_args(folder, out, "--steps", "1", "--lr", "3e-4", "--label-dropout", "0.1")) == 0
    assert main(_args(folder, out, "--steps", "2", "--resume")) == 0  # no flag: the saved recipe, nothing logged
    state = json.loads((out / "checkpoint" / "train_state.json").read_text())
    assert state["config"]["lr"] == 3e-4 and state["config"]["label_dropout"] == 0.1
    assert state["recipe_changes"] == []
    capsys.readouterr()
    assert main(_args(folder, out, "--steps", "3", "--resume", "--label-dropout", "0.5")) == 0
    assert "recipe changed at step 2: label_dropout 0.1 → 0.5" in capsys.readouterr().err
    state = json.loads((out / "checkpoint" / "train_state.json").read_text())
    assert state["config"]["label_dropout"] == 0.5 and state["config"]["lr"] == 3e-4
    assert state["recipe_changes"] == [{"step": 2, "label_dropout": [0.1, 0.5]}]
    assert load_checkpoint(out / "model").meta["label_dropout"] == 0.5
    capsys.readouterr()
    assert main(_args(folder, out, "--steps", "4", "--resume", "--ema", "0.99")) == 0
    assert "recipe changed at step 3: ema_decay 0.999 → 0.99" in capsys.readouterr().err
    state = json.loads((out / "checkpoint" / "train_state.json").read_text())
    assert state["config"]["ema_decay"] == 0.99 and state["recipe_changes"][-1] == {"step": 3,
                                                                                    "ema_decay": [0.999, 0.99]}
    assert load_checkpoint(out / "model").meta["ema_decay"] == 0.99


@pytest.mark.parametrize("extra, message", [
    (["--steps", "0"], "steps must be ≥ 1"),
    (["--model-size", "huge"], "invalid choice"),
    (["--threads", "0"], "--threads"),
    (["--resume"], "no checkpoint to resume"),
    (["--device", "tpu"], "unknown device"),
])
def test_bad_input_is_one_line(folder, tmp_path, capsys, extra, message):
    try:
        rc = main(_args(folder, tmp_path / "run", *extra))
    except SystemExit as e:  # argparse's own errors exit from the parser
        rc = e.code
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_missing_data_and_existing_run(folder, tmp_path, capsys):
    assert main(_args(tmp_path / "nope", tmp_path / "run", "--steps", "1")) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main(_args(folder, tmp_path / "run", "--steps", "1")) == 0
    capsys.readouterr()
    assert main(_args(folder, tmp_path / "run", "--steps", "2")) == 2
    assert "--resume" in capsys.readouterr().err


def test_sigterm_saves_a_resumable_checkpoint(folder, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", "from core.cli import entry_point; entry_point()",
                             *_args(folder, out, "--steps", "1000000")], stderr=subprocess.PIPE, text=True,
                            env=env, cwd=ROOT)
    try:
        line = proc.stderr.readline()
        while line and not line.startswith("training"):  # wait until the loop is about to start
            line = proc.stderr.readline()
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130 and "continue with --resume" in err
    state = json.loads((out / "checkpoint" / "train_state.json").read_text())
    assert 0 <= state["step"] < 1000000
    load_checkpoint(out / "checkpoint")
