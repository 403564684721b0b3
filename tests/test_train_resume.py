"""ddpm train stopped by Ctrl+C (SIGINT) or `kill` (SIGTERM) in the middle of a step, then resumed: bit for bit the
run that was never stopped (every tensor of the checkpoint and of the final model, and the saved state).

The signal is sent by the training process itself from inside a step (after the step's random draws, before its
optimizer update), at a step picked at random, so it lands mid-step every time: a stop that saved at that moment
would save an RNG state some draws into the step, and the resumed run would draw different noise."""
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from core.cli import main

ROOT = Path(__file__).resolve().parents[1]
STEPS = 8

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.skipif(os.name != "posix", reason="POSIX signals")]

# the `ddpm` entry point, with core.train.loss_weights (called once per step, between the step's random draws and
# its backward pass) sending SIGNAL to this process on its AT-th call
_CHILD = r"""
import os, signal, sys
import core.train as T
sig, at = getattr(signal, sys.argv[1]), int(sys.argv[2])
real, calls = T.loss_weights, [0]
def loss_weights(*a, **k):
    calls[0] += 1
    if calls[0] == at:
        os.kill(os.getpid(), sig)
    return real(*a, **k)
T.loss_weights = loss_weights
from core.cli import entry_point
sys.argv = ["ddpm", *sys.argv[3:]]
entry_point()
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    rng = np.random.default_rng(0)
    d = tmp_path_factory.mktemp("data") / "images"
    d.mkdir()
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return d


def _args(folder, out, steps, *extra):
    return ["train", "--data", str(folder), "--out", str(out), "--resolution", "8", "--model-size", "tiny",
            "--batch", "4", "--sample-every", "0", "--checkpoint-every", "0", "--threads", "1", "--device", "cpu",
            "--warmup", "2", "--label-dropout", "0.5", "--steps", str(steps), *extra]


@pytest.fixture(scope="module")
def straight(folder, tmp_path_factory):
    """STEPS steps in one go."""
    out = tmp_path_factory.mktemp("straight") / "run"
    prev = torch.get_num_threads()
    try:
        assert main(_args(folder, out, STEPS)) == 0
    finally:
        torch.set_num_threads(prev)
    return out


def assert_same_run(a: Path, b: Path) -> None:
    """Every tensor of checkpoint/ and model/ equal bit for bit, and the same saved training state."""
    for f in ("checkpoint/model.safetensors", "checkpoint/train_state.safetensors", "model/model.safetensors"):
        ta, tb = load_file(str(a / f)), load_file(str(b / f))
        assert ta.keys() == tb.keys(), f
        different = [k for k in ta if not torch.equal(ta[k], tb[k])]
        assert not different, f"{f}: {len(different)} tensors differ, e.g. {different[:3]}"
    sa, sb = (json.loads((x / "checkpoint" / "train_state.json").read_text()) for x in (a, b))
    for s in (sa, sb):
        del s["config"]["out"]  # where the run is, the one thing that differs
    assert sa == sb  # step, loss history and average, optimizer settings


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_stop_mid_step_then_resume_equals_a_straight_run(folder, straight, tmp_path, sig):
    at = random.randint(2, STEPS - 2)  # the step the signal lands in
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", _CHILD, sig, str(at), *_args(folder, out, STEPS)],
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 130, proc.stderr
    assert f"interrupted at step {at};" in proc.stderr  # the step in flight was finished, then saved
    assert "Traceback" not in proc.stderr
    assert json.loads((out / "checkpoint" / "train_state.json").read_text())["step"] == at
    assert main(_args(folder, out, STEPS, "--resume")) == 0
    assert_same_run(straight, out)
