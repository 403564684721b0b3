"""A tiny, randomly initialised Stable Diffusion pipeline folder, built offline for the tests (nothing is
downloaded): a 2-level UNet2DConditionModel, a 2-level AutoencoderKL (factor 2), a 2-layer CLIPTextModel and a
CLIP tokenizer over a vocabulary this module writes (the 256 byte symbols, each alone and word-final, plus a few
merges)."""
from __future__ import annotations

import json
from pathlib import Path

import torch


MERGES = ["c a", "ca t</w>", "d o", "do g</w>", "r e", "re d</w>"]


def write_tokenizer(folder: Path, max_length: int = 16) -> Path:
    from transformers import CLIPTokenizer
    folder.mkdir(parents=True, exist_ok=True)
    from core.latent.tokenizer import byte_symbols
    symbols = byte_symbols()
    vocab = symbols + [s + "</w>" for s in symbols]
    for m in MERGES:
        vocab.append(m.replace(" ", ""))
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(dict.fromkeys(vocab))}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(MERGES) + "\n")
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=max_length)
    tok.save_pretrained(str(folder))
    return folder


def tiny_components(seed: int = 0, prediction_type: str = "epsilon", scheduler_config: dict | None = None,
                    tmp: Path | None = None, scheduler_class: str = "DDIMScheduler"):
    """(unet, vae, text_encoder, tokenizer, scheduler) of a tiny SD pipeline; weights drawn with ``seed``. The
    scheduler is SD 1.x's DDIM config (updated by ``scheduler_config``) as a ``scheduler_class`` (e.g.
    ``EulerDiscreteScheduler``, as SD-Turbo ships)."""
    import diffusers
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(8, 16), norm_num_groups=4, cross_attention_dim=16,
                                attention_head_dim=4,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
                        layers_per_block=1, norm_num_groups=4, sample_size=16,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
    tok_dir = write_tokenizer((tmp or Path(__import__("tempfile").mkdtemp())) / "tok")
    tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir))
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
                                                num_hidden_layers=2, num_attention_heads=2,
                                                max_position_embeddings=tokenizer.model_max_length,
                                                bos_token_id=tokenizer.bos_token_id,
                                                eos_token_id=tokenizer.eos_token_id, pad_token_id=1))
    config = dict(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                  clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type=prediction_type)
    config.update(scheduler_config or {})
    scheduler = getattr(diffusers, scheduler_class).from_config(config)  # keys another class lacks are dropped
    return unet.eval(), vae.eval(), text_encoder.eval(), tokenizer, scheduler


def save_tiny_pipeline(folder: Path, **kw) -> Path:
    """Write the tiny pipeline as a diffusers folder (safetensors) and return it."""
    from diffusers import StableDiffusionPipeline
    unet, vae, text_encoder, tokenizer, scheduler = tiny_components(tmp=folder.parent, **kw)
    pipe = StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return folder
