"""A Stable Diffusion pipeline folder (diffusers' layout) as one object: the UNet as a :class:`Denoiser` over
latents, the VAE (z = s·E(x), x = D(z/s), s = ``scaling_factor``), the CLIP text encoder τ and its tokenizer.

The folder holds ``model_index.json`` and ``unet/`` (UNet2DConditionModel), ``vae/`` (AutoencoderKL),
``text_encoder/`` (CLIPTextModel) + ``tokenizer/`` (CLIP) and ``scheduler/``, whose config (betas, prediction
type, spacing, offset, clipping, ``set_alpha_to_one``) becomes the samplers' defaults. SD 1.x, 2.x (ε- and
v-prediction) and distilled SD-Turbo-style models load; SDXL and others are refused in one line. Loading is
offline only and safetensors only: every part is checked (present, no pickle, a config whose network fits its
weights, sized on the meta device before anything is built) before diffusers or transformers read it. A
safety checker, if the folder has one, is not loaded.

fp16 on CUDA (bf16 if asked), fp32 on the CPU; attention is PyTorch's SDPA (diffusers' and transformers'
default); the VAE decodes in tiles above :data:`TILE_ABOVE` pixels.
"""
from __future__ import annotations

import contextlib
import importlib.util
import numbers
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.device import pick_device
from core.messages import printable
from core.models.checkpoint import (MAX_PARAMETERS, PICKLE_SUFFIXES, ModelLoadError, check_capacity, read_json,
                                    refuse_pickle)
from core.models.denoiser import Denoiser
from core.samplers.guidance import TextCondition

INDEX = "model_index.json"
# part → (accepted class names, config file, weights file names in order of preference)
PARTS = {
    "unet": (("UNet2DConditionModel",), "config.json", ("diffusion_pytorch_model.safetensors",
                                                         "diffusion_pytorch_model.fp16.safetensors")),
    "vae": (("AutoencoderKL",), "config.json", ("diffusion_pytorch_model.safetensors",
                                               "diffusion_pytorch_model.fp16.safetensors")),
    "text_encoder": (("CLIPTextModel",), "config.json", ("model.safetensors", "model.fp16.safetensors")),
    "tokenizer": (("CLIPTokenizer", "CLIPTokenizerFast"), None, ()),
    "scheduler": (None, "scheduler_config.json", ()),
}
TILE_ABOVE = 1024  # decode in tiles when the image is larger than this on a side
MAX_CONFIG_INT = 10_000_000
MAX_LAYERS = 256
#: At most this many layers (resnets × transformer depth, over all levels; SD 1.5 has 20, SDXL 150) in a UNet or
#: VAE config: sizing a deeper one on the meta device would take seconds before its weights refuse it anyway.
MAX_DEPTH = 300
MAX_PROMPT_CHARS = 10_000
PRECISION_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def is_latent_pipeline(folder) -> bool:
    """True for a folder whose ``model_index.json`` names a cross-attention UNet (a Stable Diffusion pipeline)."""
    index = Path(folder) / INDEX
    if not index.is_file():
        return False
    try:
        entry = read_json(index, "diffusers pipeline index").get("unet")
    except ModelLoadError:
        return False
    return isinstance(entry, list) and len(entry) == 2 and entry[1] == "UNet2DConditionModel"


class TextDenoiser(Denoiser):
    """A diffusers ``UNet2DConditionModel`` (``.net``) as a :class:`Denoiser` over latents: ε_θ(z_t, t, c), with c
    the prompt's text embeddings (B×L×D) passed where pixel models take class labels. Inputs are cast to the
    network's dtype and outputs returned in float32, so the sampler's state stays fp32 under an fp16 UNet."""

    cross_attention = True
    has_null_class = True

    def model_output(self, x_t, t, encoder_hidden_states=None, schedule=None):
        dtype = self.net.dtype
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
        return out.to(self.denoiser.net.dtype)

    def encode_image(self, pixels: torch.Tensor, generator: torch.Generator | None = None,
                     sample: bool = True) -> torch.Tensor:
        """Latents z = s·E(x) of images ``pixels`` (B×3×H×W in [−1, 1]): a draw from the VAE's posterior with
        ``generator`` (diffusers' img2img), or its mean with ``sample=False``. Returns float32 on the device."""
        x = pixels.to(self.device, self.vae.dtype)
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
        z = latents.to(self.device, self.vae.dtype) / self.scaling_factor + self.shift_factor
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
def load_pipeline(folder, device="cpu", precision: str | None = None) -> LatentPipeline:
    """Load the Stable Diffusion pipeline in ``folder`` (see the module docstring) onto ``device``.
    ``precision``: fp32 | fp16 | bf16 (default fp16 on CUDA, else fp32). Failures are one-line ModelLoadErrors."""
    folder = Path(folder)
    dev = pick_device(device)
    precision = precision or ("fp16" if dev.type == "cuda" else "fp32")
    if precision not in PRECISION_DTYPES:
        raise ModelLoadError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISION_DTYPES)}")
    if precision == "fp16" and dev.type == "cpu":
        raise ModelLoadError("fp16 needs a GPU; use fp32 (or bf16) on the CPU")
    dtype = PRECISION_DTYPES[precision]
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
    with one_line_library_messages(folder, loggers=("diffusers", "transformers")), _offline():
        unet = _load_part(diffusers.UNet2DConditionModel, parts["unet"], dtype)
        vae_dtype = torch.float32 if dtype == torch.float16 and parts["vae"].config.get("force_upcast") else dtype
        vae = _load_part(diffusers.AutoencoderKL, parts["vae"], vae_dtype)
        text_encoder = _load_part(getattr(transformers, parts["text_encoder"].cls), parts["text_encoder"], dtype)
        try:
            tokenizer = getattr(transformers, parts["tokenizer"].cls).from_pretrained(
                str(parts["tokenizer"].folder), local_files_only=True)
        except Exception as e:  # noqa: BLE001 - transformers raises many kinds for a bad tokenizer
            raise _cannot(parts["tokenizer"], "read the tokenizer", e) from None
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
    return pipe.to(dev)


