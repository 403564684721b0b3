"""Hostile or broken model folders: sizes are checked from the config (closed form) and the weights file's header
before anything is built; absurd values are one line; diffusers' own log lines become one warning line of ours;
text from model files is escaped."""
import json
import struct

import pytest
import torch

from core.messages import printable, relay_warnings
from core.models import checkpoint
from core.models.checkpoint import MAX_PARAMETERS, ModelLoadError, load_checkpoint, save_checkpoint
from core.models.load import load_model
from core.models.unet import UNet, UNetConfig, unet_parameter_count
from core.schedule import NoiseSchedule

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors: one thread (conftest)

SMALL = dict(resolution=8, in_channels=1, base_channels=8, channel_mults=(1, 2), attention_resolutions=(4,), groups=4)


def built_count(cfg: UNetConfig) -> int:
    with torch.device("meta"):  # the real modules, no memory
        return sum(p.numel() for p in UNet(cfg).parameters())


@pytest.mark.parametrize("cfg", [
    UNetConfig(),
    UNetConfig(**SMALL),
    UNetConfig(resolution=9, in_channels=3, base_channels=8, channel_mults=(1, 2, 3), num_res_blocks=2,
               attention_resolutions=(9, 5, 3), groups=4, num_classes=3),  # odd sizes: 9 → 5 → 3, up 3 → 6 → 12
    UNetConfig(resolution=8, base_channels=4, channel_mults=(1,), groups=2, attention_resolutions=(8,)),
    UNetConfig(resolution=12, base_channels=6, channel_mults=(2, 1, 4), num_res_blocks=3, attention_resolutions=(6, 12),
               groups=3, num_classes=10, prediction_type="v_prediction"),
])
def test_the_closed_form_parameter_count_is_exact(cfg):
    assert unet_parameter_count(cfg) == built_count(cfg)


@pytest.fixture
def our_model(tmp_path):
    torch.manual_seed(0)
    folder = save_checkpoint(tmp_path / "m", UNet(UNetConfig(**SMALL)), NoiseSchedule.preset("linear", T=20))
    return folder


def edit_unet(folder, **changes):
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config["unet"].update(changes)
    path.write_text(json.dumps(config))


@pytest.fixture
def no_building(monkeypatch):
    """Any attempt to build our UNet fails the test: refusals must come before any allocation."""
    def refuse(*a, **k):
        raise AssertionError("the UNet was built")
    monkeypatch.setattr(checkpoint, "UNet", refuse)


@pytest.mark.parametrize("changes,message", [
    ({"num_res_blocks": 10**6}, "num_res_blocks must be an integer in 1…32, got 1000000"),
    ({"base_channels": 10**6}, f"more than the {MAX_PARAMETERS:.3g} this program loads"),
    ({"base_channels": 4096, "channel_mults": [1, 2, 2, 2]}, f"more than the {MAX_PARAMETERS:.3g}"),
    ({"base_channels": 256}, "holds only"),  # under the cap, far beyond what the weights file holds
    ({"num_res_blocks": 32, "channel_mults": [1, 2, 2, 2, 2]}, "holds only"),
])
def test_huge_configs_of_ours_are_refused_before_building(our_model, no_building, changes, message):
    edit_unet(our_model, **changes)
    with pytest.raises(ModelLoadError, match=None) as e:
        load_checkpoint(our_model)
    text = str(e.value)
    assert message in text and str(our_model) in text and "\n" not in text
    if "holds only" in text:  # both numbers are named: the config's count and the file's
        params = unet_parameter_count(UNetConfig(**{**UNetConfig(**SMALL).to_dict(), **changes}))
        assert f"{params:,} parameters" in text and f"{built_count(UNetConfig(**SMALL)):,} values" in text


def test_a_real_small_model_still_loads(our_model):
    den = load_checkpoint(our_model)
    assert sum(p.numel() for p in den.net.parameters()) == unet_parameter_count(UNetConfig(**SMALL))


