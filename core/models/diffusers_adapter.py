"""diffusers model folders as :class:`Denoiser`\\ s — offline, safetensors only, diffusers an optional extra.

Two layouts are read:
- a ``UNet2DModel`` folder: ``config.json`` + ``diffusion_pytorch_model.safetensors``, optionally
  ``scheduler_config.json``;
- a pipeline folder: ``model_index.json`` + ``unet/`` + ``scheduler/scheduler_config.json``.

The scheduler config's beta schedule, ``prediction_type``, ``variance_type``, ``clip_sample``, thresholding,
``timestep_spacing`` and ``steps_offset`` become the sampler's defaults. The network is built from its config and
the weights are checked key by key before loading, so a mismatch is one line, and nothing is ever fetched.

Before diffusers builds anything, the config's values are checked (positive integers within bounds, block type
names as strings …) and its parameter count is estimated by :func:`unet2d_parameter_count` — a lower bound, exact
for the usual blocks — and held to the same limits as our own folders (:data:`~core.models.checkpoint.
MAX_PARAMETERS`, and what the weights file can hold), so a hostile config is refused in one line without the
minutes and gigabytes of building it. What diffusers logs or warns while building (ignored config keys,
deprecations) reaches the user as one warning line each, naming the config file.
"""
from __future__ import annotations

import contextlib
import inspect
import logging
import numbers
import warnings
from pathlib import Path

import torch

from core.messages import printable, warning_line
from core.models.checkpoint import (ModelLoadError, PICKLE_SUFFIXES, check_capacity, check_state_dict, read_json,
                                    read_safetensors, refuse_pickle)
from core.models.unet import MAX_CHANNELS, MAX_IN_CHANNELS, MAX_LEVELS, MAX_RES_BLOCKS, MAX_RESOLUTION, shown
from core.models.denoiser import Denoiser
from core.schedule import NoiseSchedule, ScheduleError

EXTRA_HINT = "pip install 'ddpm-studio[diffusers]' (or: pip install .[diffusers] in a checkout)"
WEIGHTS = "diffusion_pytorch_model.safetensors"
VARIANCE = {"fixed_small": "fixed_small", "fixed_small_log": "fixed_small", "fixed_large": "fixed_large",
            "fixed_large_log": "fixed_large", "learned": "fixed_small", "learned_range": "fixed_small"}


MAX_CLASS_EMBEDS = 1_000_000
MAX_TRAIN_TIMESTEPS = 100_000


# ----- the config, checked and sized before diffusers builds it -------------------------------------------------
def _int(where, c: dict, key: str, low: int, high: int, optional: bool = False) -> None:
    v = c.get(key)
    if v is None and optional:
        return
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or not low <= v <= high:
        raise ModelLoadError(f"{where}: {key} must be {'null or ' if optional else ''}an integer in {low}…{high}, "
                             f"got {shown(v)}")


def _names(where, c: dict, key: str, count: int) -> None:
    v = c.get(key)
    if not (isinstance(v, (list, tuple)) and len(v) == count and all(isinstance(x, str) and len(x) < 100 for x in v)):
        raise ModelLoadError(f"{where}: {key} must be a list of {count} block names (one per block_out_channels "
                             f"entry), got {shown(v)}")