@dataclass
class _Part:
    name: str
    folder: Path
    cls: str | None
    config: dict
    weights: Path | None
    variant: str | None


def check_pipeline_folder(folder: Path) -> dict[str, _Part]:
    """Every part's folder, class, config and weights, checked before any library reads them: one line naming
    the part that is missing, pickled, unsupported or whose config does not fit its weights."""
    if not folder.is_dir():
        raise ModelLoadError(f"{folder}: no such pipeline folder")
    index = read_json(folder / INDEX, "diffusers pipeline index")
    kind = str(index.get("_class_name", "a pipeline"))
    if "XL" in kind or "text_encoder_2" in index:
        raise ModelLoadError(f"{folder}: {printable(kind)} (SDXL, two text encoders) is not supported yet; "
                             "Stable Diffusion 1.x and 2.x pipelines are")
    parts = {}
    for name, (classes, config_name, weight_names) in PARTS.items():
        entry = index.get(name)
        where = folder / name
        if not (isinstance(entry, list) and len(entry) == 2 and entry[1] is not None):
            raise ModelLoadError(f"{folder}/{INDEX}: the pipeline has no {name} (it names {printable(str(entry))[:80]})")
        cls = str(entry[1])
        if classes is not None and cls not in classes:
            raise ModelLoadError(f"{folder}/{INDEX}: the {name} is a {printable(cls)[:80]}; supported: "
                                 f"{', '.join(classes)} (Stable Diffusion 1.x/2.x)")
        if not where.is_dir():
            raise ModelLoadError(f"{where}: missing — the pipeline's {name} ({printable(cls)[:80]}) is not there")
        config = read_json(where / config_name, f"{name} config") if config_name else {}
        if config_name:
            _check_config_numbers(config, where / config_name)
            if name in ("unet", "vae"):
                _check_depth(config, where / config_name)
        weights, variant = _weights(where, weight_names, name) if weight_names else (None, None)
        parts[name] = _Part(name, where, cls, config, weights, variant)
    if not (parts["tokenizer"].folder / "tokenizer.json").is_file() and not all(
            (parts["tokenizer"].folder / f).is_file() for f in ("vocab.json", "merges.txt")):
        raise ModelLoadError(f"{parts['tokenizer'].folder}: missing — the tokenizer needs vocab.json and merges.txt "
                             "(or tokenizer.json)")
    unet = parts["unet"].config
    if unet.get("in_channels", 4) != parts["vae"].config.get("latent_channels", 4):
        raise ModelLoadError(f"{folder}/unet: in_channels {unet.get('in_channels')} does not match the VAE's "
                             f"latent_channels {parts['vae'].config.get('latent_channels', 4)} (inpainting and "
                             "depth UNets are not supported)")
    for name in ("unet", "vae", "text_encoder"):
        _check_size(parts[name])
    return parts


