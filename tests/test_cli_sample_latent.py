"""``ddpm sample`` / ``ddpm noise`` on a Stable Diffusion pipeline: outputs equal the API, repo ids resolve from a
Hugging Face cache offline, ``--list-models`` lists it, bad input is one line with exit 2."""
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from core.cli import main  # noqa: E402
from core.images import load_image, save_image  # noqa: E402
from core.latent.forward import channel_view, fit_photo  # noqa: E402
from core.latent.generate import text_to_image  # noqa: E402
from core.models.load import is_latent_spec, load_latent, model_folder  # noqa: E402
from core.samplers import run_to_end  # noqa: E402
from conftest import cache_as_repo  # noqa: E402
from sd_tiny import save_tiny_pipeline  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    return save_tiny_pipeline(tmp_path_factory.mktemp("sd") / "tiny-sd")


@pytest.fixture(scope="module")
def pipe(sd):
    return load_latent(str(sd))


@pytest.fixture
def photo(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "photo.png"
    save_image(path, rng.integers(0, 256, (20, 28, 3), dtype=np.uint8))
    return path


@pytest.fixture
def hf_cache(sd, tmp_path, monkeypatch):
    """The tiny pipeline as ``tester/tiny-sd`` in a Hugging Face cache layout (blobs + relative symlinks)."""
    root = tmp_path / "hub"
    snap = cache_as_repo(sd, root)
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    return snap


def _api_images(pipe, **kw):
    last = run_to_end(text_to_image(pipe, **kw))
    return pipe.decode(last.x_t).clamp(-1, 1), last


def test_npz_holds_the_apis_images_and_latents(sd, pipe, tmp_path):
    out = tmp_path / "s.npz"
    assert main(["sample", "--model", str(sd), "--prompt", "a red cat", "--negative-prompt", "dog", "--steps", "6",
                 "--n", "2", "--seed", "4", "--guidance", "3", "--height", "12", "--width", "20", "-o", str(out)]) == 0
    d = np.load(out)
    images, last = _api_images(pipe, prompt="a red cat", negative_prompt="dog", steps=6, n=2, seed=4, guidance=3.0,
                               height=12, width=20)
    assert d["images"].shape == (2, 3, 12, 20) and d["latents"].shape == (2, 4, 6, 10)
    assert np.abs(d["images"] - images.numpy()).max() < 1e-6
    assert np.abs(d["latents"] - last.x_t.numpy()).max() < 1e-6


def test_defaults_are_ddim_one_image_guidance_7_5(sd, pipe, tmp_path, capsys):
    out = tmp_path / "s.npz"
    assert main(["sample", "--model", str(sd), "--prompt", "cat", "--steps", "4", "-o", str(out)]) == 0
    images, _ = _api_images(pipe, prompt="cat", steps=4, n=1, seed=0, guidance=7.5, sampler="ddim")
    assert np.abs(np.load(out)["images"] - images.numpy()).max() < 1e-6
    captured = capsys.readouterr()
    assert "with ddim, 4 steps" in captured.out and "it/s" in captured.err


def test_img2img_with_strength_and_with_t(sd, pipe, tmp_path, photo):
    for flag, value, kw in (("--strength", "0.5", dict(strength=0.5)), ("--t", "400", dict(t_start=400))):
        out = tmp_path / f"i{flag}.npz"
        assert main(["sample", "--model", str(sd), "--prompt", "cat", "--from", str(photo), flag, value,
                     "--steps", "6", "-o", str(out)]) == 0
        init = fit_photo(load_image(photo), pipe.default_size)
        images, _ = _api_images(pipe, prompt="cat", steps=6, init_image=init, **kw)
        assert np.abs(np.load(out)["images"] - images.numpy()).max() < 1e-6
        assert np.load(out)["images"].shape[-2:] == (10, 16)  # 20×28 scaled into 16 pixels, floored to even


def test_gif_shows_decoded_x_t_beside_x0(sd, tmp_path):
    pytest.importorskip("core.latent.decoders")
    out = tmp_path / "s.gif"
    assert main(["sample", "--model", str(sd), "--prompt", "cat", "--steps", "5", "--preview", "approx",
                 "-o", str(out)]) == 0
    from PIL import Image
    with Image.open(out) as im:
        assert im.n_frames == 5
        assert im.size == (16 + 4 + 16, 16)


def test_repo_id_from_the_cache_and_list_models(hf_cache, pipe, tmp_path, capsys):
    assert model_folder("tester/tiny-sd") == hf_cache and is_latent_spec("tester/tiny-sd")
    out = tmp_path / "s.npz"
    assert main(["sample", "--model", "tester/tiny-sd", "--prompt", "cat", "--steps", "3", "-o", str(out)]) == 0
    images, _ = _api_images(pipe, prompt="cat", steps=3)
    assert np.abs(np.load(out)["images"] - images.numpy()).max() < 1e-6
    capsys.readouterr()
    assert main(["sample", "--list-models"]) == 0
    listing = capsys.readouterr().out
    assert "tester/tiny-sd" in listing and "StableDiffusionPipeline" in listing


def test_a_repo_missing_from_the_cache_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    assert main(["sample", "--model", "someone/missing", "-o", str(tmp_path / "s.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "someone/missing" in err and str(tmp_path / "empty") in err and "nothing is downloaded" in err


@pytest.mark.parametrize("args, says", [
    (["--class", "3"], "--class is for pixel models"),
    (["--resolution", "16"], "--resolution is for pixel models"),
    ([], "give --prompt"),
    (["--prompt", "x", "--height", "13"], "multiple of 2"),
    (["--prompt", "x", "--t", "10"], "go with --from"),
    (["--prompt", "x", "--preview", "approx"], "write -o OUT.gif"),
])
def test_bad_input_is_one_line(sd, tmp_path, capsys, args, says):
    assert main(["sample", "--model", str(sd), *args, "-o", str(tmp_path / "s.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and says in err
    assert not (tmp_path / "s.png").exists()


def test_pixel_models_refuse_prompts(tmp_path, capsys):
    assert main(["sample", "--model", "builtin:mnist", "--prompt", "x", "-o", str(tmp_path / "s.png")]) == 2
    assert "--prompt is for Stable Diffusion pipelines" in capsys.readouterr().err


def test_a_pipeline_with_a_missing_part_names_it(sd, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(sd, broken)
    shutil.rmtree(broken / "vae")
    assert main(["sample", "--model", str(broken), "--prompt", "x", "-o", str(tmp_path / "s.png")]) == 2
    err = capsys.readouterr().err
    assert "vae" in err and "missing" in err


def test_noise_in_latent_space(sd, pipe, tmp_path, photo):
    out = tmp_path / "n.png"
    assert main(["noise", str(photo), "--model", str(sd), "--t", "0,500,999", "--seed", "2", "--npz",
                 "-o", str(out)]) == 0
    d = np.load(tmp_path / "n.npz")
    assert d["x0"].shape == (10, 16, 3) and d["z0"].shape == (4, 5, 8) and d["zt"].shape == (3, 4, 5, 8)
    # eq. 5 with the pipeline's schedule and one ε from the seed
    from core.forward import draw_noise
    eps = draw_noise(d["z0"].shape, 2).numpy()
    ab = pipe.denoiser.schedule.alphas_cumprod
    for k, t in enumerate((0, 500, 999)):
        want = np.sqrt(ab[t]) * d["z0"] + np.sqrt(1 - ab[t]) * eps
        assert np.abs(d["zt"][k] - want).max() < 1e-5
    z0 = pipe.encode_image(torch.from_numpy(d["x0"].transpose(2, 0, 1)[None]), sample=False)
    assert np.abs(z0[0].numpy() - d["z0"]).max() < 1e-5
    strip = load_image(out)
    assert strip.shape[0] == 2 * 10 + 4  # decoded row above the latent channels' row


def test_channel_view_tiles_the_four_channels():
    z = np.stack([np.full((2, 3), v, np.float32) for v in (-3, -1, 1, 3)])
    view = channel_view(z, 8, 12)
    assert view.shape == (8, 12, 3)
    assert view[0, 0, 0] == -1 and view[0, 6, 0] == pytest.approx(-1 / 3)
    assert view[4, 0, 0] == pytest.approx(1 / 3) and view[4, 6, 0] == 1
