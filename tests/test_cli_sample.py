"""``ddpm sample``: outputs, equality with the API (the GUI's path), progress on stderr, exit 2 on bad input."""
import numpy as np
import pytest
import torch
from PIL import Image

from core.cli import main
from core.images import save_image
from core.models.checkpoint import save_checkpoint
from core.models.load import load_model
from core.models.unet import UNet, UNetConfig
from core.samplers import run_to_end, sample
from core.schedule import NoiseSchedule


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors: one thread (conftest)


@pytest.fixture
def image_folder(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        save_image(folder / f"{i}.png", rng.uniform(-1, 1, (8, 8, 3)).astype(np.float32))
    return folder


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    net = UNet(UNetConfig(resolution=8, base_channels=8, channel_mults=(1, 2), attention_resolutions=(4,), groups=4,
                          num_classes=2))
    return save_checkpoint(tmp_path / "model", net, NoiseSchedule.preset("linear", T=40))


def test_oracle_npz_holds_training_images(image_folder, tmp_path, capsys):
    out = tmp_path / "s.npz"
    assert main(["sample", "--model", f"oracle:{image_folder}", "--sampler", "ddim", "--n", "4", "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "step/s" in err and "50/50" in err
    images = np.load(out)["images"]
    assert images.shape == (4, 3, 8, 8) and images.dtype == np.float32
    train = load_model(f"oracle:{image_folder}").images.numpy()
    d = ((images[:, None] - train[None]) ** 2).reshape(4, 3, -1).sum(-1).min(1)
    assert d.max() < 1e-5  # the exact denoiser only reproduces its training images


def test_png_grid_and_gif_animation(image_folder, tmp_path):
    png, gif = tmp_path / "g.png", tmp_path / "a.gif"
    assert main(["sample", "--model", f"oracle:{image_folder}", "--sampler", "dpmpp2m", "--n", "4",
                 "-o", str(png)]) == 0
    with Image.open(png) as im:
        assert im.size == (17, 17)  # 2×2 grid of 8×8 with a 1-pixel gap
    assert main(["sample", "--model", f"oracle:{image_folder}", "--sampler", "ddim", "--steps", "10", "--n", "1",
                 "-o", str(gif)]) == 0
    with Image.open(gif) as im:
        assert im.n_frames == 10 and im.size[1] >= 256  # one frame per step: x_t beside x̂_0, ≥ 256 px tall


def test_cli_equals_the_api_for_the_same_model_sampler_steps_seed(checkpoint, tmp_path):
    out = tmp_path / "s.npz"
    assert main(["sample", "--model", str(checkpoint), "--sampler", "ddpm", "--steps", "10", "--n", "2",
                 "--seed", "5", "--class", "1", "--guidance", "2.5", "--device", "cpu", "-o", str(out)]) == 0
    want = run_to_end(sample(load_model(str(checkpoint)), sampler="ddpm", steps=10, n=2, seed=5, class_labels=1,
                             guidance=2.5)).x_t.clamp(-1, 1)
    got = np.load(out)
    assert np.array_equal(got["images"], want.numpy()) and got["labels"].tolist() == [1, 1]


def test_use_clipped_model_output_reaches_the_ddim_sampler(checkpoint, tmp_path):
    out = tmp_path / "s.npz"
    assert main(["sample", "--model", str(checkpoint), "--sampler", "ddim", "--steps", "10", "--n", "2", "--clip",
                 "--guidance", "4", "--class", "0", "--use-clipped-model-output", "--device", "cpu",
                 "-o", str(out)]) == 0
    kw = dict(sampler="ddim", steps=10, n=2, seed=0, class_labels=0, guidance=4, clip_sample=True)
    want = run_to_end(sample(load_model(str(checkpoint)), use_clipped_model_output=True, **kw)).x_t.clamp(-1, 1)
    plain = run_to_end(sample(load_model(str(checkpoint)), **kw)).x_t.clamp(-1, 1)
    assert np.array_equal(np.load(out)["images"], want.numpy()) and not torch.equal(want, plain)


def test_from_image_denoises_from_t(checkpoint, tmp_path):
    photo = tmp_path / "p.png"
    save_image(photo, np.full((20, 20, 3), 0.5, np.float32))
    out = tmp_path / "s.npz"
    assert main(["sample", "--model", str(checkpoint), "--from", str(photo), "--t", "3", "--n", "2",
                 "-o", str(out)]) == 0
    images = np.load(out)["images"]
    # three small denoising steps from a lightly noised flat grey image stay close to it
    assert images.shape == (2, 1, 8, 8) and abs(float(images.mean()) - 0.5) < 0.2


@pytest.mark.parametrize("args,match", [
    (["--class", "1"], "unconditional"),
    (["--from", "x.png"], "--from IMAGE and --t T go together"),
    (["--steps", "0"], "--steps: must be an integer in 1…"),
    (["--sampler", "ddim", "--eta", "2"], "--eta: must be a finite number in [0, 1]"),
    (["--guidance", "3"], "guidance needs class labels"),
    (["--class", "a"], "--class must be an integer"),
    (["--spacing", "trailing", "--steps", "2000"], "outside 1…1000"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(image_folder, tmp_path, capsys, args, match):
    out = tmp_path / "s.png"
    assert main(["sample", "--model", f"oracle:{image_folder}", *args, "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and len(err.splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize("target,match", [("s.jpg", "write .png"), ("missing/s.png", "does not exist")])
def test_bad_outputs_exit_2(image_folder, tmp_path, capsys, target, match):
    assert main(["sample", "--model", f"oracle:{image_folder}", "-o", str(tmp_path / target)]) == 2
    assert match in capsys.readouterr().err


def test_bad_models_exit_2(tmp_path, capsys):
    assert main(["sample", "--model", "builtin:nosuch", "-o", str(tmp_path / "s.png")]) == 2
    assert "is not installed" in capsys.readouterr().err
    evil = tmp_path / "model.pt"
    evil.write_bytes(b"\x80\x04.")
    assert main(["sample", "--model", str(evil), "-o", str(tmp_path / "s.png")]) == 2
    assert "refusing to open a pickle" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["sample", "--model", f"oracle:{evil}", "--device", "cuda", "-o", str(tmp_path / "s.png")]) == 2
        assert "no CUDA GPU" in capsys.readouterr().err


def test_ctrl_c_leaves_no_file(image_folder, tmp_path, monkeypatch):
    from core.cli import progress

    def interrupt(self, done, **extra):
        if done == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(progress.Progress, "update", interrupt)
    out = tmp_path / "s.png"
    assert main(["sample", "--model", f"oracle:{image_folder}", "--sampler", "ddim", "-o", str(out)]) == 130
    assert list(tmp_path.glob("s*")) == []


def test_the_oracle_samples_on_any_schedule(image_folder, tmp_path, capsys):
    out = tmp_path / "s.npz"
    assert main(["sample", "--model", f"oracle:{image_folder}", "--schedule", "cosine", "--sampler", "ddim",
                 "--steps", "20", "--n", "2", "-o", str(out)]) == 0
    from core.schedule import NoiseSchedule
    want = run_to_end(sample(load_model(f"oracle:{image_folder}"), schedule=NoiseSchedule.preset("cosine"),
                             sampler="ddim", steps=20, n=2)).x_t.clamp(-1, 1)
    assert np.array_equal(np.load(out)["images"], want.numpy())
    assert main(["sample", "--model", f"oracle:{image_folder}", "--schedule", "wiggly", "-o", str(out)]) == 2
    assert "unknown schedule preset 'wiggly'" in capsys.readouterr().err


def test_the_default_model_samples_when_installed(tmp_path):
    from core.models.load import builtin_models
    if "builtin:mnist" not in builtin_models():
        pytest.skip("the built-in MNIST model is not installed")
    out = tmp_path / "s.npz"
    assert main(["sample", "--sampler", "ddim", "--steps", "3", "--n", "2", "--class", "4", "-o", str(out)]) == 0
    assert np.load(out)["images"].shape == (2, 1, 28, 28)