def check_unet2d_config(config: dict, defaults: dict, where) -> dict:
    """``config`` over UNet2DModel's ``defaults``, with every value that sizes the network checked: one
    :class:`ModelLoadError` line for a negative, zero, non-integer, absurd or mistyped value."""
    c = {**defaults, **{k: v for k, v in config.items() if not str(k).startswith("_")}}
    boc = c.get("block_out_channels")
    if not (isinstance(boc, (list, tuple)) and 1 <= len(boc) <= MAX_LEVELS):
        raise ModelLoadError(f"{where}: block_out_channels must be a list of 1…{MAX_LEVELS} integers, got {shown(boc)}")
    for v in boc:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or not 1 <= v <= MAX_CHANNELS:
            raise ModelLoadError(f"{where}: each of block_out_channels must be an integer in 1…{MAX_CHANNELS}, "
                                 f"got {shown(v)}")
    _names(where, c, "down_block_types", len(boc))
    _names(where, c, "up_block_types", len(boc))
    _int(where, c, "in_channels", 1, MAX_IN_CHANNELS)
    _int(where, c, "out_channels", 1, 2 * MAX_IN_CHANNELS)
    _int(where, c, "layers_per_block", 1, MAX_RES_BLOCKS)
    _int(where, c, "norm_num_groups", 1, MAX_CHANNELS, optional=True)
    _int(where, c, "attn_norm_num_groups", 1, MAX_CHANNELS, optional=True)
    _int(where, c, "attention_head_dim", 1, MAX_CHANNELS, optional=True)
    _int(where, c, "time_embedding_dim", 1, MAX_CHANNELS, optional=True)
    _int(where, c, "num_class_embeds", 1, MAX_CLASS_EMBEDS, optional=True)
    _int(where, c, "num_train_timesteps", 1, MAX_TRAIN_TIMESTEPS, optional=True)
    size = c.get("sample_size")
    sizes = size if isinstance(size, (list, tuple)) else [size]
    if not (1 <= len(sizes) <= 2 and all(isinstance(v, numbers.Integral) and not isinstance(v, bool)
                                         and 1 <= v <= MAX_RESOLUTION for v in sizes)):
        raise ModelLoadError(f"{where}: sample_size must be an integer in 1…{MAX_RESOLUTION} (or two), "
                             f"got {shown(size)}")
    groups = c.get("norm_num_groups")
    if groups is not None:
        for v in boc:
            if v % groups:
                raise ModelLoadError(f"{where}: block_out_channels {v} is not divisible by norm_num_groups {groups}")
    for key in ("time_embedding_type", "downsample_type", "upsample_type", "resnet_time_scale_shift"):
        if key in c and not isinstance(c[key], str):
            raise ModelLoadError(f"{where}: {key} must be a name, got {shown(c[key])}")
    for key in ("mid_block_type", "class_embed_type"):
        if c.get(key) is not None and not isinstance(c[key], str):
            raise ModelLoadError(f"{where}: {key} must be a name or null, got {shown(c[key])}")
    if c.get("time_embedding_type") == "learned" and c.get("num_train_timesteps") is None:
        raise ModelLoadError(f"{where}: time_embedding_type 'learned' needs num_train_timesteps")
    return c


