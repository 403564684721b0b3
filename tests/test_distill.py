"""Distillation (``TrainConfig.teacher``, ``ddpm train --teacher``): the student starts as the teacher's network and
regresses the teacher's prediction, so an autoguided pair ε_0 + w·(ε_1 − ε_0) becomes one network. Checked
against the two networks called by hand, on tiny 8×8 models."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core.cli import main
from core.data import Dataset
from core.models.checkpoint import load_checkpoint
from core.models.unet import UNet
from core.train import TrainConfig, train
from conftest import perturbed_unet, save_guided_pair

pytestmark = pytest.mark.usefixtures("one_torch_thread")

W = 2.0
_net = perturbed_unet


def _data(n=12, res=8):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (n, 1, res, res)).astype(np.float32)
    return Dataset(x, (np.arange(n) % 3).astype(np.int64), 3, 0, "toy", ("a", "b", "c"))


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    return save_guided_pair(tmp_path_factory.mktemp("teach"), weight=W)


def _cfg(tmp_path, teacher, name="run", **kw):
    base = dict(data="toy", out=str(tmp_path / name), steps=4, batch_size=6, sample_every=0, checkpoint_every=0,
                warmup_steps=0, sample_steps=2, device="cpu", teacher=str(teacher), label_dropout=0.3)
    base.update(kw)
    return TrainConfig(**base)


def _by_hand_error(student: UNet, model: UNet, guide: UNet, n: int = 64) -> float:
    """Mean ‖student − (ε_0 + w·(ε_1 − ε_0))‖² on fresh inputs (x_t, t, y), the two teacher networks called here."""
    g = torch.Generator().manual_seed(123)
    x = torch.randn(n, 1, 8, 8, generator=g)
    t = torch.randint(0, 40, (n,), generator=g)
    y = torch.randint(-1, 3, (n,), generator=g)
    with torch.no_grad():
        e1, e0 = model(x, t, y), guide(x, t, y)
        return float(((student.eval()(x, t, y) - (e0 + W * (e1 - e0))) ** 2).mean())


def test_a_student_of_a_plain_model_starts_as_it_and_has_nothing_to_learn(tmp_path, teachers):
    model, _, _ = teachers
    tr = train(_cfg(tmp_path, model, steps=3), dataset=_data())
    losses = [ev.loss for ev in tr if ev.kind == "step"]
    assert losses == [0.0, 0.0, 0.0]   # the same network on the same inputs: the target exactly
    teacher = load_checkpoint(model).net
    assert all(torch.equal(a, b) for a, b in zip(tr.model.state_dict().values(), teacher.state_dict().values()))
    saved = load_checkpoint(tmp_path / "run" / "model")
    assert saved.schedule.T == 40 and saved.meta["distilled_from"] == str(model)


def test_distilling_an_autoguided_pair_approaches_it_in_one_network(tmp_path, teachers):
    model, guide, guided = teachers
    m, gd = load_checkpoint(model).net, load_checkpoint(guide).net
    tr = train(_cfg(tmp_path, guided, steps=80, lr=3e-3, ema_decay=0.0), dataset=_data())
    start = _by_hand_error(_net(0), m, gd)         # the student's start: the model alone
    first = next(iter(tr))
    assert first.loss > 0
    for _ in tr:
        pass
    end = _by_hand_error(load_checkpoint(tmp_path / "run" / "model").net, m, gd)
    assert end < 0.3 * start, (start, end)
    assert "autoguidance" not in (tmp_path / "run" / "model" / "config.json").read_text()   # one network


def test_resume_of_a_distillation_is_exact(tmp_path, teachers):
    _, _, guided = teachers
    straight = train(_cfg(tmp_path, guided, "straight", steps=4, lr=1e-3), dataset=_data())
    for _ in straight:
        pass
    first = train(_cfg(tmp_path, guided, "pieces", steps=2, lr=1e-3), dataset=_data())
    for _ in first:
        pass
    second = train(_cfg(tmp_path, guided, "pieces", steps=4, lr=1e-3), resume=True, dataset=_data())
    for _ in second:
        pass
    a, b = straight.model.state_dict(), second.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_teacher_that_does_not_fit_the_data_is_a_one_line_error(tmp_path, teachers, capsys):
    model, _, _ = teachers
    with pytest.raises(ValueError, match="--teacher .*8×8.*the data has 12×12"):
        train(_cfg(tmp_path, model), dataset=_data(res=12))
    assert not (tmp_path / "run").exists()
    assert main(["train", "--data", "builtin:mnist", "--out", str(tmp_path / "cli"), "--teacher", str(model),
                 "--steps", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "teacher" in err and "Traceback" not in err
