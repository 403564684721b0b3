"""ddpm train under torchrun (2 gloo processes on the CPU): DDP really averages gradients, a SIGTERM stops every
rank at one step boundary and the resumed run is the uninterrupted one bit for bit, a rank that fails takes the
others down with it, and a resume at another world size says so.

Every run is the ``tiny`` UNet on 8×8 images for a few steps; the processes are started by the real launcher,
``.venv/bin/torchrun`` (c10d rendezvous on a free local port), one torch thread each.

Tolerance of "the same weights": 2 processes × batch 8 and 1 process × batch 16 see the same samples, t and ε (the
data order and per-sample noise do not depend on the split, see core.train), so the only difference is the order
of float32 sums (one mean over 16 samples vs two means over 8 averaged by the all-reduce). After K = 4 AdamW steps
at lr 1e-3, ≥ 99.9% of the parameters agree to 1e-6 and all to 1e-4 (measured: 34 of 268,083 above 1e-6, the worst
2e-5: Adam's m/√v amplifies the rounding where a gradient is ≈ 0). Adam moves a weight by up to lr = 1e-3 a step,
so a run that did *not* average gradients (each rank stepping on its own half) misses by orders of magnitude. One
process with ``--accumulate 2`` × batch 8 sums its micro-batches as the all-reduce does: bit-identical to DDP.
"""
import json
import os
import shutil
import socket
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
TORCHRUN = Path(sys.executable).with_name("torchrun")
STEPS = 8

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.skipif(os.name != "posix", reason="POSIX signals and torchrun"),
              pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed")]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """24 images in two class folders (so labels and label dropout take part), plus one unreadable file."""
    rng = np.random.default_rng(0)
    d = tmp_path_factory.mktemp("data") / "images"
    for c in ("a", "b"):
        (d / c).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)).save(d / c / f"{i}.png")
    (d / "a" / "broken.png").write_bytes(b"not a png")
    return d


def _args(folder, out, steps, batch, *extra):
    return ["train", "--data", str(folder), "--out", str(out), "--resolution", "8", "--model-size", "tiny",
            "--batch", str(batch), "--sample-every", "0", "--checkpoint-every", "0", "--threads", "1",
            "--device", "cpu", "--warmup", "0", "--lr", "1e-3", "--label-dropout", "0.3", "--hflip",
            "--workers", "0", "--steps", str(steps), *extra]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# the `ddpm` entry point; on rank RANK_AT (argv[1]) core.train.loss_weights (once per step, between the step's
# draws and its backward) does ACTION (argv[2]) on its AT-th (argv[3]) call
_CHILD = r"""
import os, signal, sys
import core.train as T
rank_at, action, at = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
if int(os.environ["RANK"]) == rank_at and at > 0:
    real, calls = T.loss_weights, [0]
    def loss_weights(*a, **k):
        calls[0] += 1
        if calls[0] == at:
            if action == "sigterm-self":
                os.kill(os.getpid(), signal.SIGTERM)
            elif action == "sigterm-launcher":
                os.kill(os.getppid(), signal.SIGTERM)
            elif action == "fail":
                raise RuntimeError("this rank fails on purpose")
        return real(*a, **k)
    T.loss_weights = loss_weights