def unet2d_parameter_count(c: dict) -> int:
    """A lower bound on the parameters of diffusers' ``UNet2DModel`` for the checked config ``c`` (see
    :func:`check_unet2d_config`), from its block_out_channels, layers_per_block, block types, head size and
    embeddings, without building it. Exact for the blocks of UNet2DModel pipelines — DownBlock2D, AttnDownBlock2D,
    ResnetDownsampleBlock2D, UpBlock2D, AttnUpBlock2D, ResnetUpsampleBlock2D, UNetMidBlock2D and score-SDE's
    Skip/AttnSkip blocks — with "positional", "fourier" or "learned" time embeddings and either time-scale-shift;
    for other blocks (encoder/decoder, K blocks) it counts only what it is sure of (≥ 60% of the truth in the tests),
    so it never counts more than the network has and a refusal is never wrong."""
    boc = [int(v) for v in c["block_out_channels"]]
    n = int(c["layers_per_block"])
    shift = c.get("resnet_time_scale_shift", "default")
    temb = int(c.get("time_embedding_dim") or 4 * boc[0])
    head = c.get("attention_head_dim")

    def conv(cin, cout, k=3):
        return cin * cout * k * k + cout

    def res(cin, cout, with_temb=True, exact=True):
        if not exact or shift not in ("default", "scale_shift"):  # ResnetBlockCondNorm2D etc.: the convs only
            return conv(cin, cout) + conv(cout, cout)
        t = (temb * cout + cout) * (2 if shift == "scale_shift" else 1) if with_temb else 0
        return 2 * cin + conv(cin, cout) + t + 2 * cout + conv(cout, cout) + (conv(cin, cout, 1) if cin != cout else 0)

    def attn(ch, head_dim, norm=True):
        inner = (ch // head_dim) * head_dim
        return 4 * ch * inner + 3 * inner + ch + (2 * ch if norm else 0)

    standard_down = {"DownBlock2D", "AttnDownBlock2D", "ResnetDownsampleBlock2D", "SkipDownBlock2D",
                     "AttnSkipDownBlock2D"}
    standard_up = {"UpBlock2D", "AttnUpBlock2D", "ResnetUpsampleBlock2D", "SkipUpBlock2D", "AttnSkipUpBlock2D"}
    kind = c.get("time_embedding_type", "positional")
    t_in = 2 * boc[0] if kind == "fourier" else boc[0]
    total = conv(int(c["in_channels"]), boc[0]) + (t_in * temb + temb) + (temb * temb + temb)
    total += {"fourier": boc[0], "learned": int(c.get("num_train_timesteps") or 0) * boc[0]}.get(kind, 0)
    if c.get("class_embed_type") is None and c.get("num_class_embeds") is not None:
        total += int(c["num_class_embeds"]) * temb
    elif c.get("class_embed_type") == "timestep":
        total += (t_in * temb + temb) + (temb * temb + temb)

    out = boc[0]
    for i, name in enumerate(c["down_block_types"]):
        cin, out, final = out, boc[i], i == len(boc) - 1
        exact = name in standard_down
        hd = head if head is not None else out
        total += res(cin, out, exact=exact) + (n - 1) * res(out, out, exact=exact)
        if exact and name.startswith("Attn"):
            total += n * attn(out, hd)
        if not final and exact:
            if "Skip" in name:  # a FIR resnet down (with a 1×1 shortcut) and the 1×1 conv of the RGB skip path
                total += res(out, out) + conv(out, out, 1) + conv(3, out, 1)
            elif name == "ResnetDownsampleBlock2D" or (name == "AttnDownBlock2D"
                                                       and c.get("downsample_type", "conv") == "resnet"):
                total += res(out, out)
            else:
                total += conv(out, out)
    if c.get("mid_block_type") is not None:
        ch = boc[-1]
        total += 2 * res(ch, ch, exact=c["mid_block_type"] == "UNetMidBlock2D")
        if c["mid_block_type"] == "UNetMidBlock2D" and c.get("add_attention", True) and shift != "spatial":
            groups = c.get("attn_norm_num_groups")  # diffusers: else the resnets' groups (never None) if "default"
            total += attn(ch, head if head is not None else ch, norm=groups is not None or shift == "default")
    rev = boc[::-1]
    out = rev[0]
    for i, name in enumerate(c["up_block_types"]):
        prev, out, skip_in = out, rev[i], rev[min(i + 1, len(boc) - 1)]
        final = i == len(boc) - 1
        exact = name in standard_up
        hd = head if head is not None else out
        if exact:
            for j in range(n + 1):  # ≤ MAX_RES_BLOCKS + 1
                total += res((prev if j == 0 else out) + (skip_in if j == n else out), out)
            if name.startswith("Attn"):
                total += attn(out, hd) * (1 if "Skip" in name else n + 1)  # AttnSkipUpBlock2D: one, after all
            if not final:
                if "Skip" in name:  # a FIR resnet up (with a 1×1 shortcut), and the RGB skip path's norm and conv
                    total += res(out, out) + conv(out, out, 1) + 2 * out + conv(out, 3)
                elif name == "ResnetUpsampleBlock2D" or (name == "AttnUpBlock2D"
                                                         and c.get("upsample_type", "conv") == "resnet"):
                    total += res(out, out)
                else:
                    total += conv(out, out)
        else:  # decoder blocks concatenate no skips: count only what every resnet has
            total += (n + 1) * conv(out, out)
    total += 2 * boc[0] + conv(boc[0], int(c["out_channels"]))
    return total


def _init_defaults(cls) -> dict:
    try:
        params = inspect.signature(cls.__init__).parameters.values()
    except (TypeError, ValueError):
        return {}
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}


