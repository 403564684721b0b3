"""diffusers model folders as :class:`Denoiser`\\ s — offline, safetensors only, diffusers an optional extra.

Two layouts are read:
- a ``UNet2DModel`` folder: ``config.json`` + ``diffusion_pytorch_model.safetensors``, optionally
  ``scheduler_config.json``;
- a pipeline folder: ``model_index.json`` + ``unet/`` + ``scheduler/scheduler_config.json``.

The scheduler config's beta schedule, ``prediction_type``, ``variance_type``, ``clip_sample``, thresholding,
``timestep_spacing`` and ``steps_offset`` become the sampler's defaults. The network is built from its config and
the weights are checked key by key before loading, so a mismatch is one line, and nothing is ever fetched.
"""
from __future__ import annotations

from pathlib import Path

import torch

from core.models.checkpoint import (ModelLoadError, PICKLE_SUFFIXES, check_state_dict, read_json, read_safetensors,
                                    refuse_pickle)
from core.models.denoiser import Denoiser
from core.schedule import NoiseSchedule, ScheduleError

EXTRA_HINT = "pip install 'ddpm-studio[diffusers]' (or: pip install .[diffusers] in a checkout)"
WEIGHTS = "diffusion_pytorch_model.safetensors"
VARIANCE = {"fixed_small": "fixed_small", "fixed_small_log": "fixed_small", "fixed_large": "fixed_large",
            "fixed_large_log": "fixed_large", "learned": "fixed_small", "learned_range": "fixed_small"}


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
            raise ModelLoadError(f"{where}: beta_schedule {name!r} is not supported")
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
            raise ModelLoadError(f"{folder}/model_index.json: the pipeline's 'unet' is {unet_entry!r}; only pixel-space "
                                 "UNet2DModel pipelines (DDPM, DDIM) are supported")
        unet_dir, sched_path = folder / "unet", folder / "scheduler" / "scheduler_config.json"
    else:
        unet_dir, sched_path = folder, folder / "scheduler_config.json"
    cfg_path = unet_dir / "config.json"
    if not cfg_path.is_file():
        raise ModelLoadError(f"{unet_dir}: no config.json")
    config = read_json(cfg_path, "diffusers model config")
    if config.get("_class_name") != "UNet2DModel":
        raise ModelLoadError(f"{cfg_path}: only UNet2DModel is supported, this is {config.get('_class_name')!r}")
    weights = _find_weights(unet_dir)
    UNet2DModel = import_unet2d()
    try:
        net = UNet2DModel.from_config(config)
    except Exception as e:  # diffusers raises many kinds for a bad architecture
        raise ModelLoadError(f"{cfg_path}: cannot build the UNet ({str(e).splitlines()[0] if str(e) else e})") from None
    state = read_safetensors(weights)
    check_state_dict(net, state, weights)
    net.load_state_dict(state, strict=True)
    net.float()

    sched = read_json(sched_path, "scheduler config") if sched_path.is_file() else {}
    prediction_type = sched.get("prediction_type", "epsilon")
    if prediction_type not in ("epsilon", "sample", "v_prediction"):
        raise ModelLoadError(f"{sched_path}: prediction_type {prediction_type!r} is not supported")
    variance = sched.get("variance_type") or "fixed_small"
    if variance not in VARIANCE:
        raise ModelLoadError(f"{sched_path}: variance_type {variance!r} is not supported")
    out_ch = int(config.get("out_channels", config.get("in_channels", 3)))
    in_ch = int(config.get("in_channels", 3))
    if out_ch not in (in_ch, 2 * in_ch):
        raise ModelLoadError(f"{cfg_path}: out_channels {out_ch} does not fit in_channels {in_ch}")
    threshold = ((float(sched.get("dynamic_thresholding_ratio", 0.995)), float(sched.get("sample_max_value", 1.0)))
                 if sched.get("thresholding") else None)
    den = DiffusersDenoiser(net, schedule_from_config(sched, sched_path), prediction_type=prediction_type,
                            variance_type=VARIANCE[variance], clip_sample=sched.get("clip_sample", True),
                            name=folder.name, timestep_spacing=sched.get("timestep_spacing"),
                            steps_offset=sched.get("steps_offset", 0), dynamic_threshold=threshold)
    return den.to(device)
