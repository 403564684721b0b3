"""Loading a Stable Diffusion pipeline folder (core.latent.pipeline) and its faults, each refused with one line
that names the part (a ModelLoadError), before any library reads a bad file; the sampler's checks of a text
condition; the inputs of text_to_image. Tiny random pipelines from tests/sd_tiny.py, nothing downloaded."""
import json
import pickle
import shutil
import time
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")
from conftest import save_tiny_unet  # noqa: E402
from sd_tiny import save_tiny_pipeline  # noqa: E402

from core.latent.generate import text_to_image  # noqa: E402
from core.latent.parts import check_pipeline_folder, is_latent_pipeline  # noqa: E402
from core.latent.pipeline import load_pipeline, pixels_to_vae_input  # noqa: E402
from core.models.checkpoint import ModelLoadError  # noqa: E402
from core.samplers import SamplerError, run_to_end, sample  # noqa: E402
from core.samplers.guidance import TextCondition  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors: one thread (conftest)

WEIGHTS = {"unet": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model", "text_encoder": "model"}


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return save_tiny_pipeline(tmp_path_factory.mktemp("sd-load") / "sd")


@pytest.fixture(scope="module")
def pipe(good):
    return load_pipeline(good)


@pytest.fixture
def copy(good, tmp_path):
    """A fresh copy of the good folder to break."""
    return shutil.copytree(good, tmp_path / "sd")


def edit_json(path, **changes):
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def refused(folder, *words, **kw) -> str:
    """load_pipeline(folder) raises one ModelLoadError line holding each of ``words``."""
    with pytest.raises(ModelLoadError) as e:
        load_pipeline(folder, **kw)
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 600, msg
    for w in words:
        assert w in msg, msg
    return msg


# ----- a good folder ------------------------------------------------------------------------------------------
def test_loads_with_the_schedulers_defaults(pipe, good):
    from diffusers import DDIMScheduler
    den = pipe.denoiser
    assert (den.resolution, den.channels, den.prediction_type, den.clip_sample) == (8, 4, "epsilon", False)
    assert (den.timestep_spacing, den.steps_offset, den.set_alpha_to_one) == ("leading", 1, False)
    ref = DDIMScheduler.from_pretrained(str(good), subfolder="scheduler")
    assert np.allclose(den.schedule.alphas_cumprod, ref.alphas_cumprod.double().numpy(), rtol=1e-6, atol=0)
    assert (pipe.vae_scale_factor, pipe.default_size, pipe.scaling_factor, pipe.name) == (2, 16, 0.18215, "sd")
    assert pipe.device == torch.device("cpu") and den.net.dtype == torch.float32
    assert pipe.latent_size() == (8, 8) and pipe.latent_size(16, 24) == (8, 12)
    for bad in (15, 0, -2, 16.0, True):
        with pytest.raises(ValueError, match="multiple of 2"):
            pipe.latent_size(bad, 16)


def test_is_latent_pipeline(good, tmp_path):
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
    assert is_latent_pipeline(good)
    pixel = tmp_path / "ddpm"
    DDPMPipeline(unet=UNet2DModel(sample_size=8, block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
                                  down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2),
                 scheduler=DDPMScheduler()).save_pretrained(pixel)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text("{not json")
    for folder in (pixel, broken, tmp_path / "empty", tmp_path / "absent", save_tiny_unet(tmp_path / "ours")):
        folder.mkdir(exist_ok=True) if folder.name == "empty" else None
        assert not is_latent_pipeline(folder), folder


def test_load_prints_nothing_and_warns_nothing(good, capfd):
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_pipeline(good)
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")  # no progress bars, no library log lines
    assert [str(w.message) for w in caught] == []


def test_library_warnings_become_one_line_user_warnings(copy, capfd):
    edit_json(copy / "unet" / "config.json", an_unknown_option=1)  # diffusers logs "… will be ignored"
    capfd.readouterr()
    with pytest.warns(UserWarning) as caught:
        load_pipeline(copy)
    assert capfd.readouterr() == ("", "")
    msgs = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert any("an_unknown_option" in m for m in msgs), msgs
    assert all("\n" not in m and m.startswith(str(copy)) for m in msgs), msgs


def test_a_hugging_face_snapshot_is_named_by_its_repo(good, tmp_path):
    snap = shutil.copytree(good, tmp_path / "models--someone--tiny-sd" / "snapshots" / "0123abc")
    assert load_pipeline(snap).name == "someone/tiny-sd"


def test_fp16_variant_weights_load(copy, pipe):
    """A folder with only ``*.fp16.safetensors`` (diffusers' fp16 variant) loads them, as variant "fp16"."""
    for part, stem in WEIGHTS.items():
        (copy / part / f"{stem}.safetensors").rename(copy / part / f"{stem}.fp16.safetensors")
    assert all(p.variant == "fp16" for n, p in check_pipeline_folder(copy).items() if n in WEIGHTS)
    other = load_pipeline(copy)
    for a, b in zip(other.denoiser.net.parameters(), pipe.denoiser.net.parameters()):
        assert torch.equal(a, b)


def test_bf16_on_the_cpu_loads_and_samples_in_float32(good):
    low = load_pipeline(good, precision="bf16")
    assert low.denoiser.net.dtype == torch.bfloat16 and low.text_encoder.dtype == torch.bfloat16
    last = run_to_end(text_to_image(low, "a cat", sampler="ddim", steps=2, n=1))
    assert last.x_t.dtype == torch.float32 and torch.isfinite(last.x_t).all()
    assert low.decode(last.x_t).dtype == torch.float32


def test_precision(good):
    refused(good, "fp16 needs a GPU", precision="fp16")
    refused(good, "unknown precision 'fp8'", precision="fp8")


# ----- faults, each one line naming the part ------------------------------------------------------------------
def test_no_such_folder(tmp_path):
    refused(tmp_path / "nowhere", "no such pipeline folder")
    refused(tmp_path, "model_index.json")  # a folder that is not a pipeline


@pytest.mark.parametrize("part", ["unet", "vae", "text_encoder", "tokenizer", "scheduler"])
def test_a_missing_part_folder(copy, part):
    shutil.rmtree(copy / part)
    refused(copy, f"{copy / part}: missing", part)


@pytest.mark.parametrize("part", ["unet", "vae", "text_encoder"])
def test_missing_weights(copy, part):
    (copy / part / f"{WEIGHTS[part]}.safetensors").unlink()
    refused(copy, "missing", f"{WEIGHTS[part]}.safetensors", f"the pipeline's {part} weights")


@pytest.mark.parametrize("part", ["unet", "vae", "text_encoder"])
def test_pickle_only_weights_are_refused_unopened(copy, part, tmp_path):
    marker = tmp_path / "unpickled"

    class Trap:  # unpickling this would create the marker file
        def __reduce__(self):
            return open, (str(marker), "w")

    (copy / part / f"{WEIGHTS[part]}.safetensors").unlink()
    name = "pytorch_model.bin" if part == "text_encoder" else f"{WEIGHTS[part]}.bin"
    (copy / part / name).write_bytes(pickle.dumps(Trap()))
    refused(copy, f"{copy / part / name}: refusing to open a pickle checkpoint")
    assert not marker.exists()


def test_sharded_weights_are_refused(copy):
    (copy / "unet" / "diffusion_pytorch_model.safetensors").rename(
        copy / "unet" / "diffusion_pytorch_model-00001-of-00001.safetensors")
    (copy / "unet" / "diffusion_pytorch_model.safetensors.index.json").write_text("{}")
    refused(copy, "unet", "sharded weights are not supported")


def test_sdxl_is_not_supported_yet(copy):
    edit_json(copy / "model_index.json", _class_name="StableDiffusionXLPipeline",
              text_encoder_2=["transformers", "CLIPTextModelWithProjection"],
              tokenizer_2=["transformers", "CLIPTokenizer"])
    refused(copy, "StableDiffusionXLPipeline", "not supported yet")
    edit_json(copy / "model_index.json", _class_name="SomeOtherPipeline")  # two text encoders, any name
    refused(copy, "not supported yet")


def test_the_index_must_name_each_part_with_a_supported_class(copy):
    edit_json(copy / "model_index.json", text_encoder=[None, None])
    refused(copy, "the pipeline has no text_encoder")
    edit_json(copy / "model_index.json", text_encoder=["transformers", "CLIPTextModel"],
              vae=["diffusers", "AutoencoderTiny"])
    refused(copy, "the vae is a AutoencoderTiny", "supported: AutoencoderKL")


def test_an_inpainting_unet_is_refused(copy):
    edit_json(copy / "unet" / "config.json", in_channels=9)
    refused(copy, "unet", "in_channels 9", "latent_channels 4", "inpainting")


@pytest.mark.parametrize("part,changes", [
    ("unet", dict(block_out_channels=[8 * 64, 16 * 64])),
    ("vae", dict(block_out_channels=[8 * 64, 16 * 64])),
    ("text_encoder", dict(hidden_size=16 * 64, intermediate_size=32 * 64)),
    ("unet", dict(layers_per_block=256)),  # deep, not wide: refused by its depth, before sizing it
])
def test_a_config_far_larger_than_its_weights_is_refused_before_building(copy, part, changes):
    edit_json(copy / part / "config.json", **changes)
    start = time.perf_counter()
    msg = refused(copy, f"{copy / part}")
    assert time.perf_counter() - start < 2.0
    assert "does not fit these weights" in msg or "plausible" in msg, msg


@pytest.mark.parametrize("part,changes", [("text_encoder", dict(num_hidden_layers=3)),
                                          ("vae", dict(layers_per_block=2)),
                                          ("unet", dict(layers_per_block=2)),
                                          ("text_encoder", dict(hidden_size=32, intermediate_size=64))])
def test_a_config_that_does_not_match_its_weights_is_refused(copy, part, changes):
    """Near misses pass the size check; the libraries would fill what the weights lack with a random init (or
    leave it on the meta device) and only log it — a partly random network is refused instead."""
    edit_json(copy / part / "config.json", **changes)
    refused(copy, f"{copy / part}")


@pytest.mark.parametrize("part,changes,words", [
    ("unet", dict(sample_size=10**12), "sample_size = 1000000000000 is not a plausible size"),
    ("unet", dict(cross_attention_dim=-10**9), "not a plausible size"),
    ("unet", dict(layers_per_block=1000), "layers_per_block = 1000 layers is not plausible"),
    ("text_encoder", dict(num_hidden_layers=10**9), "not a plausible size"),
    ("text_encoder", dict(num_hidden_layers=5000), "num_hidden_layers = 5000 layers is not plausible"),
    ("vae", dict(block_out_channels=[8] * 100), "lists 100 values, too many"),
    ("unet", dict(transformer_layers_per_block=[200, 200]), "plausible"),
    ("unet", dict(norm_num_groups=0), "cannot build the network from its config"),
])
def test_absurd_numbers_are_refused(copy, part, changes, words):
    edit_json(copy / part / "config.json", **changes)
    start = time.perf_counter()
    refused(copy, f"{copy / part}", words)
    assert time.perf_counter() - start < 2.0


def test_tokenizer_files(copy, good):
    # real SD folders ship vocab.json + merges.txt (no tokenizer.json): that layout loads and tokenizes the same
    tok = copy / "tokenizer"
    vocab = load_pipeline(good).tokenizer.get_vocab()
    (tok / "vocab.json").write_text(json.dumps(vocab))
    merges = json.loads((tok / "tokenizer.json").read_text())["model"]["merges"]
    (tok / "merges.txt").write_text("#version: 0.2\n" + "\n".join(m if isinstance(m, str) else " ".join(m)
                                                                  for m in merges) + "\n")
    (tok / "tokenizer.json").unlink()
    classic = load_pipeline(copy).tokenizer
    for text in ("a red cat", "dog, dog!"):
        assert classic(text).input_ids == load_pipeline(good).tokenizer(text).input_ids
    (tok / "merges.txt").unlink()
    refused(copy, f"{tok}: missing", "vocab.json and merges.txt")


def test_an_unreadable_tokenizer(copy):
    (copy / "tokenizer" / "tokenizer.json").write_text("{not json")
    refused(copy, f"{copy / 'tokenizer'}: cannot read the tokenizer")


def test_a_bad_scheduler_config(copy):
    edit_json(copy / "scheduler" / "scheduler_config.json", prediction_type="flow")
    refused(copy, "scheduler_config.json", "prediction_type")
    (copy / "scheduler" / "scheduler_config.json").write_text("[")
    refused(copy, "scheduler_config.json", "not valid JSON")


def test_check_pipeline_folder_names_each_part(good):
    parts = check_pipeline_folder(good)
    assert set(parts) == {"unet", "vae", "text_encoder", "tokenizer", "scheduler"}
    assert parts["unet"].weights.name == "diffusion_pytorch_model.safetensors" and parts["unet"].variant is None


# ----- the sampler's checks of a text condition ---------------------------------------------------------------
def test_a_pixel_model_takes_no_text_condition(tmp_path):
    from core.models.load import load_model
    den = load_model(str(save_tiny_unet(tmp_path / "pixel")))
    cond = TextCondition(torch.zeros(1, 16, 16), torch.zeros(1, 16, 16))
    with pytest.raises(SamplerError, match="takes no text prompt"):
        sample(den, sampler="ddim", steps=2, condition=cond)


def test_the_sd_unet_needs_a_text_condition(pipe):
    with pytest.raises(SamplerError, match="needs a text condition"):
        sample(pipe.denoiser, sampler="ddim", steps=2)
    cond = pipe.encode_prompt("a cat", n=1)
    with pytest.raises(SamplerError, match="text condition for 1 images"):
        sample(pipe.denoiser, sampler="ddim", steps=2, n=2, condition=cond)
    with pytest.raises(SamplerError, match="cannot be combined"):
        sample(pipe.denoiser, sampler="ddim", steps=2, condition=cond, class_labels=0)
    last = run_to_end(sample(pipe.denoiser, sampler="ddim", steps=2, condition=cond, size=(8, 12)))
    assert last.x_t.shape == (1, 4, 8, 12)


# ----- the inputs of text_to_image and the prompt encoder -----------------------------------------------------
def test_pixels_to_vae_input():
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, (17, 25, 3), dtype=np.uint8)
    x = pixels_to_vae_input(u8[:16, :24], 2)
    assert x.shape == (1, 3, 16, 24) and x.dtype == torch.float32
    assert torch.allclose(x, torch.from_numpy(u8[:16, :24].transpose(2, 0, 1)[None] / 127.5 - 1).float(), atol=1e-6)
    signed = u8[:16, :24].astype(np.float32) / 127.5 - 1  # core's float convention: [−1, 1]
    assert torch.allclose(pixels_to_vae_input(signed, 2), x, atol=1e-6)
    assert pixels_to_vae_input(u8, 8).shape == (1, 3, 16, 24)  # floored to multiples of the factor
    assert pixels_to_vae_input(u8[..., 0], 2).shape == (1, 3, 16, 24)  # grey → 3 channels
    with pytest.raises(ValueError, match="smaller than 8×8"):
        pixels_to_vae_input(u8[:7], 8)


