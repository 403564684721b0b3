"""Our model folder: round trip, atomic writes, JSON-safe metadata, one-line mismatches, and pickles refused unopened."""
import json
import pickle

import numpy as np
import pytest
import torch

from core.models.checkpoint import ModelLoadError, load_checkpoint, save_checkpoint, write_model_files
from core.models.unet import UNet, UNetConfig, UNetDenoiser
from core.schedule import NoiseSchedule

CFG = dict(resolution=8, in_channels=1, base_channels=8, channel_mults=(1, 2), attention_resolutions=(4,), groups=4)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors: one thread (conftest)


def small_unet(**kw):
    torch.manual_seed(0)
    return UNet(UNetConfig(**{**CFG, **kw}))


@pytest.fixture
def saved(tmp_path):
    net = small_unet(num_classes=3)
    sched = NoiseSchedule.preset("cosine", T=200)
    folder = save_checkpoint(tmp_path / "model", net, sched, step=np.int64(120), loss=np.float32(0.25),
                             command="ddpm train --steps 120", variance_type="fixed_large")
    return folder, net, sched


def test_round_trip_gives_the_same_network_and_schedule(saved):
    folder, net, sched = saved
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "schedule.json"]
    den = load_checkpoint(folder)
    assert isinstance(den, UNetDenoiser) and den.schedule == sched
    assert (den.resolution, den.channels, den.num_classes, den.prediction_type) == (8, 1, 3, "epsilon")
    assert den.variance_type == "fixed_large" and den.clip_sample is True
    assert den.meta["step"] == 120 and den.meta["command"] == "ddpm train --steps 120"
    x, t, y = torch.randn(2, 1, 8, 8), torch.tensor([3, 150]), torch.tensor([0, -1])
    with torch.no_grad():
        assert torch.equal(den.model_output(x, t, y), net.eval()(x, t, y))
    config = json.loads((folder / "config.json").read_text())
    assert config["format"] == "ddpm-studio.model" and config["version"] == 1
    assert config["unet"] == UNetConfig(**CFG, num_classes=3).to_dict() and config["loss"] == 0.25


def test_metadata_must_be_json_safe(tmp_path):
    net, sched = small_unet(), NoiseSchedule.preset()
    save_checkpoint(tmp_path / "m", net, sched, loss=float("nan"), history=(1.0, np.float64(2.0)))
    config = json.loads((tmp_path / "m" / "config.json").read_text())  # strict JSON: NaN became null
    assert config["loss"] is None and config["history"] == [1.0, 2.0]
    with pytest.raises(ModelLoadError, match="'opt' of type object cannot be stored"):
        save_checkpoint(tmp_path / "bad", net, sched, opt=object())
    assert not (tmp_path / "bad").exists()  # atomic: nothing half-written is left
    with pytest.raises(ModelLoadError, match="may not set resolution"):
        save_checkpoint(tmp_path / "bad", net, sched, resolution=32)


def test_write_model_files_fills_an_existing_folder(tmp_path):
    (tmp_path / "run").mkdir()
    write_model_files(tmp_path / "run", small_unet(), NoiseSchedule.preset(), step=1)
    assert load_checkpoint(tmp_path / "run").meta["step"] == 1
    with pytest.raises(ModelLoadError, match="no such folder"):
        write_model_files(tmp_path / "missing", small_unet(), NoiseSchedule.preset())


def test_saving_a_compiled_module_keeps_the_plain_keys(tmp_path):
    net = small_unet()

    class Wrapped(torch.nn.Module):  # what torch.compile returns: the original under _orig_mod
        def __init__(self):
            super().__init__()
            self._orig_mod = net

    save_checkpoint(tmp_path / "m", Wrapped(), NoiseSchedule.preset())
    assert load_checkpoint(tmp_path / "m").net.state_dict().keys() == net.state_dict().keys()


def _edit_config(folder, **changes):
    path = folder / "config.json"
    config = json.loads(path.read_text())
    for k, v in changes.items():
        if v is None:
            config.pop(k, None)
        else:
            config[k] = v
    path.write_text(json.dumps(config))


@pytest.mark.parametrize("changes,match", [
    ({"resolution": 16}, "resolution is 16 but the UNet config says 8"),
    ({"channels": 3}, "channels is 3 but the UNet config says 1"),
    ({"format": "other"}, "format is 'other'"),
    ({"version": 2}, "version 2 is newer"),
    ({"unet": {**UNetConfig(**CFG).to_dict(), "depth": 3}}, "unknown keys: depth"),
    ({"unet": None}, "no 'unet'"),
    ({"variance_type": "learned"}, "variance_type 'learned'"),
])
def test_config_mismatches_are_one_line(saved, changes, match):
    folder = saved[0]
    _edit_config(folder, **changes)
    with pytest.raises(ModelLoadError, match=match) as e:
        load_checkpoint(folder)
    assert "\n" not in str(e.value)


