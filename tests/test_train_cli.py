"""ddpm train: runs, resumes, refuses bad input with one line (numbers out of range, an output place it can never
write, found before the first step), relays warnings as one line, and saves an exact checkpoint when killed."""
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from safetensors.torch import load_file

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
    start = [ln for ln in captured.err.splitlines() if ln.startswith("training ")]
    assert len(start) == 1 and start[0].startswith("training tiny UNet (")
    assert start[0].endswith(f" on {folder}: 4 images 3×8×8; cpu, fp32; step 0 → 2")  # core.jobs.training.describe_run
    assert captured.out.startswith("done: step 2, ")
    den = load_checkpoint(out / "model")
    assert den.resolution == 8 and den.channels == 3 and den.meta["trained_steps"] == 2 and den.clip_sample
    assert main(_args(folder, out, "--steps", "3", "--resume", "--no-clip")) == 0
    captured = capsys.readouterr()
    assert any(ln.startswith("resuming tiny UNet (") and ln.endswith("; step 2 → 3") for ln in captured.err.splitlines())
    assert captured.out.startswith("done: step 3, ")
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
    (["--steps", "0"], "argument --steps: must be an integer in 1…100000000, got '0'"),
    (["--steps", "1e3"], "argument --steps: must be an integer in 1…"),
    (["--batch", "0"], "argument --batch: must be an integer in 1…4096"),
    (["--batch", "100000"], "argument --batch: must be an integer in 1…4096"),
    (["--resolution", "2"], "argument --resolution: must be an integer in 4…512"),
    (["--T", "1"], "argument --T: must be an integer in 2…100000"),
    (["--lr", "nan"], "argument --lr: must be a finite number in (0, 1], got 'nan'"),
    (["--lr", "inf"], "argument --lr: must be a finite number in (0, 1]"),
    (["--lr", "0"], "argument --lr: must be a finite number in (0, 1]"),
    (["--lr=-1e-4"], "argument --lr: must be a finite number in (0, 1]"),
    (["--warmup", "-1"], "argument --warmup: must be an integer in 0…"),
    (["--ema", "1"], "argument --ema: must be a finite number in [0, 1)"),
    (["--ema", "nan"], "argument --ema: must be a finite number in [0, 1)"),
    (["--label-dropout", "1.5"], "argument --label-dropout: must be a finite number in [0, 1)"),
    (["--min-snr", "inf"], "argument --min-snr: must be a finite number in (0, 1000]"),
    (["--min-snr", "0"], "argument --min-snr: must be a finite number in (0, 1000]"),
    (["--seed", "-1"], "argument --seed: must be an integer in 0…"),
    (["--checkpoint-every", "-1"], "argument --checkpoint-every: must be an integer in 0…"),
    (["--sample-every", "1e9"], "argument --sample-every: must be an integer in 0…"),
    (["--model-size", "huge"], "invalid choice"),
    (["--threads", "0"], "argument --threads: must be an integer in 1…1024"),
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


def _same_tensors(a: Path, b: Path) -> None:
    for f in ("checkpoint/model.safetensors", "checkpoint/train_state.safetensors", "model/model.safetensors"):
        ta, tb = load_file(str(a / f)), load_file(str(b / f))
        assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta), f


def test_sigterm_at_a_random_moment_saves_a_checkpoint_that_resumes_exactly(folder, tmp_path):
    """`kill PID` during a long run: exit 130 with a checkpoint at a whole step; resuming it to two steps more
    gives bit for bit the weights of a run that went straight there."""
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", "from core.cli import entry_point; entry_point()",
                             *_args(folder, out, "--steps", "1000000")], stderr=subprocess.PIPE, text=True,
                            env=env, cwd=ROOT)
    try:
        line = proc.stderr.readline()
        while line and not line.startswith("training"):  # the loop is about to start (the handler is in place)
            line = proc.stderr.readline()
        time.sleep(random.uniform(0.3, 1.0))
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130 and "continue with --resume" in err and "Traceback" not in err
    said = re.search(r"interrupted at step (\d+); checkpoint in (.+) \(continue with --resume\)", err)
    assert said and said.group(2) == str(out / "checkpoint")
    state = json.loads((out / "checkpoint" / "train_state.json").read_text())
    k = state["step"]
    assert k == int(said.group(1)) and k >= 1  # the step it said it stopped at, saved after that whole step
    assert load_checkpoint(out / "checkpoint").meta["trained_steps"] == k
    assert not (out / "model").exists()  # the run did not end
    assert main(_args(folder, out, "--steps", str(k + 2), "--resume")) == 0
    assert json.loads((out / "checkpoint" / "train_state.json").read_text())["step"] == k + 2
    assert load_checkpoint(out / "model").meta["trained_steps"] == k + 2
    assert main(_args(folder, tmp_path / "straight", "--steps", str(k + 2))) == 0
    _same_tensors(out, tmp_path / "straight")


def test_an_output_place_that_can_never_be_written_is_refused_before_the_first_step(folder, tmp_path, capsys,
                                                                                     monkeypatch):
    import core.train

    def no_step(self):
        raise AssertionError("a training step ran before the output place was checked")
    monkeypatch.setattr(core.train.Trainer, "train_step", no_step)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    run = tmp_path / "run"
    (run / "checkpoint").parent.mkdir()
    (run / "checkpoint").write_text("a file where the run writes a folder")
    for out, message in ((a_file / "run", "notes.txt is a file, not a folder"),
                         (run, "checkpoint: is a file")):
        assert main(_args(folder, out, "--steps", "5", "--checkpoint-every", "0")) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and err.startswith("ddpm train: error: ") and len(err.splitlines()) == 1


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes in read-only folders")
def test_a_read_only_output_folder_is_refused_before_the_first_step(folder, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert main(_args(folder, ro / "run", "--steps", "5")) == 2
    finally:
        ro.chmod(0o755)
    err = capsys.readouterr().err.strip()
    assert "cannot" in err and len(err.splitlines()) == 1


def test_a_warning_while_training_is_one_line_of_ours(folder, tmp_path, capsys, monkeypatch):
    import core.train
    real = core.train.Trainer._update_ema

    def noisy(self):
        warnings.warn("something odd in a library\n  with a second line", UserWarning)
        return real(self)
    monkeypatch.setattr(core.train.Trainer, "_update_ema", noisy)
    assert main(_args(folder, tmp_path / "run", "--steps", "3")) == 0
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "warning:" in ln.lower()]
    assert len(lines) == 2 and lines[0].startswith(f"ddpm train: warning: {folder}: skipped 1 file")
    assert lines[1] == "ddpm train: warning: something odd in a library"  # once, one line, no Python framing
    assert "UserWarning" not in err and "with a second line" not in err