@pytest.mark.parametrize("changes,message", [
    ({"base_channels": -8}, "base_channels must be an integer in 1…"),
    ({"groups": 0}, "groups must be an integer in 1…"),
    ({"num_res_blocks": "2"}, "num_res_blocks must be an integer in 1…32, got '2'"),
    ({"resolution": 8.5}, "resolution must be an integer in 1…4096, got 8.5"),
    ({"in_channels": True}, "in_channels must be an integer"),
    ({"num_classes": -1}, "num_classes must be an integer in 0…"),
    ({"channel_mults": [1, "x"]}, "each of channel_mults must be an integer"),
    ({"channel_mults": []}, "channel_mults must be a list of 1…12 integers"),
    ({"channel_mults": 2}, "channel_mults must be a list"),
    ({"attention_resolutions": {"4": 1}}, "attention_resolutions must be a list"),
    ({"dropout": "0.1"}, "dropout must be a number in [0, 1)"),
    ({"dropout": 1e400}, "dropout must be a number in [0, 1), got inf"),
    ({"prediction_type": 3}, "prediction_type must be one of"),
    ({"resolution": 10**4000}, "resolution must be an integer in 1…4096, got 1000000000"),
    ({"groups": 3}, "not divisible by 3 groups"),
])
def test_absurd_config_values_are_one_line(our_model, no_building, changes, message):
    edit_unet(our_model, **changes)
    with pytest.raises(ModelLoadError) as e:
        load_checkpoint(our_model)
    assert message in str(e.value) and "config.json" in str(e.value) and "\n" not in str(e.value)


def test_a_config_number_python_cannot_read_is_one_line(our_model, no_building):
    path = our_model / "config.json"
    path.write_text(path.read_text().replace('"resolution": 8', '"resolution": 1' + "0" * 5000, 1))
    with pytest.raises(ModelLoadError, match=r"config.json: not valid JSON \(") as e:
        load_checkpoint(our_model)
    assert "\n" not in str(e.value) and len(str(e.value)) < 300


def test_an_oversized_or_deeply_nested_config_is_one_line(our_model, no_building, monkeypatch):
    path = our_model / "config.json"
    limit = checkpoint.MAX_CONFIG_BYTES
    monkeypatch.setattr(checkpoint, "MAX_CONFIG_BYTES", 100)
    with pytest.raises(ModelLoadError, match=r"config.json: [\d,]+ bytes is too large for a model config"):
        load_checkpoint(our_model)
    monkeypatch.setattr(checkpoint, "MAX_CONFIG_BYTES", limit)
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ModelLoadError, match="config.json: not a model config"):
        load_checkpoint(our_model)


def test_a_safetensors_header_that_promises_more_than_the_file_has_is_refused(our_model, no_building):
    header = json.dumps({"w": {"dtype": "F32", "shape": [10**9], "data_offsets": [0, 4 * 10**9]}}).encode()
    (our_model / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 64)
    with pytest.raises(ModelLoadError, match=r"not a valid safetensors file \(its header lists 4,000,000,000 bytes"):
        load_checkpoint(our_model)


def test_text_from_our_config_is_escaped(our_model):
    path = our_model / "config.json"
    config = json.loads(path.read_text())
    path.write_text(json.dumps({**config, "name": "evil\x1b[2J\nname\u202e"}))
    assert load_checkpoint(our_model).name == r"evil\x1b[2J\nname\u202e"
    config["unet"]["depth\x1b[31m"] = 3
    path.write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=r"unknown keys: depth\\x1b\[31m"):
        load_checkpoint(our_model)


# ----- diffusers ------------------------------------------------------------------------------------------------
TINY = dict(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
            down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
            norm_num_groups=4)
SKIP = dict(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(32, 64, 64), layers_per_block=2,
            down_block_types=("SkipDownBlock2D", "AttnSkipDownBlock2D", "SkipDownBlock2D"),
            up_block_types=("SkipUpBlock2D", "AttnSkipUpBlock2D", "SkipUpBlock2D"), time_embedding_type="fourier",
            norm_num_groups=None)  # score-SDE's NCSN++ layout
EXACT = [
    TINY,
    {**TINY, "layers_per_block": 2, "attention_head_dim": None, "num_class_embeds": 5,
     "resnet_time_scale_shift": "scale_shift"},
    {**TINY, "block_out_channels": (8, 16, 24), "down_block_types": ("DownBlock2D", "AttnDownBlock2D",
                                                                     "ResnetDownsampleBlock2D"),
     "up_block_types": ("ResnetUpsampleBlock2D", "AttnUpBlock2D", "UpBlock2D"), "downsample_type": "resnet",
     "upsample_type": "resnet", "time_embedding_type": "fourier", "attention_head_dim": 3, "time_embedding_dim": 20,
     "in_channels": 3, "out_channels": 6},
    {**TINY, "time_embedding_type": "learned", "num_train_timesteps": 50, "class_embed_type": "timestep",
     "add_attention": False, "attn_norm_num_groups": 2},
    {**TINY, "mid_block_type": None},
    SKIP,
]