def test_text_to_image_refuses_bad_input(pipe):
    photo = np.zeros((16, 16, 3), np.uint8)
    for kw, match in [(dict(init_image=photo), "either t_start"), (dict(init_image=photo, t_start=500, strength=0.5),
                                                                    "either t_start"),
                      (dict(strength=0.5), "need an init image"), (dict(t_start=10), "need an init image"),
                      (dict(init_image=photo, strength=0.0), "strength must be in"),
                      (dict(init_image=photo, strength=0.01, steps=10), "leaves no step"),
                      (dict(seed="x"), "seed must be an integer"), (dict(seed=True), "seed must be an integer")]:
        with pytest.raises(SamplerError, match=match):
            text_to_image(pipe, "a cat", sampler="ddim", **kw)
    with pytest.raises(ValueError, match="multiple of 2"):
        text_to_image(pipe, "a cat", height=15)
    for bad, match in [(3, "must be text"), ([], "must be text"), (["a", None], "must be text"),
                       ("x" * 10_001, "at most 10,000")]:
        with pytest.raises(ValueError, match=match):
            pipe.encode_prompt(bad)
    with pytest.raises(ValueError, match="do not divide"):
        pipe.encode_prompt(["a", "b"], n=3)
    with pytest.raises(ValueError, match="2 negative prompts for 3 prompts"):
        pipe.encode_prompt(["a", "b", "c"], ["x", "y"], n=3)