from core.cli import entry_point
sys.argv = ["ddpm", *sys.argv[4:]]
entry_point()
"""


def torchrun(tmp_path, nproc, args, rank_at=-1, action="none", at=0, timeout=240):
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    cmd = [str(TORCHRUN), "--nnodes", "1", "--nproc_per_node", str(nproc), "--rdzv-backend", "c10d",
           "--rdzv-endpoint", f"127.0.0.1:{_free_port()}", "--max-restarts", "0", str(script), str(rank_at), action,
           str(at), *args]
    return subprocess.run(cmd, env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def _weights(out: Path, name="checkpoint/train_state.safetensors") -> dict:
    return load_file(str(out / name))


def assert_same_run(a: Path, b: Path) -> None:
    """Every tensor of checkpoint/ and model/ equal bit for bit, and the same saved training state."""
    for f in ("checkpoint/model.safetensors", "checkpoint/train_state.safetensors", "model/model.safetensors"):
        ta, tb = _weights(a, f), _weights(b, f)
        assert ta.keys() == tb.keys(), f
        different = [k for k in ta if not torch.equal(ta[k], tb[k])]
        assert not different, f"{f}: {len(different)} tensors differ, e.g. {different[:3]}"
    sa, sb = (json.loads((x / "checkpoint" / "train_state.json").read_text()) for x in (a, b))
    for s in (sa, sb):
        del s["config"]["out"]
    assert sa == sb


@pytest.fixture(scope="module")
def straight2(folder, tmp_path_factory):
    """STEPS steps by 2 processes × batch 4, never stopped."""
    tmp = tmp_path_factory.mktemp("straight2")
    proc = torchrun(tmp, 2, _args(folder, tmp / "run", STEPS, 4))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp / "run"


def test_two_processes_of_8_train_the_weights_one_process_of_16_trains(folder, tmp_path):
    k = 4
    proc = torchrun(tmp_path, 2, _args(folder, tmp_path / "ddp", k, 8))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "global batch 16 = 2 processes × batch 8 × 1 accumulation step" in proc.stderr
    assert proc.stderr.count("training tiny UNet") == 1  # rank 0 alone speaks
    assert proc.stderr.count("skipped 1 file") == 1
    state = json.loads((tmp_path / "ddp" / "checkpoint" / "train_state.json").read_text())
    assert state["world_size"] == 2 and state["global_batch"] == 16 and state["config"]["batch_size"] == 8
    assert state["position"] == 16 * k
    assert main(_args(folder, tmp_path / "one", k, 16)) == 0
    assert main(_args(folder, tmp_path / "acc", k, 8, "--accumulate", "2")) == 0  # 1 process, 2 micro-batches of 8
    ddp = _weights(tmp_path / "ddp")
    acc = _weights(tmp_path / "acc")
    assert all(torch.equal(ddp[n], acc[n]) for n in acc if n.startswith("model."))
    ref = _weights(tmp_path / "one")
    d = torch.cat([(ddp[n] - v).abs().flatten() for n, v in ref.items() if n.startswith("model.")])
    assert float(d.max()) <= 1e-4 and float((d > 1e-6).float().mean()) <= 1e-3, (float(d.max()), int((d > 1e-6).sum()))
    init = load_file(str(tmp_path / "one" / "checkpoint" / "model.safetensors"))  # EMA: mostly the first weights
    moved = torch.cat([(ref[f"model.{n}"] - v).abs().flatten() for n, v in init.items()])
    assert float(moved.median()) > 1e-4  # the weights did move, by far more than they differ
    # and the loss reported is the all-reduced mean: the same history as the one process's
    one = json.loads((tmp_path / "one" / "checkpoint" / "train_state.json").read_text())
    assert abs(state["loss_avg"] - one["loss_avg"]) < 1e-5


@pytest.mark.parametrize("who", ["sigterm-self", "sigterm-launcher"])
def test_a_sigterm_stops_both_ranks_at_one_step_and_the_resume_equals_the_straight_run(folder, straight2,
                                                                                       tmp_path, who):
    at = 3
    out = tmp_path / "run"
    proc = torchrun(tmp_path, 2, _args(folder, out, STEPS, 4), rank_at=1, action=who, at=at)
    assert proc.returncode != 0  # torchrun reports the workers' exit 130 as a failure
    assert "interrupted at step" in proc.stderr, proc.stderr[-3000:]
    assert str(ROOT / "core") not in proc.stderr  # no worker traceback (torchrun's own report of exit 130 aside)
    assert "ddpm train: interrupted\n" not in proc.stderr  # no rank was stopped at once by a repeated signal
    step = json.loads((out / "checkpoint" / "train_state.json").read_text())["step"]
    if who == "sigterm-self":  # only rank 1 was signalled: rank 0 stopped after the very same step
        assert step == at
    else:  # torchrun forwarded it to both (twice to rank 1's group at most: the repeat is ignored)
        assert at - 1 <= step < STEPS
    proc = torchrun(tmp_path, 2, _args(folder, out, STEPS, 4, "--resume"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "data order changes" not in proc.stderr
    assert_same_run(straight2, out)


def test_a_rank_that_fails_takes_the_others_down(folder, tmp_path):
    proc = torchrun(tmp_path, 2, _args(folder, tmp_path / "run", 50, 4), rank_at=1, action="fail", at=2,
                    timeout=120)
    assert proc.returncode != 0
    assert "this rank fails on purpose" in proc.stderr
    assert not (tmp_path / "run" / "model").exists()


def test_a_resume_at_another_world_size_says_the_data_order_changes(folder, straight2, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(straight2, out)
    assert main(_args(folder, out, STEPS + 2, 4, "--resume")) == 0  # 1 process now
    err = capsys.readouterr().err
    assert "the run was trained by 2 processes (global batch 8); now 1 (global batch 4)" in err
    assert "the data order changes" in err
    state = json.loads((out / "checkpoint" / "train_state.json").read_text())
    assert state["recipe_changes"] == [{"step": STEPS, "world_size": [2, 1], "global_batch": [8, 4]}]
    assert state["world_size"] == 1 and state["position"] == 8 * STEPS + 4 * 2


def test_the_torchrun_command_of_the_train_panels_settings():
    from core.jobs.training import torchrun_command
    from core.train import TrainConfig
    cfg = TrainConfig(data="/data/my photos", out="/runs/x", steps=2000, batch_size=32, resolution=64,
                      model_size="base", device="auto")
    cmd = torchrun_command(cfg)
    assert cmd.startswith("torchrun --standalone --nproc_per_node gpu --no-python ddpm train ")
    assert "--data '/data/my photos'" in cmd and "--batch 32" in cmd and "--model-size base" in cmd
    assert "--resolution 64" in cmd and "--steps 2000" in cmd
    two = torchrun_command(cfg, nnodes=2, nproc="8", endpoint="node0:29500")
    assert "--nnodes 2 --nproc_per_node 8 --rdzv-backend c10d --rdzv-endpoint node0:29500" in two
    assert "--standalone" not in two
    import shlex
    argv = shlex.split(cmd)
    ddpm = argv.index("ddpm")
    from core.cli import build_parser
    args = build_parser().parse_args(argv[ddpm + 1:])  # the command parses as ddpm train's own arguments
    assert args.batch == 32 and args.data == "/data/my photos"


def test_the_train_panel_shows_the_torchrun_command_and_copies_it(qtbot, tmp_path):
    pytest.importorskip("pytestqt")
    from PySide6.QtWidgets import QApplication, QLineEdit
    from ddpm_gui.main_window import MainWindow
    w = MainWindow()
    qtbot.addWidget(w)
    panel = w.train_panel
    edit = panel.findChild(QLineEdit, "torchrunCommandEdit")
    assert edit is not None and edit.isReadOnly()
    panel.batchSpin.setValue(24)
    panel.deviceCombo.setCurrentIndex(panel.deviceCombo.findData("cpu"))
    panel.set_out(tmp_path / "run")
    assert edit.text() == panel.torchrun_command()
    assert "--nproc_per_node 2" in edit.text() and "--batch 24" in edit.text() and "--device cpu" in edit.text()
    assert str(tmp_path / "run") in edit.text()
    assert panel.copy_torchrun_command() and QApplication.clipboard().text() == edit.text()
    w.close()
