"""load_model(SPEC): built-in names, oracles, our folders, diffusers folders (with and without diffusers), refusals."""
import json
import sys

import numpy as np
import pytest
import torch

from core.images import save_image
from core.models.checkpoint import ModelLoadError, save_checkpoint
from core.models.unet import UNetDenoiser
from core.models.load import builtin_models, load_model, oracle_for_array
from core.models.oracle import OracleDenoiser
from core.models.unet import UNet, UNetConfig
from core.schedule import NoiseSchedule

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors: one thread (conftest)


@pytest.fixture
def image_folder(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(4):
        save_image(folder / f"{i}.png", rng.uniform(-1, 1, (12, 12, 3)).astype(np.float32))
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_a_builtin_that_is_not_installed_is_one_line():
    with pytest.raises(ModelLoadError, match="built-in model 'builtin:nosuch' is not installed") as e:
        load_model("builtin:nosuch")
    assert "\n" not in str(e.value) and all(name in str(e.value) for name in builtin_models())
    with pytest.raises(ModelLoadError, match="not a built-in model name"):
        load_model("builtin:../etc")


def test_the_installed_builtin_models_load():
    """Pixel models load as Denoisers; a built-in Stable Diffusion pipeline is refused by load_model in one line
    (it loads with load_latent; tests/test_builtin_mnist_sd.py)."""
    from core.models.load import is_latent_spec
    pixel = [spec for spec in builtin_models() if not is_latent_spec(spec)]
    assert "builtin:mnist" in pixel
    for spec in builtin_models():
        if spec in pixel:
            den = load_model(spec)
            assert isinstance(den, UNetDenoiser) and den.schedule is not None
        else:
            with pytest.raises(ModelLoadError, match="Stable Diffusion pipeline"):
                load_model(spec)


def test_oracle_over_a_folder_keeps_its_size_and_colour(image_folder):
    den = load_model(f"oracle:{image_folder}")
    assert isinstance(den, OracleDenoiser) and len(den) == 4
    assert (den.resolution, den.channels, den.prediction_type, den.schedule) == (12, 3, "sample", None)
    assert load_model(f"oracle:{image_folder}", resolution=6).resolution == 6


def test_oracle_over_one_photo(image_folder, tmp_path):
    den = load_model(f"oracle:{image_folder / '0.png'}")
    assert len(den) == 1 and den.resolution == 12
    grey = tmp_path / "grey.png"
    save_image(grey, np.zeros((40, 30, 3), np.float32))
    den = load_model(f"oracle:{grey}")
    assert (den.resolution, den.channels) == (32, 1)  # not square: the default size; grey: one channel
    with pytest.raises(ModelLoadError, match="no such image or folder"):
        load_model(f"oracle:{tmp_path / 'missing.png'}")
    with pytest.raises(ModelLoadError, match="needs a PATH"):
        load_model("oracle:")


def test_oracle_over_an_array_equals_the_oracle_over_its_file(tmp_path):
    photo = np.random.default_rng(3).integers(0, 256, (20, 20, 3), dtype=np.uint8)
    save_image(tmp_path / "p.png", photo)
    from_file, from_array = load_model(f"oracle:{tmp_path / 'p.png'}"), oracle_for_array(photo)
    x, t = torch.randn(2, 3, 20, 20, generator=torch.Generator().manual_seed(0)), torch.tensor([10, 700])
    sched = NoiseSchedule.preset("linear", T=1000)
    assert from_array.name == "oracle:pasted photo" and from_array.resolution == 20
    assert torch.equal(from_file.model_output(x, t, schedule=sched), from_array.model_output(x, t, schedule=sched))


def test_oracle_over_builtin_mnist_is_the_class_conditional_training_split():
    from core.data import load_dataset
    try:
        data = load_dataset("builtin:mnist")
    except (ValueError, OSError) as e:
        pytest.skip(f"built-in MNIST unavailable: {e}")
    den = load_model("oracle:builtin:mnist")
    assert len(den) == len(data) and den.num_classes == 10 and (den.resolution, den.channels) == (28, 1)


def test_our_folder_by_path_or_by_its_files(tmp_path):
    torch.manual_seed(0)
    net = UNet(UNetConfig(resolution=8, base_channels=8, channel_mults=(1,), attention_resolutions=(), groups=4))
    save_checkpoint(tmp_path / "m", net, NoiseSchedule.preset(T=50))
    assert isinstance(load_model(str(tmp_path / "m")), UNetDenoiser)
    assert isinstance(load_model(str(tmp_path / "m" / "config.json")), UNetDenoiser)
    with pytest.raises(ModelLoadError, match="nothing is downloaded"):
        load_model("google/ddpm-cifar10-32")
    (tmp_path / "weights.safetensors").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="a model is a folder"):
        load_model(str(tmp_path / "weights.safetensors"))
    with pytest.raises(ValueError, match="unknown device"):
        load_model(str(tmp_path / "m"), device="tpu")