def _weights(where: Path, names: tuple, part: str) -> tuple[Path, str | None]:
    for name in names:
        if (where / name).is_file():
            return where / name, ("fp16" if ".fp16." in name else None)
    if any(where.glob("*.safetensors.index.json")):
        raise ModelLoadError(f"{where}: sharded weights are not supported")
    pickles = sorted(p for p in where.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        raise refuse_pickle(pickles[0])
    raise ModelLoadError(f"{where}: missing — no {names[0]} (the pipeline's {part} weights)")


def _check_config_numbers(config: dict, where: Path) -> None:
    """Refuse absurd integers (sizes, layer counts) before a library sizes a network by them."""
    def walk(key, v):
        if isinstance(v, bool):
            return
        if isinstance(v, numbers.Integral) and abs(v) > MAX_CONFIG_INT:
            raise ModelLoadError(f"{where}: {key} = {v} is not a plausible size")
        if isinstance(v, (list, tuple)):
            if len(v) > 64:
                raise ModelLoadError(f"{where}: {key} lists {len(v)} values, too many")
            for x in v:
                walk(key, x)
    for key, v in config.items():
        walk(key, v)
        if ("layers" in key or key.endswith("_per_block")) and isinstance(v, numbers.Integral) and v > MAX_LAYERS:
            raise ModelLoadError(f"{where}: {key} = {v} layers is not plausible (at most {MAX_LAYERS})")


def _check_depth(config: dict, where: Path) -> None:
    """Refuse a UNet/VAE config of more than :data:`MAX_DEPTH` layers: levels × (2·layers_per_block + 1) ×
    transformer_layers_per_block (the largest of each), roughly the resnets and attention layers it builds."""
    def largest(v, default=1):
        if isinstance(v, (list, tuple)):
            return max((largest(x, default) for x in v), default=default)
        return int(v) if isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0 else default
    levels = max(largest([len(config.get(k) or ()) for k in ("block_out_channels", "down_block_types",
                                                               "up_block_types")], 1), 1)
    per_block, attention = largest(config.get("layers_per_block")), largest(config.get("transformer_layers_per_block"))
    depth = levels * (2 * per_block + 1) * attention
    if depth > MAX_DEPTH:
        raise ModelLoadError(f"{where}: {levels} levels × {per_block} layers per block × {attention} transformer "
                             f"layers describe about {depth} layers; at most {MAX_DEPTH} are plausible")


def _check_size(part: _Part) -> None:
    """The part's parameter count, from its config on the meta device (nothing allocated), against
    :data:`MAX_PARAMETERS` and what its weights file holds."""
    try:
        import diffusers
        import transformers
    except ImportError:
        return  # load_pipeline says what is missing
    where = part.folder / ("config.json")
    try:
        with torch.device("meta"), one_line_quiet():
            if part.name == "text_encoder":
                cls = getattr(transformers, part.cls)
                net = cls(cls.config_class(**{k: v for k, v in part.config.items() if not k.startswith("_")}))
            else:
                net = getattr(diffusers, part.cls).from_config(part.config)
            params = sum(p.numel() for p in net.parameters())
    except ModelLoadError:
        raise
    except Exception as e:  # noqa: BLE001 - a config the library cannot build
        raise _cannot(part, "build the network from its config", e) from None
    if params > MAX_PARAMETERS:
        raise ModelLoadError(f"{where}: the config describes a network of {params:.3g} parameters, more than the "
                             f"{MAX_PARAMETERS:.3g} this program loads")
    check_capacity(where, params, part.weights)


@contextlib.contextmanager
def one_line_quiet():
    """Silence the libraries' logging and warnings while a config is sized on the meta device."""
    import logging
    import warnings
    logs = [logging.getLogger(n) for n in ("diffusers", "transformers")]
    levels = [log.level for log in logs]
    for log in logs:
        log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for log, level in zip(logs, levels):
            log.setLevel(level)


def _load_part(cls, part: _Part, dtype):
    kwargs = dict(local_files_only=True, use_safetensors=True)
    # accelerate builds the network on the meta device and loads into it: no random init of every weight
    kwargs["low_cpu_mem_usage"] = importlib.util.find_spec("accelerate") is not None
    if part.variant:
        kwargs["variant"] = part.variant
    if part.name == "text_encoder":  # transformers: a tensor of another shape is listed below, not a vague error
        kwargs["ignore_mismatched_sizes"] = True
    try:
        net, info = cls.from_pretrained(str(part.folder), torch_dtype=dtype, output_loading_info=True, **kwargs)
    except Exception as e:  # noqa: BLE001 - the libraries raise many kinds for bad files
        raise _cannot(part, "load it", e) from None
    # the libraries fill tensors the weights lack with a random init (or leave them on the meta device) and only
    # log it: a network that is partly random is refused here
    missing = sorted(set(info.get("missing_keys") or ()) | {k[0] if isinstance(k, tuple) else k
                                                            for k in info.get("mismatched_keys") or ()})
    missing += [n for n, t in list(net.named_parameters()) + list(net.named_buffers())
                if t.is_meta and n not in missing]
    if missing:
        shown = printable(", ".join(k[:80] for k in missing[:3])) + (f" … ({len(missing)} in all)"
                                                                     if len(missing) > 3 else "")
        raise ModelLoadError(f"{part.folder}: {part.weights.name} does not fit the network its config describes "
                             f"(missing, or of another shape: {shown})")
    return net


def _cannot(part: _Part, what: str, e: BaseException) -> ModelLoadError:
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return ModelLoadError(f"{part.folder}: cannot {what} ({printable(reason)[:200]})")


@contextlib.contextmanager
def _offline():
    """The Hugging Face libraries' offline switches, on while they read: nothing is ever fetched."""
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HUB_DISABLE_PROGRESS_BARS")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: "1" for k in keys})
    bars = _progress_bars(False)
    try:
        yield
    finally:
        _progress_bars(bars)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _progress_bars(on: bool) -> bool:
    """Switch the libraries' tqdm bars (they would print over our own progress); returns the old state."""
    try:
        from diffusers.utils import logging as dlog
        from transformers.utils import logging as tlog
    except ImportError:
        return on
    old = tlog.is_progress_bar_enabled()
    for lib in (dlog, tlog):
        lib.enable_progress_bar() if on else lib.disable_progress_bar()
    return old


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