def test_weights_that_do_not_fit_name_the_tensor(saved, tmp_path):
    folder = saved[0]
    # the config says 16 base channels but the weights are for 8
    _edit_config(folder, unet={**UNetConfig(**CFG, num_classes=3).to_dict(), "base_channels": 16})
    with pytest.raises(ModelLoadError, match=r"time_mlp.0.weight has shape \[32, 8\] but .* expects \[64, 16\]"):
        load_checkpoint(folder)
    # an unconditional config over conditional weights: an unexpected key
    _edit_config(folder, unet=UNetConfig(**CFG).to_dict(), num_classes=0)
    with pytest.raises(ModelLoadError, match="unexpected class_emb.weight"):
        load_checkpoint(folder)


def test_missing_and_corrupt_files_are_one_line(saved):
    folder = saved[0]
    (folder / "schedule.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="schedule.json: schedule file is not valid JSON"):
        load_checkpoint(folder)
    NoiseSchedule.preset().save(folder / "schedule.json")
    (folder / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(ModelLoadError, match="not a valid safetensors file"):
        load_checkpoint(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="weights are missing"):
        load_checkpoint(folder)
    with pytest.raises(ModelLoadError, match="no such folder"):
        load_checkpoint(folder / "nope")
    (folder / "config.json").unlink()
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_checkpoint(folder)


class Payload:
    """Unpickling this creates the marker file: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("layout", ["file", "folder", "disguised"])
def test_a_pickle_checkpoint_is_refused_and_never_runs(tmp_path, saved, layout):
    live = tmp_path / "live-marker"
    pickle.loads(pickle.dumps(Payload(live)))  # the crafted payload does run code when unpickled …
    assert live.exists()
    marker = tmp_path / "marker"
    blob = pickle.dumps({"state_dict": Payload(marker)})
    folder = saved[0]
    if layout == "file":
        target = tmp_path / "model.ckpt"
        target.write_bytes(blob)
        match = "refusing to open a pickle checkpoint"
    elif layout == "folder":  # our folder with model.pt instead of model.safetensors
        (folder / "model.safetensors").unlink()
        (folder / "model.pt").write_bytes(blob)
        target, match = folder, "model.pt: refusing to open a pickle"
    else:  # a pickle renamed to .safetensors
        (folder / "model.safetensors").write_bytes(blob)
        target, match = folder, "not a valid safetensors file"
    with pytest.raises(ModelLoadError, match=match) as e:
        load_checkpoint(target)
    assert "\n" not in str(e.value)
    assert not marker.exists()  # … but loading never unpickled it


def test_loading_draws_nothing_from_the_global_rng(tmp_path):
    """A model loaded on a worker (the Generate panel preloads one) must not race a training run seeding its
    initial weights from the global torch RNG: loading builds the net on the meta device, then assigns the weights."""
    from core.models.checkpoint import load_checkpoint, save_checkpoint
    from core.models.unet import UNet, UNetConfig
    from core.schedule import NoiseSchedule
    torch.manual_seed(0)
    net = UNet(UNetConfig(resolution=8, base_channels=8, channel_mults=(1, 2), attention_resolutions=(), groups=4))
    save_checkpoint(tmp_path / "m", net, NoiseSchedule.preset("linear", T=10))
    state = torch.get_rng_state()
    loaded = load_checkpoint(tmp_path / "m").net
    assert torch.equal(state, torch.get_rng_state())
    for (k, a), (_, b) in zip(net.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("num_classes, resolution", [(0, 8), (3, 8), (3, 7)])
def test_cpu_inference_runs_a_trace_with_the_same_bits_as_the_network(num_classes, resolution):
    net = small_unet(num_classes=num_classes, resolution=resolution)
    den = UNetDenoiser(net, NoiseSchedule.preset("linear", T=100))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for b, t, labels in [(1, 5, None), (3, torch.tensor([0, 50, 99]), None), (4, 7, torch.tensor([0, -1, 2, 1])),
                             (2, torch.tensor([3.5, 80.25]), 1)]:
            x = torch.randn(b, 1, resolution, resolution, generator=g)
            if not num_classes:
                labels = None
            assert torch.equal(den.model_output(x, t, labels), net(x, t, labels))
        assert den._traces, "inference on the CPU should have gone through the trace"
        for p in net.parameters():   # the trace shares the weights: an in-place change (EMA, load) is seen
            p.mul_(0.9)
        x = torch.randn(2, 1, resolution, resolution, generator=g)
        assert torch.equal(den.model_output(x, 10), net(x, 10))
    fresh = UNetDenoiser(net)
    x = torch.randn(1, 1, resolution, resolution, generator=g)
    out = fresh.model_output(x, 3)   # with gradients: the plain network, no trace
    assert out.requires_grad and not fresh._traces


def test_a_network_the_tracer_cannot_follow_runs_as_it_is(monkeypatch):
    net = small_unet(num_classes=3)
    den = UNetDenoiser(net)

    def refuse(*a, **k):
        raise RuntimeError("tracer: unsupported op")
    monkeypatch.setattr(torch.jit, "trace", refuse)
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(den.model_output(x, 4, torch.tensor([0, 2])), net(x, 4, torch.tensor([0, 2])))
        assert torch.equal(den.model_output(x, 9), net(x, 9))   # the failure is remembered, not retried
    assert list(den._traces.values()) == [None]
