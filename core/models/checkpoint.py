"""Our model folder: ``config.json`` + ``model.safetensors`` + ``schedule.json`` (the layout diffusers users know).

``config.json`` holds ``format`` ("ddpm-studio.model"), ``version``, ``unet`` (:class:`UNetConfig` as a dict),
``prediction_type``, ``resolution``, ``channels``, ``num_classes``, ``variance_type``, ``clip_sample`` and any
JSON-safe training metadata (step, loss, command line …). Weights are safetensors only: a pickle (``.pt``,
``.ckpt``, ``.bin`` …) can run code when loaded, so it is refused and never opened.

A model folder is untrusted input, so its size is checked before anything is built: every UNet config value must
be an integer (or number) within its bound (:mod:`core.models.unet`), the network's parameter count — computed
in closed form from the config (:func:`~core.models.unet.unet_parameter_count`) — must be at most
:data:`MAX_PARAMETERS` (2·10⁹, 8 GB of fp32 weights), and it must not exceed by far what ``model.safetensors``
can hold (its header lists every tensor's shape; :func:`check_capacity`). Each refusal is one line, in well under a
second, with no allocation.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from core.atomic import atomic_dir
from core.models.denoiser import VARIANCE_TYPES
from core.messages import printable
from core.models.unet import UNet, UNetConfig, UNetDenoiser, shown, unet_parameter_count
from core.schedule import NoiseSchedule, ScheduleError

FORMAT = "ddpm-studio.model"
VERSION = 1
CONFIG, WEIGHTS, SCHEDULE = "config.json", "model.safetensors", "schedule.json"
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle")
RESERVED = ("format", "version", "unet", "prediction_type", "resolution", "channels", "num_classes")
#: The most parameters a model folder (ours or diffusers') may describe: 2·10⁹, i.e. 8 GB of fp32 weights — far
#: above any pixel-space DDPM UNet (the CIFAR-10 model has 35.7 M, ADM's ImageNet 256 one 554 M).
MAX_PARAMETERS = 2_000_000_000
#: A config may describe at most CAPACITY_FACTOR × (the values in the weights file) + CAPACITY_SLACK parameters;
#: past that the weights cannot fit and building the network would only waste time. Nearer misses are left to the
#: tensor-by-tensor check, whose message names the first tensor that differs.
CAPACITY_FACTOR, CAPACITY_SLACK = 2, 1_000_000
MAX_CONFIG_BYTES = 10_000_000  # a config.json (ours or diffusers') is a few kB
MAX_SAFETENSORS_HEADER = 100_000_000  # bytes; the safetensors library's own limit
DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1, "I16": 2, "U16": 2, "F16": 2,
               "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8, "C64": 8}


class ModelLoadError(ValueError):
    """A model that cannot be loaded or saved; the message is one line naming the file and the mismatch."""


# ----- writing ------------------------------------------------------------------------------------------------
def _json_safe(key: str, value):
    """numpy scalars → Python, tuples → lists, NaN/inf → null; anything else that JSON cannot hold is an error."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (list, tuple)):
        return [_json_safe(key, v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_safe(f"{key}.{k}", v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    raise ModelLoadError(f"model metadata {key!r} of type {type(value).__name__} cannot be stored in config.json")


def _plain_module(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "_orig_mod", model)  # torch.compile wraps the module; save the original's keys


def model_config(model: UNet, **meta) -> dict:
    """The ``config.json`` dict for ``model`` plus metadata (``variance_type`` and ``clip_sample`` have defaults)."""
    cfg = _plain_module(model).config
    variance_type = meta.pop("variance_type", "fixed_small")
    if variance_type not in VARIANCE_TYPES:
        raise ModelLoadError(f"variance_type must be one of {', '.join(VARIANCE_TYPES)}, got {variance_type!r}")
    clash = sorted(set(meta) & set(RESERVED))
    if clash:
        raise ModelLoadError(f"model metadata may not set {', '.join(clash)} (they come from the UNet config)")
    config = {"format": FORMAT, "version": VERSION, "unet": cfg.to_dict(), "prediction_type": cfg.prediction_type,
              "resolution": cfg.resolution, "channels": cfg.in_channels, "num_classes": cfg.num_classes,
              "variance_type": variance_type, "clip_sample": bool(meta.pop("clip_sample", True))}
    config.update({str(k): _json_safe(str(k), v) for k, v in meta.items()})
    return config


def write_model_files(folder, model: UNet, schedule: NoiseSchedule, **meta) -> Path:
    """Write config.json, model.safetensors and schedule.json into the existing ``folder`` (not atomically:
    write into a temporary folder and rename it, as :func:`save_checkpoint` does)."""
    from safetensors.torch import save_file
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelLoadError(f"{folder}: no such folder")
    if not isinstance(schedule, NoiseSchedule):
        raise ModelLoadError("save a model with the NoiseSchedule it was trained on")
    config = model_config(model, **meta)
    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in _plain_module(model).state_dict().items()}
    save_file(state, str(folder / WEIGHTS), metadata={"format": "pt", "producer": FORMAT})
    (folder / SCHEDULE).write_text(schedule.to_json(), encoding="utf-8")
    (folder / CONFIG).write_text(json.dumps(config, indent=1, allow_nan=False), encoding="utf-8")
    return folder


def save_checkpoint(folder, model: UNet, schedule: NoiseSchedule, **meta) -> Path:
    """Write a complete model folder atomically: all three files appear together or not at all."""
    folder = Path(folder)
    with atomic_dir(folder) as tmp:
        write_model_files(tmp, model, schedule, **meta)
    return folder


# ----- reading ------------------------------------------------------------------------------------------------
def refuse_pickle(path: Path) -> ModelLoadError:
    return ModelLoadError(f"{path}: refusing to open a pickle checkpoint ({path.suffix} files can run code when "
                          "loaded); DDPM Studio reads only safetensors model folders")


def read_json(path: Path, what: str) -> dict:
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ModelLoadError(f"{path}: {path.stat().st_size:,} bytes is too large for a {what} (at most "
                                 f"{MAX_CONFIG_BYTES:,})")
        d = json.loads(path.read_text(encoding="utf-8"))
    except ModelLoadError:
        raise
    except RecursionError:
        raise ModelLoadError(f"{path}: not a {what} (nested too deeply)") from None
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    except UnicodeDecodeError:
        raise ModelLoadError(f"{path}: not a {what} (not UTF-8 text)") from None
    except ValueError as e:  # e.g. an integer of more digits than Python converts
        raise ModelLoadError(f"{path}: not valid JSON ({printable(str(e).splitlines()[0])[:120]})") from None
    except OSError as e:
        raise ModelLoadError(f"{path}: cannot read ({e.strerror})") from None
    if not isinstance(d, dict):
        raise ModelLoadError(f"{path}: a {what} must be a JSON object")
    return d


def _require_weights(path: Path) -> None:
    if not path.is_file():
        near = sorted(p.name for p in path.parent.glob("*") if p.suffix.lower() in PICKLE_SUFFIXES)
        if near:
            raise refuse_pickle(path.parent / near[0])
        raise ModelLoadError(f"{path}: no such file (the weights are missing)")


def _not_safetensors(path: Path, reason: str) -> ModelLoadError:
    return ModelLoadError(f"{path}: not a valid safetensors file ({printable(reason)[:200]})")


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file (no code can run); one-line errors for a missing or corrupt file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    _require_weights(path)
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise _not_safetensors(path, str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__) from None


def safetensors_values(path: Path) -> int:
    """How many tensor elements the safetensors file holds, from its header alone (8-byte length + JSON): the
    tensors' data is not read. A header whose tensors need more bytes than the file has is refused as corrupt."""
    _require_weights(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            text = f.read(n) if 0 < n <= min(size - 8, MAX_SAFETENSORS_HEADER) else None
    except OSError as e:
        raise ModelLoadError(f"{path}: cannot read ({e.strerror})") from None
    if text is None:
        raise _not_safetensors(path, "no header" if n <= 0 else "the header is longer than the file")
    try:
        header = json.loads(text)
    except (ValueError, RecursionError):  # not UTF-8, not JSON, or numbers Python will not convert
        raise _not_safetensors(path, "the header is not JSON") from None
    if not isinstance(header, dict):
        raise _not_safetensors(path, "the header is not a JSON object")
    values = nbytes = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if not (isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                for d in shape)):
            raise _not_safetensors(path, f"tensor {name!r} has no valid shape")
        count = math.prod(shape)
        values += count
        nbytes += count * DTYPE_BYTES.get(entry.get("dtype"), 1)
    if nbytes > size - 8 - n:
        raise _not_safetensors(path, f"its header lists {nbytes:,} bytes of tensors but the file has "
                                     f"{size - 8 - n:,}")
    return values


def check_capacity(where, params: int, weights: Path) -> None:
    """Refuse, before anything is built, a network of ``params`` parameters over :data:`MAX_PARAMETERS` or far
    beyond what ``weights`` holds (see :data:`CAPACITY_FACTOR`)."""
    if params > MAX_PARAMETERS:
        raise ModelLoadError(f"{where}: the config describes a network of {params:.3g} parameters, more than the "
                             f"{MAX_PARAMETERS:.3g} this program loads")
    held = safetensors_values(weights)
    if params > CAPACITY_FACTOR * held + CAPACITY_SLACK:
        raise ModelLoadError(f"{where}: the config describes a network of {params:,} parameters but "
                             f"{weights.name} holds only {held:,} values; the config does not fit these weights")


def check_state_dict(module: torch.nn.Module, state: dict[str, torch.Tensor], path) -> None:
    """One line naming missing or unexpected keys, or the first tensor whose shape differs."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        def few(keys):
            return printable(", ".join(k[:80] for k in keys[:3])) + (f" … ({len(keys)} in all)" if len(keys) > 3
                                                                     else "")
        parts = ([f"missing {few(missing)}"] if missing else []) + ([f"unexpected {few(unexpected)}"] if unexpected
                                                                       else [])
        raise ModelLoadError(f"{path}: weights do not fit the config's network: {'; '.join(parts)}")
    for k, v in expected.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise ModelLoadError(f"{path}: {k} has shape {list(state[k].shape)} but the config's network expects "
                                 f"{list(v.shape)}")
        if not (state[k].is_floating_point() or state[k].dtype == v.dtype):
            raise ModelLoadError(f"{path}: {k} has dtype {state[k].dtype}, expected {v.dtype}")


def read_model_config(folder: Path) -> tuple[dict, UNetConfig]:
    path = folder / CONFIG
    if not path.is_file():
        raise ModelLoadError(f"{folder}: not a DDPM Studio model folder (no {CONFIG})")
    config = read_json(path, "model config")
    if config.get("format") != FORMAT:
        raise ModelLoadError(f"{path}: format is {shown(config.get('format'))}, not {FORMAT!r}")
    version = config.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version > VERSION:
        raise ModelLoadError(f"{path}: model format version {shown(version)} is newer than this program reads "
                             f"({VERSION})")
    if not isinstance(config.get("unet"), dict):
        raise ModelLoadError(f"{path}: no 'unet' architecture object")
    try:
        ucfg = UNetConfig.from_dict(config["unet"])
    except (TypeError, ValueError) as e:
        raise ModelLoadError(f"{path}: {printable(str(e).splitlines()[0] if str(e) else type(e).__name__)}") from None
    for key, value in (("resolution", ucfg.resolution), ("channels", ucfg.in_channels),
                       ("num_classes", ucfg.num_classes), ("prediction_type", ucfg.prediction_type)):
        if key in config and config[key] != value:
            raise ModelLoadError(f"{path}: {key} is {shown(config[key])} but the UNet config says {value!r}")
    if not isinstance(config.get("variance_type", "fixed_small"), str) or config.get(
            "variance_type", "fixed_small") not in VARIANCE_TYPES:
        raise ModelLoadError(f"{path}: variance_type {shown(config.get('variance_type'))} is not one of "
                             f"{', '.join(VARIANCE_TYPES)}")
    if not isinstance(config.get("clip_sample", True), bool):
        raise ModelLoadError(f"{path}: clip_sample must be true or false, got {shown(config.get('clip_sample'))}")
    return config, ucfg



def load_checkpoint(folder, device="cpu", with_guide: bool = True) -> UNetDenoiser:
    """Load one of our model folders as a :class:`UNetDenoiser` on ``device`` (eval mode); a folder whose config
    names an autoguidance guide gives an :class:`~core.models.autoguidance.AutoguidedDenoiser` (``with_guide=False``:
    the network alone, as a guide is loaded: a guide never has a guide of its own)."""
    folder = Path(folder)
    if folder.is_file():
        if folder.suffix.lower() in PICKLE_SUFFIXES:
            raise refuse_pickle(folder)
        raise ModelLoadError(f"{folder}: a model is a folder (config.json + {WEIGHTS} + {SCHEDULE}), not a file")
    if not folder.is_dir():
        raise ModelLoadError(f"{folder}: no such folder")
    config, ucfg = read_model_config(folder)
    check_capacity(folder, unet_parameter_count(ucfg), folder / WEIGHTS)  # before anything is read or built
    try:
        schedule = NoiseSchedule.load(folder / SCHEDULE)
    except ScheduleError as e:
        raise ModelLoadError(str(e).splitlines()[0]) from None
    # weights stored in fp16/bf16 (a guide, to keep the folder small) are computed with in fp32
    state = {k: v.float() if v.is_floating_point() and v.dtype != torch.float32 else v
             for k, v in read_safetensors(folder / WEIGHTS).items()}
    with torch.device("meta"):  # no random init: loading must not draw from (or race on) the global torch RNG
        net = UNet(ucfg)
    check_state_dict(net, state, folder / WEIGHTS)
    net.load_state_dict(state, strict=True, assign=True)
    meta = {k: v for k, v in config.items() if k not in RESERVED}
    den = UNetDenoiser(net, schedule=schedule, variance_type=config.get("variance_type", "fixed_small"),
                       clip_sample=bool(config.get("clip_sample", True)),
                       name=printable(config.get("name") or folder.name)[:200], meta=meta)
    if "autoguidance" in config and with_guide:
        den = _with_guide(den, folder, config["autoguidance"])
    return den.to(device)


def _with_guide(den: UNetDenoiser, folder: Path, settings) -> UNetDenoiser:
    """Wrap ``den`` with the guide its config names (see :mod:`core.models.autoguidance`)."""
    from core.models.autoguidance import AutoguidedDenoiser, parse_settings
    try:
        s = parse_settings(settings, str(folder / CONFIG))
    except ValueError as e:
        raise ModelLoadError(str(e)) from None
    guide_dir = folder / s["guide"]
    if not (guide_dir / CONFIG).is_file():
        raise ModelLoadError(f"{guide_dir}: the autoguidance guide named in {folder / CONFIG} is missing")
    guide = load_checkpoint(guide_dir, with_guide=False)
    try:
        return AutoguidedDenoiser(den, guide, s["weight"], s["t_min"], s["t_max"])
    except ValueError as e:
        raise ModelLoadError(f"{folder}: {e}") from None
