"""The shipped ``builtin:mnist-sd`` pipeline (resources/models/mnist-sd/, trained by ``ddpm train-sd``): it loads
with our loader and with diffusers, both give the same image, prompts give the digit they name, and the CLI
samples it. Skipped where the folder is absent."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from core.models.load import builtin_root  # noqa: E402

FOLDER = builtin_root() / "mnist-sd"
pytestmark = pytest.mark.skipif(not (FOLDER / "model_index.json").is_file(),
                                reason="resources/models/mnist-sd is not installed")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: these tiny networks gain nothing from two, and two threads beside other jobs on a busy
    2-core machine make every call many times slower (OpenMP threads waiting for each other)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pipe():
    from core.models.load import load_latent
    return load_latent("builtin:mnist-sd")


def test_listed_and_recognised_as_a_pipeline():
    from core.models.load import builtin_models, is_latent_spec
    assert "builtin:mnist-sd" in builtin_models() and is_latent_spec("builtin:mnist-sd")
    assert not list(FOLDER.rglob("*.bin")) and not list(FOLDER.rglob("*.pt"))
    size = sum(p.stat().st_size for p in FOLDER.rglob("*") if p.is_file())
    assert size < 20e6


def test_architecture(pipe):
    assert pipe.default_size == 32 and pipe.vae_scale_factor == 4
    assert pipe.denoiser.resolution == 8 and pipe.denoiser.channels == 4
    assert pipe.tokenizer.model_max_length <= 16
    assert 0.05 < pipe.scaling_factor < 20
    sched = json.loads((FOLDER / "scheduler" / "scheduler_config.json").read_text())
    assert (sched["steps_offset"], sched["set_alpha_to_one"], sched["clip_sample"]) == (1, False, False)
    assert sched["prediction_type"] == "epsilon"


def test_diffusers_gives_the_same_image(pipe):
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from core.latent.generate import text_to_image
    from core.samplers import run_to_end
    last = run_to_end(text_to_image(pipe, "a thin slanted seven", guidance=5.0, steps=30, seed=7))
    ours = pipe.decode(last.x_t).clamp(-1, 1)
    ref = StableDiffusionPipeline.from_pretrained(str(FOLDER), safety_checker=None, requires_safety_checker=False)
    ref.set_progress_bar_config(disable=True)
    ref.scheduler = DDIMScheduler.from_config(ref.scheduler.config)
    theirs = ref("a thin slanted seven", guidance_scale=5.0, num_inference_steps=30,
                 generator=torch.Generator().manual_seed(7), output_type="pt").images * 2 - 1
    assert float((ours - theirs).abs().max()) <= 1e-4


@pytest.mark.parametrize("digit", [0, 3, 7])
def test_prompted_digits_are_on_label(pipe, digit):
    from core.classifier import classify, load_classifier
    from core.latent.train import sample_digits
    x = sample_digits(pipe, f"a handwritten {digit}", 8, guidance=5.0, steps=30, seed=digit)
    pred = classify(load_classifier(), x)[0].argmax(1)
    assert (pred == digit).mean() >= 7 / 8, pred


def test_latent_bound_is_finite_for_one_digit(pipe):
    """The ELBO panel's latent bound (core.vlb.latent), in bits per latent dimension, for one digit, in seconds."""
    import time
    vlb = pytest.importorskip("core.vlb.latent")
    from core.latent.train import digits_rgb32
    x, _, _ = digits_rgb32(limit=1)
    start = time.perf_counter()
    bound = vlb.latent_bound(pipe, x, "a handwritten 5", batch_size=250)
    assert np.isfinite(bound.result.bits_per_dim) and np.isfinite(bound.result.per_image).all()
    assert bound.vae_psnr_db > 15
    assert time.perf_counter() - start < 60


def test_cli_sample_gif(tmp_path, capsys):
    from core.cli import main
    out = tmp_path / "out.gif"
    assert main(["sample", "--model", "builtin:mnist-sd", "--prompt", "a bold 3", "-o", str(out)]) == 0
    assert out.is_file() and out.stat().st_size > 0
    assert "wrote" in capsys.readouterr().out


def test_the_window_offers_it_with_example_prompts(qtbot):
    """builtin:mnist-sd is in Generate's model menu; choosing it offers the caption examples as prompts."""
    pytest.importorskip("pytestqt")
    from core.latent.captions import EXAMPLE_PROMPTS
    from ddpm_gui.main_window import MainWindow
    w = MainWindow()
    qtbot.addWidget(w)
    panel = w.generate_panel
    menu = panel.modelCombo
    texts = [f"{menu.itemText(i)} {menu.itemData(i)}" for i in range(menu.count())]
    assert any("mnist-sd" in t for t in texts), texts
    panel.select_model("builtin:mnist-sd")
    qtbot.waitUntil(lambda: panel.current_pipeline() is not None, timeout=60_000)
    from ddpm_gui.prompt_box import PromptBox
    box = panel.findChild(PromptBox, "promptBox")
    box._fill_history()
    shown = [a.text() for a in box._history_menu.actions() if a.text()]
    assert all(p in shown for p in EXAMPLE_PROMPTS if p)
    assert box.promptEdit.toPlainText() == EXAMPLE_PROMPTS[0]