@pytest.fixture(scope="module")
def diffusers():
    return pytest.importorskip("diffusers")


def diffusers_estimate(diffusers, config):
    from core.models.diffusers_adapter import _init_defaults, check_unet2d_config, unet2d_parameter_count
    return unet2d_parameter_count(check_unet2d_config(config, _init_defaults(diffusers.UNet2DModel), "config.json"))


@pytest.mark.parametrize("config", EXACT)
def test_the_diffusers_estimate_is_exact_for_the_pipeline_blocks(diffusers, config):
    with torch.device("meta"):
        net = diffusers.UNet2DModel(**config)
    assert diffusers_estimate(diffusers, config) == sum(p.numel() for p in net.parameters())


def test_the_diffusers_estimate_is_a_lower_bound_for_other_blocks(diffusers):
    config = dict(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(32, 64), layers_per_block=2,
                  down_block_types=("DownEncoderBlock2D", "AttnDownEncoderBlock2D"),
                  up_block_types=("AttnUpDecoderBlock2D", "UpDecoderBlock2D"), norm_num_groups=8)
    with torch.device("meta"):
        real = sum(p.numel() for p in diffusers.UNet2DModel(**config).parameters())
    assert 0.6 * real <= diffusers_estimate(diffusers, config) <= real


@pytest.fixture
def diffusers_folder(diffusers, tmp_path):
    torch.manual_seed(0)
    diffusers.UNet2DModel(**TINY).save_pretrained(tmp_path / "unet")
    return tmp_path / "unet"


def edit_diffusers(folder, **changes):
    path = folder / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


@pytest.mark.parametrize("changes,message", [
    ({"layers_per_block": 10**6}, "layers_per_block must be an integer in 1…32, got 1000000"),
    ({"block_out_channels": [10**6, 10**6]}, f"more than the {MAX_PARAMETERS:.3g} this program loads"),
    ({"block_out_channels": [512, 1024]}, "holds only"),
    ({"block_out_channels": [8, -16]}, "each of block_out_channels must be an integer in 1…"),
    ({"norm_num_groups": 0}, "norm_num_groups must be null or an integer in 1…"),
    ({"norm_num_groups": 3}, "block_out_channels 8 is not divisible by norm_num_groups 3"),
    ({"layers_per_block": "1"}, "layers_per_block must be an integer in 1…32, got '1'"),
    ({"in_channels": 0}, "in_channels must be an integer in 1…64, got 0"),
    ({"sample_size": "8"}, "sample_size must be an integer"),
    ({"down_block_types": ["DownBlock2D"]}, "down_block_types must be a list of 2 block names"),
    ({"attention_head_dim": 1.5}, "attention_head_dim must be null or an integer"),
])
def test_hostile_diffusers_configs_are_refused_before_building(diffusers_folder, diffusers, monkeypatch, changes,
                                                               message):
    edit_diffusers(diffusers_folder, **changes)
    monkeypatch.setattr(diffusers.UNet2DModel, "from_config",
                        classmethod(lambda *a, **k: pytest.fail("diffusers built the network")))
    with pytest.raises(ModelLoadError) as e:
        load_model(str(diffusers_folder))
    assert message in str(e.value) and "config.json" in str(e.value) and "\n" not in str(e.value)


def test_a_real_tiny_diffusers_model_still_loads(diffusers_folder, diffusers):
    den = load_model(str(diffusers_folder))
    assert sum(p.numel() for p in den.net.parameters()) == diffusers_estimate(diffusers, TINY)


def test_what_diffusers_logs_at_load_is_one_warning_line_of_ours(diffusers_folder, capfd):
    edit_diffusers(diffusers_folder, bogus_key=3)
    capfd.readouterr()
    lines = []
    with relay_warnings(lines.append):
        load_model(str(diffusers_folder))
    assert capfd.readouterr().err == ""  # diffusers printed nothing itself
    assert len(lines) == 1 and "\n" not in lines[0]
    assert lines[0].startswith(f"{diffusers_folder / 'config.json'}: ") and "bogus_key" in lines[0]


def test_text_from_a_diffusers_config_is_escaped(diffusers_folder):
    edit_diffusers(diffusers_folder, _class_name="Evil\x1b[2J\nModel")
    with pytest.raises(ModelLoadError) as e:
        load_model(str(diffusers_folder))
    assert r"Evil\x1b[2J\nModel" in str(e.value) and "\x1b" not in str(e.value)
    assert printable(str(e.value)) == str(e.value)
