"""The exact oracle denoiser E[x_0 | x_t] against a direct float64 computation and its defining properties."""
import numpy as np
import pytest
import torch

from core.models.oracle import OracleDenoiser
from core.schedule import NoiseSchedule

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors: one thread (conftest)


def brute_force(images, labels, x_t, t, schedule, y=None):
    """softmax_i(−‖x_t − √ᾱ x_i‖² / (2(1−ᾱ))) · x_i, directly, in float64."""
    X = images.reshape(len(images), -1).double()
    out = []
    for b in range(len(x_t)):
        ab = float(schedule.alphas_cumprod[int(t[b])])
        d2 = ((x_t[b].reshape(-1).double()[None] - ab**0.5 * X) ** 2).sum(1)
        logits = -d2 / (2 * (1 - ab))
        if y is not None and y[b] >= 0:
            logits[labels != y[b]] = -np.inf
        out.append(torch.softmax(logits, 0) @ X)
    return torch.stack(out).reshape(x_t.shape)


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(1)
    images = torch.rand(300, 1, 6, 6, generator=g) * 2 - 1
    labels = torch.arange(300) % 5
    return images, labels


@pytest.mark.parametrize("preset", ["linear", "cosine"])
@pytest.mark.parametrize("chunk", [8192, 64, 7])
def test_oracle_matches_the_posterior_mean_formula(data, preset, chunk):
    images, labels = data
    sched = NoiseSchedule.preset(preset, T=1000)
    oracle = OracleDenoiser(images, labels=labels, chunk=chunk)
    g = torch.Generator().manual_seed(2)
    t = torch.tensor([0, 5, 50, 200, 500, 800, 999])
    # x_t drawn near a training image (the hard, peaked case) and far from all of them
    a = torch.tensor(sched.sqrt_alphas_cumprod[t.numpy()])[:, None, None, None]
    s = torch.tensor(sched.sqrt_one_minus_alphas_cumprod[t.numpy()])[:, None, None, None]
    x_t = (a * images[:7].double() + s * torch.randn(7, 1, 6, 6, generator=g, dtype=torch.float64)).float()
    x_t[-1] = 3 * torch.randn(1, 6, 6, generator=g)
    got = oracle.model_output(x_t, t, schedule=sched)
    want = brute_force(images, labels, x_t, t, sched)
    assert torch.allclose(got.double(), want, atol=2e-4), (got.double() - want).flatten(1).abs().max(1).values
    y = torch.tensor([0, 1, 2, 3, 4, -1, 2])
    got_y = oracle.model_output(x_t, t, class_labels=y, schedule=sched)
    assert torch.allclose(got_y.double(), brute_force(images, labels, x_t, t, sched, y), atol=2e-4)


def test_oracle_limits(data):
    images, _ = data
    sched = NoiseSchedule.preset("linear", T=1000)
    oracle = OracleDenoiser(images)
    # t = 0 at a training image: the posterior is that image
    x = (sched.sqrt_alphas_cumprod[0] * images[3:4]).float()
    assert torch.allclose(oracle.model_output(x, torch.tensor([0]), schedule=sched), images[3:4], atol=1e-5)
    # pure noise on a zero-terminal-SNR schedule: ᾱ = 0, every image equally likely → the data mean
    zsnr = NoiseSchedule.preset("linear", T=1000, zero_snr=True)
    far = oracle.model_output(torch.randn(2, 1, 6, 6), torch.tensor([999, 999]), schedule=zsnr)
    assert torch.allclose(far, images.mean(0, keepdim=True).expand(2, -1, -1, -1), atol=1e-3)
    # one image: E[x_0 | x_t] is that image, whatever x_t
    single = OracleDenoiser(images[:1])
    out = single.model_output(torch.randn(3, 1, 6, 6), torch.tensor([1, 500, 999]), schedule=sched)
    assert torch.allclose(out, images[:1].expand(3, -1, -1, -1), atol=1e-6)


def test_oracle_weights_sum_to_one_and_favour_the_source(data):
    images, _ = data
    sched = NoiseSchedule.preset("linear", T=1000)
    oracle = OracleDenoiser(images)
    x = (sched.sqrt_alphas_cumprod[100] * images[10:11] + sched.sqrt_one_minus_alphas_cumprod[100]
         * torch.randn(1, 1, 6, 6, dtype=torch.float64)).float()
    w = oracle.weights(x, 100, sched)
    assert w.shape == (1, 300) and torch.allclose(w.sum(1), torch.ones(1))
    assert int(w.argmax()) == 10


def test_oracle_needs_a_schedule_and_valid_input(data):
    images, labels = data
    oracle = OracleDenoiser(images, labels=labels)
    with pytest.raises(ValueError, match="needs one: pass schedule"):
        oracle.model_output(torch.zeros(1, 1, 6, 6), torch.tensor([3]))
    with pytest.raises(ValueError, match="shape"):
        oracle.model_output(torch.zeros(1, 3, 6, 6), torch.tensor([3]), schedule=NoiseSchedule.preset())
    with pytest.raises(ValueError, match="N×C×H×W"):
        OracleDenoiser(torch.zeros(3, 6, 6))
    with pytest.raises(ValueError, match="one label per image"):
        OracleDenoiser(images, labels=labels[:5])
    assert oracle.num_classes == 5 and oracle.prediction_type == "sample" and oracle.schedule is None


def test_an_oracle_folder_with_unreadable_files_warns_in_one_line_naming_them(tmp_path):
    """What a user sees of skipped files is one line of ours (the CLI prints it as ``ddpm CMD: warning: …``),
    naming the folder, the count and the files, with a file name's control characters escaped."""
    from core.images import save_image
    from core.messages import relay_warnings
    from core.models.load import load_model
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        save_image(folder / f"{i}.png", np.zeros((8, 8, 3), np.float32))
    (folder / "notes.txt").write_text("not an image")
    (folder / "bad\nname\x1b[31m.png").write_bytes(b"not a png")
    lines = []
    with relay_warnings(lines.append):
        den = load_model(f"oracle:{folder}")
    assert len(den) == 3
    assert lines == [f"{folder}: skipped 2 files that could not be read as images "
                     r"(bad\nname\x1b[31m.png, notes.txt)"]
