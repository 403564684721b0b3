"""``ddpm train-sd``: the VAE stage and the joint text-encoder + UNet stage at tiny scale (20 steps on 64 digits),
the pipeline folder they write (ours and diffusers' loaders, the same image), checkpoints and a bit-exact resume."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from core.latent import train as T  # noqa: E402

@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: these tiny networks gain nothing from two, and two threads beside other jobs on a busy
    2-core machine make every call many times slower (OpenMP threads waiting for each other)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


TINY_VAE = dict(channels=[8, 16, 16], groups=4, limit=64, batch_size=8, checkpoint_every=10)
TINY_UNET = dict(channels=[16, 32], attention=[False, True], groups=8, text_hidden=32, text_layers=1, heads=2,
                 limit=64, batch_size=8, checkpoint_every=10, sample_every=0)


def _run(trainer):
    last = None
    for ev in trainer:
        last = ev
    return last


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("sd") / "run"
    torch.manual_seed(0)
    vae = T.train_vae(out=str(out), steps=20, **TINY_VAE)
    _run(vae)
    _run(T.train_unet(out=str(out), steps=20, **TINY_UNET))
    return out


def test_vae_stage_writes_a_vae_with_its_measured_scaling_factor(run_dir):
    from diffusers import AutoencoderKL
    vae = AutoencoderKL.from_pretrained(str(run_dir / "vae"))
    record = json.loads((run_dir / "vae" / "training.json").read_text())
    assert vae.config.scaling_factor == pytest.approx(record["scaling_factor"])
    assert record["scaling_factor"] == pytest.approx(1.0 / record["latent_std"])
    assert len(vae.config.block_out_channels) == 3  # factor 4: 32 → 8
    x, _, _ = T.digits_rgb32(limit=4)
    assert x.shape == (4, 3, 32, 32) and float(x[:, :, :2].max()) == -1.0  # padded with background
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mean
    assert z.shape == (4, 4, 8, 8)


def test_pipeline_loads_with_ours_and_diffusers_and_gives_the_same_image(run_dir):
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from core.latent.generate import text_to_image
    from core.latent.pipeline import load_pipeline
    from core.samplers import run_to_end
    folder = run_dir / "model"
    for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (folder / part).is_dir()
    assert not list(folder.rglob("*.bin")) and (folder / "tokenizer" / "vocab.json").is_file()
    from safetensors.torch import load_file
    unet = load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))
    assert {v.dtype for v in unet.values()} == {torch.float16}  # stored in half (store_half), loaded as fp32
    sched = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert (sched["steps_offset"], sched["set_alpha_to_one"], sched["clip_sample"]) == (1, False, False)
    pipe = load_pipeline(folder)
    assert pipe.default_size == 32 and pipe.vae_scale_factor == 4
    last = run_to_end(text_to_image(pipe, "a bold 3", guidance=5.0, steps=8, seed=3))
    ours = pipe.decode(last.x_t).clamp(-1, 1)
    ref = StableDiffusionPipeline.from_pretrained(str(folder), safety_checker=None, requires_safety_checker=False)
    ref.set_progress_bar_config(disable=True)
    ref.scheduler = DDIMScheduler.from_config(ref.scheduler.config)
    theirs = ref("a bold 3", guidance_scale=5.0, num_inference_steps=8, generator=torch.Generator().manual_seed(3),
                 output_type="pt").images * 2 - 1
    assert theirs.shape == ours.shape == (1, 3, 32, 32)
    assert float((ours - theirs).abs().max()) <= 1e-4


def test_caption_dropout_and_captions_in_training(run_dir, tmp_path):
    import shutil
    out = tmp_path / "run"
    shutil.copytree(run_dir / "vae", out / "vae")
    tr = T.train_unet(out=str(out), steps=1, caption_dropout=0.5, **TINY_UNET)
    caps = tr.draw_captions(torch.arange(64).repeat(4), tr.generator)
    empty = sum(c == "" for c in caps) / len(caps)
    assert 0.35 < empty < 0.65
    assert all(str(int(tr.labels[i % 64])) in c or T_word(int(tr.labels[i % 64])) in c
               for i, c in enumerate(caps) if c)


def T_word(d: int) -> str:
    from core.latent.captions import DIGIT_WORDS
    return DIGIT_WORDS[d]


def test_unet_resume_is_bit_exact(run_dir, tmp_path):
    import shutil
    straight, split = tmp_path / "a", tmp_path / "b"
    for out in (straight, split):
        shutil.copytree(run_dir / "vae", out / "vae")
    a = T.train_unet(out=str(straight), steps=6, **{**TINY_UNET, "checkpoint_every": 0})
    _run(a)
    b = T.train_unet(out=str(split), steps=3, **{**TINY_UNET, "checkpoint_every": 0})
    _run(b)
    b = T.train_unet(out=str(split), steps=6, resume=True, **{**TINY_UNET, "checkpoint_every": 0})
    assert b.step == 3
    _run(b)
    for name in ("unet", "text_encoder", "ema_unet", "ema_text_encoder"):
        sa, sb = a.modules()[name].state_dict(), b.modules()[name].state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa), name
    assert a.loss_history == b.loss_history


def test_vae_resume_continues_and_refuses_a_second_fresh_run(tmp_path):
    out = tmp_path / "run"
    _run(T.train_vae(out=str(out), steps=4, **{**TINY_VAE, "checkpoint_every": 2}))
    with pytest.raises(ValueError, match="already holds"):
        T.train_vae(out=str(out), steps=4, **TINY_VAE)
    t = T.train_vae(out=str(out), steps=6, resume=True, **TINY_VAE)
    assert t.step == 4
    assert _run(t).kind == "done" and t.step == 6
    with pytest.raises(FileNotFoundError, match="no trained VAE"):
        T.train_unet(out=str(tmp_path / "other"), steps=2, **TINY_UNET)


def test_cli_train_sd(tmp_path, capsys):
    from core.cli import main
    out = tmp_path / "cli"
    common = ["--out", str(out), "--limit", "32", "--batch", "4", "--threads", "1"]
    assert main(["train-sd", "vae", "--steps", "3", "--channels", "8,16,16", *common]) == 0
    assert "scaling factor" in capsys.readouterr().out
    assert main(["train-sd", "unet", "--steps", "3", "--channels", "16,32", "--sample-every", "3", *common]) == 0
    assert (out / "model" / "model_index.json").is_file() and (out / "samples" / "unet_step_000003.png").is_file()
    assert main(["train-sd", "vae", "--steps", "3", "--ema", "0.9", *common]) == 2
    assert main(["train-sd", "unet", "--steps", "5", "--resume", "--caption-dropout", "0.3", *common]) == 0
    state = json.loads((out / "checkpoint-unet" / "train_state.json").read_text())
    assert state["step"] == 5 and state["recipe_changes"][0]["caption_dropout"] == [0.15, 0.3]


def test_ink_and_to_digit28():
    x = -np.ones((2, 3, 32, 32), np.float32)
    x[1, :, 2:30, 2:30] = 1.0
    d = T.to_digit28(torch.from_numpy(x))
    assert d.shape == (2, 1, 28, 28)
    assert T.ink(d).tolist() == [0.0, 1.0]
