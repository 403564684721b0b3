"""A Stable Diffusion pipeline folder (diffusers' layout) as one object: the UNet as a :class:`Denoiser` over
latents, the VAE (z = s·E(x), x = D(z/s), s = ``scaling_factor``), the CLIP text encoder τ and its tokenizer.

The folder holds ``model_index.json`` and ``unet/`` (UNet2DConditionModel), ``vae/`` (AutoencoderKL),
``text_encoder/`` (CLIPTextModel) + ``tokenizer/`` (CLIP) and ``scheduler/``, whose config (betas, prediction
type, spacing, offset, clipping, ``set_alpha_to_one``) becomes the samplers' defaults. SD 1.x, 2.x (ε- and
v-prediction) and distilled SD-Turbo-style models load; SDXL and others are refused in one line. Loading is
offline only and safetensors only, every part checked first (:mod:`core.latent.parts`). A safety checker, if the
folder has one, is not loaded.

fp16 on CUDA (bf16 if asked), fp32 on the CPU; attention is PyTorch's SDPA (diffusers' and transformers'
default); the VAE decodes in tiles above :data:`TILE_ABOVE` pixels.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.device import pick_device
from core.messages import printable
from core.latent.parts import cannot, check_pipeline_folder, load_part, offline
from core.models.checkpoint import ModelLoadError
from core.models.denoiser import Denoiser
from core.samplers.guidance import TextCondition

TILE_ABOVE = 1024  # decode in tiles when the image is larger than this on a side
MAX_PROMPT_CHARS = 10_000
PRECISION_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def param_dtype(module: torch.nn.Module) -> torch.dtype:
    """A network's dtype from its first parameter: diffusers' ``ModelMixin.dtype`` walks every module on each read
    (≈ 1 ms for an SD UNet — 3% of a small step, measured by benchmarks/bench_sd_loop.py)."""
    p = next(module.parameters(), None)
    return p.dtype if p is not None else torch.float32


class TextDenoiser(Denoiser):
    """A diffusers ``UNet2DConditionModel`` (``.net``) as a :class:`Denoiser` over latents: ε_θ(z_t, t, c), with c
    the prompt's text embeddings (B×L×D) passed where pixel models take class labels. Inputs are cast to the
    network's dtype and outputs returned in float32, so the sampler's state stays fp32 under an fp16 UNet."""

    cross_attention = True
    has_null_class = True

    def model_output(self, x_t, t, encoder_hidden_states=None, schedule=None):
        dtype = param_dtype(self.net)
        out = self.net(x_t.to(dtype), t, encoder_hidden_states=encoder_hidden_states.to(dtype), return_dict=False)[0]
        return out.float()

    def to(self, device) -> "TextDenoiser":
        self.net.to(device)
        return super().to(device)


@dataclass
class LatentPipeline:
    """A loaded Stable Diffusion pipeline. ``denoiser`` is the UNet (latent channels, default latent size);
    :meth:`encode_prompt`, :meth:`encode_image` and :meth:`decode` are the pipeline's other three networks."""

    denoiser: TextDenoiser
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    name: str
    folder: Path

    @property
    def device(self) -> torch.device:
        return self.denoiser.device

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent along a side: 2^(number of VAE levels − 1) (8 for Stable Diffusion)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def default_size(self) -> int:
        """The image side the UNet was trained for: its latent ``sample_size`` × the VAE's factor."""
        return self.denoiser.resolution * self.vae_scale_factor

    def latent_size(self, height: int | None = None, width: int | None = None) -> tuple[int, int]:
        """(h, w) of the latents for an image of ``height`` × ``width`` pixels (multiples of the VAE's factor)."""
        f = self.vae_scale_factor
        height = self.default_size if height is None else height  # 0 is an error, not the default
        width = self.default_size if width is None else width
        for name, v in (("height", height), ("width", width)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < f or v % f:
                raise ValueError(f"{name} = {v!r} must be a positive multiple of {f} (the VAE's downsampling)")
            if v > 16384:
                raise ValueError(f"{name} = {v} is larger than 16384 pixels")
        return height // f, width // f

    def to(self, device) -> "LatentPipeline":
        device = torch.device(device)
        self.vae.to(device)
        self.text_encoder.to(device)
        self.denoiser.to(device)
        return self

    def encode_prompt(self, prompt, negative_prompt=None, n: int = 1) -> TextCondition:
        """τ(prompt) and τ(negative, or "") for a batch of ``n`` images, as diffusers' ``encode_prompt`` does:
        CLIP tokens padded to the tokenizer's ``model_max_length`` (longer prompts are cut, with a warning), the
        encoder's last hidden state, each prompt's row repeated for its images."""
        prompts = _texts(prompt, "prompt")
        negatives = _texts(negative_prompt if negative_prompt is not None else [""] * len(prompts), "negative prompt")
        if len(negatives) == 1 and len(prompts) > 1:
            negatives = negatives * len(prompts)
        if len(negatives) != len(prompts):
            raise ValueError(f"{len(negatives)} negative prompts for {len(prompts)} prompts")
        if n % len(prompts):
            raise ValueError(f"{n} images do not divide among {len(prompts)} prompts")
        per = n // len(prompts)
        embeds = self._embed(prompts, warn=True)
        negative = self._embed(negatives, length=embeds.shape[1])
        return TextCondition(embeds.repeat_interleave(per, 0), negative.repeat_interleave(per, 0))

    def _embed(self, texts: list[str], length: int | None = None, warn: bool = False) -> torch.Tensor:
        tok = self.tokenizer
        length = length or tok.model_max_length
        ids = tok(texts, padding="max_length", max_length=length, truncation=True, return_tensors="pt").input_ids
        if warn:
            full = tok(texts, padding="longest", return_tensors="pt").input_ids
            if full.shape[-1] > ids.shape[-1]:
                import warnings
                warnings.warn(f"the prompt is longer than the text encoder's {length} tokens; the rest is ignored",
                              UserWarning, stacklevel=3)
        mask = None
        if getattr(self.text_encoder.config, "use_attention_mask", False):
            mask = tok(texts, padding="max_length", max_length=length, truncation=True,
                       return_tensors="pt").attention_mask.to(self.device)
        with torch.inference_mode():
            out = self.text_encoder(ids.to(self.device), attention_mask=mask)[0]
        return out.to(param_dtype(self.denoiser.net))

    def encode_image(self, pixels: torch.Tensor, generator: torch.Generator | None = None,
                     sample: bool = True) -> torch.Tensor:
        """Latents z = s·E(x) of images ``pixels`` (B×3×H×W in [−1, 1]): a draw from the VAE's posterior with
        ``generator`` (diffusers' img2img), or its mean with ``sample=False``. Returns float32 on the device."""
        x = pixels.to(self.device, param_dtype(self.vae))
        with torch.inference_mode():
            dist = self.vae.encode(x).latent_dist
            z = dist.sample(generator=generator) if sample else dist.mode()
        return (z.float() - self.shift_factor) * self.scaling_factor

    @property
    def shift_factor(self) -> float:
        return float(getattr(self.vae.config, "shift_factor", None) or 0.0)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Images x = D(z/s) (B×3×H×W, float32 in [−1, 1] before clamping) with the full VAE, tiled above
        :data:`TILE_ABOVE` pixels."""
        z = latents.to(self.device, param_dtype(self.vae)) / self.scaling_factor + self.shift_factor
        big = max(z.shape[-2:]) * self.vae_scale_factor > TILE_ABOVE
        if hasattr(self.vae, "enable_tiling"):
            self.vae.enable_tiling() if big else self.vae.disable_tiling()
        with torch.inference_mode():
            return self.vae.decode(z, return_dict=False)[0].float()


def _texts(value, what: str) -> list[str]:
    texts = [value] if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) else None
    if not texts or not all(isinstance(t, str) for t in texts):
        raise ValueError(f"the {what} must be text")
    for t in texts:
        if len(t) > MAX_PROMPT_CHARS:
            raise ValueError(f"the {what} is {len(t):,} characters long; at most {MAX_PROMPT_CHARS:,}")
    return texts


# ----- loading ----------------------------------------------------------------------------------------------
LOAD_STAGES = ("checking the folder", "the text encoder", "the UNet", "the VAE")


def load_pipeline(folder, device="cpu", precision: str | None = None) -> LatentPipeline:
    """Load the Stable Diffusion pipeline in ``folder`` (see the module docstring) onto ``device``.
    ``precision``: fp32 | fp16 | bf16 (default fp16 on CUDA, else fp32). Failures are one-line ModelLoadErrors."""
    pipe = None
    for pipe in loading(folder, device, precision):
        pass
    return pipe


def loading(folder, device="cpu", precision: str | None = None):
    """:func:`load_pipeline` as a generator for a worker: yields the name of each stage (:data:`LOAD_STAGES`)
    before it runs, so a window can show progress and cancel between parts, and finally the
    :class:`LatentPipeline`."""
    folder = Path(folder)
    dev = pick_device(device)
    precision = precision or ("fp16" if dev.type == "cuda" else "fp32")
    if precision not in PRECISION_DTYPES:
        raise ModelLoadError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISION_DTYPES)}")
    if precision == "fp16" and dev.type == "cpu":
        raise ModelLoadError("fp16 needs a GPU; use fp32 (or bf16) on the CPU")
    dtype = PRECISION_DTYPES[precision]
    yield LOAD_STAGES[0]
    parts = check_pipeline_folder(folder)
    try:
        import diffusers
        import transformers
    except ImportError:
        from core.models.diffusers_adapter import EXTRA_HINT
        raise ModelLoadError("Stable Diffusion pipelines need the optional 'diffusers' extra (diffusers and "
                             f"transformers): {EXTRA_HINT}") from None
    from core.models.diffusers_adapter import one_line_library_messages, scheduler_defaults
    defaults = scheduler_defaults(folder / "scheduler" / "scheduler_config.json")
    set_alpha_to_one = defaults.pop("set_alpha_to_one")
    yield LOAD_STAGES[1]
    with one_line_library_messages(folder, loggers=("diffusers", "transformers")), offline():
        text_encoder = load_part(getattr(transformers, parts["text_encoder"].cls), parts["text_encoder"], dtype)
        try:
            tokenizer = getattr(transformers, parts["tokenizer"].cls).from_pretrained(
                str(parts["tokenizer"].folder), local_files_only=True)
        except Exception as e:  # noqa: BLE001 - transformers raises many kinds for a bad tokenizer
            raise cannot(parts["tokenizer"], "read the tokenizer", e) from None
    yield LOAD_STAGES[2]
    with one_line_library_messages(folder, loggers=("diffusers", "transformers")), offline():
        unet = load_part(diffusers.UNet2DConditionModel, parts["unet"], dtype)
    yield LOAD_STAGES[3]
    with one_line_library_messages(folder, loggers=("diffusers", "transformers")), offline():
        vae_dtype = torch.float32 if dtype == torch.float16 and parts["vae"].config.get("force_upcast") else dtype
        vae = load_part(diffusers.AutoencoderKL, parts["vae"], vae_dtype)
    size = unet.config.sample_size
    size = size if isinstance(size, int) else int(size[0])
    name = printable(folder.name if folder.name not in ("", ".") else str(folder))
    if folder.parent.name == "snapshots":  # a Hugging Face cache snapshot: name it by its repo
        name = printable(folder.parent.parent.name.removeprefix("models--").replace("--", "/"))
    den = TextDenoiser(resolution=size, channels=int(unet.config.in_channels), name=name,
                       schedule=defaults["schedule"], prediction_type=defaults["prediction_type"],
                       variance_type=defaults["variance_type"], clip_sample=defaults["clip_sample"])
    den.net = unet.eval()
    den.timestep_spacing, den.steps_offset = defaults["timestep_spacing"], defaults["steps_offset"]
    den.dynamic_threshold, den.set_alpha_to_one = defaults["dynamic_threshold"], set_alpha_to_one
    pipe = LatentPipeline(den, vae.eval(), text_encoder.eval(), tokenizer, name, folder)
    yield pipe.to(dev)


def pixels_to_vae_input(image: np.ndarray, multiple: int) -> torch.Tensor:
    """An H×W×3 image (uint8, or float in [−1, 1] as :func:`core.images.load_image` gives) → 1×3×H'×W' in
    [−1, 1], H' and W' floored to a multiple of the VAE's factor (as diffusers' ``VaeImageProcessor`` does before
    img2img)."""
    x = np.asarray(image)
    x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else (x.astype(np.float32) + 1.0) / 2.0
    if x.ndim == 2:
        x = np.repeat(x[..., None], 3, axis=2)
    x = x[..., :3]
    h, w = (x.shape[0] // multiple) * multiple, (x.shape[1] // multiple) * multiple
    if h == 0 or w == 0:
        raise ValueError(f"the image ({x.shape[1]}×{x.shape[0]}) is smaller than {multiple}×{multiple} pixels")
    if (h, w) != x.shape[:2]:
        from PIL import Image
        im = Image.fromarray((x * 255).round().clip(0, 255).astype(np.uint8)).resize((w, h), Image.LANCZOS)
        x = np.asarray(im, dtype=np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))[None] * 2.0 - 1.0)