@pytest.fixture
def diffusers_folders(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                                 layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4)
    sched = diffusers.DDIMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction",
                                    clip_sample=False, timestep_spacing="trailing", num_train_timesteps=500)
    diffusers.DDIMPipeline(unet=unet, scheduler=sched).save_pretrained(tmp_path / "pipe")
    unet.save_pretrained(tmp_path / "unet")
    sched.save_pretrained(tmp_path / "unet")  # scheduler_config.json beside the UNet
    return tmp_path, unet


def test_diffusers_pipeline_and_unet_folders_take_the_schedulers_defaults(diffusers_folders):
    root, unet = diffusers_folders
    for name in ("pipe", "unet"):
        den = load_model(str(root / name))
        assert den.schedule == NoiseSchedule.preset("cosine", T=500)
        assert (den.prediction_type, den.clip_sample, den.timestep_spacing) == ("v_prediction", False, "trailing")
        x, t = torch.randn(2, 1, 8, 8), torch.tensor([4, 400])
        with torch.no_grad():
            assert torch.equal(den.model_output(x, t), unet(x, t).sample)


def test_diffusers_folder_without_diffusers_names_the_extra(diffusers_folders, monkeypatch):
    root, _ = diffusers_folders
    monkeypatch.setitem(sys.modules, "diffusers", None)  # import diffusers now raises ImportError
    with pytest.raises(ModelLoadError, match=r"pip install 'ddpm-studio\[diffusers\]'") as e:
        load_model(str(root / "pipe"))
    assert "\n" not in str(e.value)


def test_diffusers_mismatches_and_pickles_are_one_line(diffusers_folders):
    root, _ = diffusers_folders
    cfg_path = root / "unet" / "config.json"
    config = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**config, "block_out_channels": [16, 32], "norm_num_groups": 8}))
    with pytest.raises(ModelLoadError, match="has shape .* but the config's network expects"):
        load_model(str(root / "unet"))
    cfg_path.write_text(json.dumps({**config, "_class_name": "UNet2DConditionModel"}))
    with pytest.raises(ModelLoadError, match="only UNet2DModel is supported"):
        load_model(str(root / "unet"))
    cfg_path.write_text(json.dumps(config))
    weights = root / "unet" / "diffusion_pytorch_model.safetensors"
    weights.rename(weights.with_suffix(".bin"))
    with pytest.raises(ModelLoadError, match="diffusion_pytorch_model.bin: refusing to open a pickle"):
        load_model(str(root / "unet"))


def test_an_oracles_name_from_a_file_name_is_escaped(tmp_path):
    photo = tmp_path / "evil\x1b[2J\nname.png"
    save_image(photo, np.zeros((8, 8, 3), np.float32))
    assert load_model(f"oracle:{photo}").name == r"oracle:evil\x1b[2J\nname.png"
    folder = tmp_path / "dir\x1b]0;title\x07"
    folder.mkdir()
    save_image(folder / "a.png", np.zeros((8, 8, 3), np.float32))
    name = load_model(f"oracle:{folder}").name
    assert "\x1b" not in name and "\x07" not in name and name.endswith(r"dir\x1b]0;title\x07")
