"""The parts of a Stable Diffusion pipeline folder (diffusers' layout), checked before any library reads them.

``model_index.json`` names ``unet/`` (UNet2DConditionModel), ``vae/`` (AutoencoderKL), ``text_encoder/``
(CLIPTextModel), ``tokenizer/`` (CLIP) and ``scheduler/``. Each part must be present, safetensors only (a pickle is
refused unopened), with a config of plausible numbers whose network — sized on the meta device, nothing allocated —
fits its weights file. SDXL (two text encoders), inpainting UNets and other pipelines are refused in one line.
Loading runs offline with the libraries' progress bars off and their messages turned into one-line warnings.
"""
from __future__ import annotations

import contextlib
import importlib.util
import numbers
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from core.messages import printable
from core.models.checkpoint import (MAX_PARAMETERS, PICKLE_SUFFIXES, ModelLoadError, check_capacity, read_json,
                                    refuse_pickle)

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


MAX_CONFIG_INT = 10_000_000


MAX_LAYERS = 256


#: At most this many layers (resnets × transformer depth, over all levels; SD 1.5 has 20, SDXL 150) in a UNet or
#: VAE config: sizing a deeper one on the meta device would take seconds before its weights refuse it anyway.
MAX_DEPTH = 300


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


@dataclass
class Part:
    name: str
    folder: Path
    cls: str | None
    config: dict
    weights: Path | None
    variant: str | None


def check_pipeline_folder(folder: Path) -> dict[str, Part]:
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
            check_config_numbers(config, where / config_name)
            if name in ("unet", "vae"):
                _check_depth(config, where / config_name)
        weights, variant = _weights(where, weight_names, name) if weight_names else (None, None)
        parts[name] = Part(name, where, cls, config, weights, variant)
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
        check_part_size(parts[name])
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


def check_config_numbers(config: dict, where: Path) -> None:
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


def check_part_size(part: Part) -> None:
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
        raise cannot(part, "build the network from its config", e) from None
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


def load_part(cls, part: Part, dtype):
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
        raise cannot(part, "load it", e) from None
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


def cannot(part: Part, what: str, e: BaseException) -> ModelLoadError:
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return ModelLoadError(f"{part.folder}: cannot {what} ({printable(reason)[:200]})")


@contextlib.contextmanager
def offline():
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