@contextlib.contextmanager
def one_line_library_messages(where, loggers=("diffusers",)):
    """While diffusers (or transformers) builds or loads: its log records (printed straight to stderr, often
    several lines) and its Python warnings become one ``UserWarning`` line each, led by ``where`` — the CLI shows
    them as ``ddpm CMD: warning: …``."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            if record.levelno >= logging.WARNING:
                lines.append(warning_line(record.getMessage()))

    handler = Collect()
    logs = [logging.getLogger(name) for name in loggers]
    saved = [(log.handlers[:], log.propagate) for log in logs]
    for log in logs:
        log.handlers[:] = [handler]
        log.propagate = False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        for log, (handlers, propagate) in zip(logs, saved):
            log.handlers[:] = handlers
            log.propagate = propagate
    seen = set()
    for text in lines + [warning_line(w) for w in caught]:
        if text not in seen:
            seen.add(text)
            warnings.warn(f"{where}: {text[:300]}", UserWarning, stacklevel=3)


def is_diffusers_folder(folder: Path) -> bool:
    if (folder / "model_index.json").is_file():
        return True
    cfg = folder / "config.json"
    if not cfg.is_file():
        return False
    try:
        return "_class_name" in read_json(cfg, "config")
    except ModelLoadError:
        return False


def import_unet2d():
    try:
        from diffusers import UNet2DModel
    except ImportError:
        raise ModelLoadError(f"loading a diffusers model needs the optional 'diffusers' extra: {EXTRA_HINT}") from None
    return UNet2DModel


class DiffusersDenoiser(Denoiser):
    """A diffusers ``UNet2DModel`` (``.net``) answering :meth:`model_output` in its scheduler's prediction type."""

    def __init__(self, net, schedule: NoiseSchedule, prediction_type="epsilon", variance_type="fixed_small",
                 clip_sample=True, name="diffusers", timestep_spacing=None, steps_offset=0, dynamic_threshold=None):
        cfg = net.config
        size = cfg.sample_size if isinstance(cfg.sample_size, int) else tuple(cfg.sample_size)
        if not isinstance(size, int):
            if len(size) != 2 or size[0] != size[1]:
                raise ModelLoadError(f"{name}: only square models are supported (sample_size {list(size)})")
            size = size[0]
        param = next(net.parameters(), None)
        super().__init__(resolution=int(size), channels=int(cfg.in_channels), prediction_type=prediction_type,
                         num_classes=int(cfg.num_class_embeds or 0), schedule=schedule, variance_type=variance_type,
                         clip_sample=bool(clip_sample), name=name,
                         device=param.device if param is not None else torch.device("cpu"))
        self.net = net.eval()
        self.has_null_class = False  # diffusers' class embedding has no "no class" row, so no guidance
        self.timestep_spacing = timestep_spacing
        self.steps_offset = int(steps_offset)
        self.dynamic_threshold = dynamic_threshold

    def model_output(self, x_t, t, class_labels=None, schedule=None):
        out = self.net(x_t, t, class_labels=class_labels if self.num_classes else None, return_dict=False)[0]
        return out[:, :self.channels] if out.shape[1] != self.channels else out  # learned variance: keep the mean

    def to(self, device) -> "DiffusersDenoiser":
        self.net.to(device)
        return super().to(device)


def schedule_from_config(cfg: dict, where) -> NoiseSchedule:
    """A diffusers scheduler config's betas as a :class:`NoiseSchedule` (float64, the same formulas)."""
    T = cfg.get("num_train_timesteps", 1000)
    try:
        if cfg.get("trained_betas") is not None:
            return NoiseSchedule.from_betas(cfg["trained_betas"], name="trained_betas")
        name = cfg.get("beta_schedule", "linear")
        if name not in ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid"):
            raise ModelLoadError(f"{where}: beta_schedule {shown(name)} is not supported")
        return NoiseSchedule.preset(name, T=T, beta_start=cfg.get("beta_start", 1e-4),
                                    beta_end=cfg.get("beta_end", 0.02),
                                    zero_snr=bool(cfg.get("rescale_betas_zero_snr", False)))
    except ScheduleError as e:
        raise ModelLoadError(f"{where}: {e}") from None