def test_sdedit_start_from_t(pipe):
    """An init image with t_start (SDEdit spacing, as pixel models do) starts at t_start and ends at a sample."""
    photo = np.random.default_rng(1).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    steps = list(text_to_image(pipe, "a cat", sampler="ddim", steps=5, init_image=photo, t_start=400))
    assert steps[0].t == 400 and len(steps) == 5 and steps[-1].x_t.shape == (1, 4, 8, 12)


def test_loading_yields_each_stage_then_the_pipeline(good):
    from core.latent.pipeline import LOAD_STAGES, LatentPipeline, loading
    seen = list(loading(good))
    assert seen[:-1] == list(LOAD_STAGES)
    assert isinstance(seen[-1], LatentPipeline)
    gen = loading(good)
    assert next(gen) == LOAD_STAGES[0] and next(gen) == LOAD_STAGES[1]
    gen.close()  # a cancel between parts: nothing else is loaded, nothing raised


def test_without_the_extra_one_line_names_it(good, monkeypatch):
    """diffusers/transformers missing: one line with the install hint, nothing half-loaded."""
    import sys
    monkeypatch.setitem(sys.modules, "diffusers", None)  # `import diffusers` now raises ImportError
    with pytest.raises(ModelLoadError) as e:
        load_pipeline(good)
    text = str(e.value)
    assert "\n" not in text and "diffusers" in text and "pip install" in text