def _find_weights(unet_dir: Path) -> Path:
    for name in (WEIGHTS, "diffusion_pytorch_model.fp16.safetensors"):
        if (unet_dir / name).is_file():
            return unet_dir / name
    if (unet_dir / f"{WEIGHTS}.index.json").is_file():
        raise ModelLoadError(f"{unet_dir}: sharded weights are not supported")
    pickles = sorted(p for p in unet_dir.glob("*") if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        raise refuse_pickle(pickles[0])
    raise ModelLoadError(f"{unet_dir}: no {WEIGHTS}")


def load_diffusers(folder, device="cpu") -> DiffusersDenoiser:
    """Load a diffusers UNet2DModel or pipeline folder (see the module docstring)."""
    folder = Path(folder)
    if (folder / "model_index.json").is_file():
        index = read_json(folder / "model_index.json", "diffusers pipeline index")
        unet_entry = index.get("unet")
        if not (isinstance(unet_entry, list) and len(unet_entry) == 2 and unet_entry[1] == "UNet2DModel"):
            raise ModelLoadError(f"{folder}/model_index.json: the pipeline's 'unet' is {shown(unet_entry)}; only "
                                 "pixel-space UNet2DModel pipelines (DDPM, DDIM) are supported")
        unet_dir, sched_path = folder / "unet", folder / "scheduler" / "scheduler_config.json"
    else:
        unet_dir, sched_path = folder, folder / "scheduler_config.json"
    cfg_path = unet_dir / "config.json"
    if not cfg_path.is_file():
        raise ModelLoadError(f"{unet_dir}: no config.json")
    config = read_json(cfg_path, "diffusers model config")
    if config.get("_class_name") != "UNet2DModel":
        raise ModelLoadError(f"{cfg_path}: only UNet2DModel is supported, this is {shown(config.get('_class_name'))}")
    weights = _find_weights(unet_dir)
    UNet2DModel = import_unet2d()
    checked = check_unet2d_config(config, _init_defaults(UNet2DModel), cfg_path)
    check_capacity(cfg_path, unet2d_parameter_count(checked), weights)  # before anything is read or built
    try:
        with one_line_library_messages(cfg_path):
            net = UNet2DModel.from_config(config)
    except Exception as e:  # diffusers raises many kinds for a bad architecture
        reason = printable(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)[:200]
        raise ModelLoadError(f"{cfg_path}: cannot build the UNet ({reason})") from None
    state = read_safetensors(weights)
    check_state_dict(net, state, weights)
    net.load_state_dict(state, strict=True)
    net.float()

    out_ch = int(config.get("out_channels", config.get("in_channels", 3)))
    in_ch = int(config.get("in_channels", 3))
    if out_ch not in (in_ch, 2 * in_ch):
        raise ModelLoadError(f"{cfg_path}: out_channels {out_ch} does not fit in_channels {in_ch}")
    defaults = scheduler_defaults(sched_path)
    set_alpha_to_one = defaults.pop("set_alpha_to_one")
    den = DiffusersDenoiser(net, name=printable(folder.name), **defaults)
    den.set_alpha_to_one = set_alpha_to_one
    return den.to(device)


def scheduler_defaults(sched_path: Path) -> dict:
    """A diffusers ``scheduler_config.json`` (absent: diffusers' defaults) as our samplers' defaults: the
    ``schedule`` and ``prediction_type``, ``variance_type``, ``clip_sample``, ``dynamic_threshold``,
    ``timestep_spacing``, ``steps_offset`` and DDIM's ``set_alpha_to_one``, each checked (one line if not)."""
    sched = read_json(sched_path, "scheduler config") if sched_path.is_file() else {}
    prediction_type = sched.get("prediction_type", "epsilon")
    if prediction_type not in ("epsilon", "sample", "v_prediction"):
        raise ModelLoadError(f"{sched_path}: prediction_type {shown(prediction_type)} is not supported")
    variance = sched.get("variance_type") or "fixed_small"
    if not isinstance(variance, str) or variance not in VARIANCE:
        raise ModelLoadError(f"{sched_path}: variance_type {shown(variance)} is not supported")
    spacing = sched.get("timestep_spacing")
    if spacing is not None and spacing not in ("leading", "trailing", "linspace"):
        raise ModelLoadError(f"{sched_path}: timestep_spacing {shown(spacing)} is not supported")
    offset = sched.get("steps_offset", 0)
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= 1000:
        raise ModelLoadError(f"{sched_path}: steps_offset must be an integer in 0…1000, got {shown(offset)}")
    threshold = ((float(sched.get("dynamic_thresholding_ratio", 0.995)), float(sched.get("sample_max_value", 1.0)))
                 if sched.get("thresholding") else None)
    return dict(schedule=schedule_from_config(sched, sched_path), prediction_type=prediction_type,
                variance_type=VARIANCE[variance], clip_sample=bool(sched.get("clip_sample", True)),
                timestep_spacing=spacing, steps_offset=offset, dynamic_threshold=threshold,
                set_alpha_to_one=bool(sched.get("set_alpha_to_one", True)))
