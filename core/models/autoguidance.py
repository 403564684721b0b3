"""Autoguidance: a model guided by a weaker version of itself (Karras et al. 2024, "Guiding a Diffusion Model with
a Bad Version of Itself", eq. 2): D_w(x; σ, c) = w·D_1(x; σ, c) + (1 − w)·D_0(x; σ, c), where D_1 is the model
and D_0 the *guide*, the same network trained less. In ε form, at a fixed t (x̂_0 is affine in ε):

    ε̃ = ε_0 + w·(ε_1 − ε_0)

Unlike classifier-free guidance it needs no condition, so it sharpens unconditional samples too, and it pulls a
sample away from the errors the weak model makes *more* than the strong one, which improves the distribution
(Fréchet distance) as well as each sample. w = 1 is the model alone. Optionally only inside a timestep interval
(Kynkäänniemi et al. 2024, "Applying Guidance in a Limited Interval"): outside it the model runs alone, which
also saves the guide's call there.

A model folder asks for it in ``config.json``::

    "autoguidance": {"guide": "guide", "weight": 1.5, "t_min": 0, "t_max": 999}

``guide`` is a sub-folder holding an ordinary model folder (``config.json``, ``model.safetensors``,
``schedule.json``) for the same image size, classes, prediction type and T (its width may differ: Karras et al.
guide with smaller models); ``ddpm autoguide`` writes one.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch

from core.models.unet import UNetDenoiser

KEY = "autoguidance"
_POOL = None


def _pool():
    """One worker thread for the guide's calls, made on first use (shared by all guided models)."""
    global _POOL
    if _POOL is None:
        from concurrent.futures import ThreadPoolExecutor
        _POOL = ThreadPoolExecutor(1, thread_name_prefix="autoguidance")
    return _POOL


class AutoguidedDenoiser(UNetDenoiser):
    """The model (``.net``, ``.meta`` as in :class:`UNetDenoiser`) with its guide (``.guide``, a UNetDenoiser);
    :meth:`model_output` returns ε_0 + w·(ε_1 − ε_0) for t in [t_min, t_max] and ε_1 elsewhere."""

    def __init__(self, model: UNetDenoiser, guide: UNetDenoiser, weight: float, t_min: int = 0,
                 t_max: int | None = None):
        super().__init__(model.net, schedule=model.schedule, variance_type=model.variance_type,
                         clip_sample=model.clip_sample, name=model.name, meta=model.meta)
        check_guide(model, guide)
        self.guide = guide
        self.weight = float(weight)
        self.t_min = int(t_min)
        self.t_max = int(t_max) if t_max is not None else (model.schedule.T - 1 if model.schedule else 10 ** 9)
        self.parallel = True  # run the guide beside the model on a multi-core CPU (see _both)

    def model_output(self, x_t, t, class_labels=None, schedule=None):
        if self.weight == 1.0:
            return self.run_net(x_t, t, class_labels)
        t = torch.as_tensor(t, device=x_t.device).reshape(-1).expand(len(x_t))
        inside = (t >= self.t_min) & (t <= self.t_max)
        if not bool(inside.any()):
            return self.run_net(x_t, t, class_labels)
        if bool(inside.all()):
            out, weak = self._both(x_t, t, class_labels, x_t, t, class_labels)
            return weak + self.weight * (out - weak)
        rows = inside.nonzero().flatten()
        labels = None if class_labels is None else torch.as_tensor(class_labels, device=x_t.device)[rows]
        out, weak = self._both(x_t, t, class_labels, x_t[rows], t[rows], labels)
        out = out.clone()
        out[rows] = weak + self.weight * (out[rows] - weak)
        return out

    def _both(self, x, t, labels, gx, gt, glabels):
        """(ε_1 on all rows, ε_0 on the guided rows). On a CPU with ≥ 2 torch threads the two networks run at the
        same time, one thread each (at batch 1 one network cannot use two cores; two networks can); the guide's
        thread takes the caller's grad / inference mode, which are thread-local."""
        threads = torch.get_num_threads()
        if not self.parallel or x.device.type != "cpu" or threads < 2:
            return self.run_net(x, t, labels), self.guide.run_net(gx, gt, glabels)
        grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()

        def weak():
            torch.set_num_threads(max(1, threads // 2))  # per thread: the caller's count is left alone
            with torch.inference_mode(inference), torch.set_grad_enabled(grad):
                return self.guide.run_net(gx, gt, glabels)

        pending = _pool().submit(weak)
        torch.set_num_threads(max(1, threads - threads // 2))
        try:
            out = self.run_net(x, t, labels)
        finally:
            torch.set_num_threads(threads)
            result = pending.result()
        return out, result

    def to(self, device) -> "AutoguidedDenoiser":
        self.guide.to(device)
        return super().to(device)

    def describe(self) -> str:
        span = f", for t in [{self.t_min}, {self.t_max}]" if self.t_min > 0 or (
            self.schedule is not None and self.t_max < self.schedule.T - 1) else ""
        return f"autoguidance w = {self.weight:g} by {self.guide.name}{span}"


def check_guide(model: UNetDenoiser, guide: UNetDenoiser) -> None:
    """A guide must answer the same question as the model: same image size, classes, prediction type, schedule."""
    for what in ("resolution", "channels", "num_classes", "prediction_type"):
        if getattr(model, what) != getattr(guide, what):
            raise ValueError(f"the guide {guide.name} differs from the model in {what.replace('_', ' ')} "
                             f"({getattr(guide, what)} vs {getattr(model, what)})")
    if (model.schedule is None) != (guide.schedule is None) or (
            model.schedule is not None and model.schedule.T != guide.schedule.T):
        raise ValueError(f"the guide {guide.name} was trained with another noise schedule")


def parse_settings(value, where: str) -> dict:
    """``config.json``'s ``autoguidance`` entry → {"guide", "weight", "t_min", "t_max"}; one-line errors."""
    if not isinstance(value, dict) or not isinstance(value.get("guide"), str) or not value["guide"].strip():
        raise ValueError(f"{where}: 'autoguidance' must be an object with a 'guide' sub-folder name")
    guide = value["guide"].strip()
    if Path(guide).is_absolute() or ".." in Path(guide).parts:
        raise ValueError(f"{where}: the autoguidance guide must be a sub-folder of the model folder, got {guide!r}")
    try:
        weight = float(value.get("weight", 1.0))
        t_min = int(value.get("t_min", 0))
        t_max = None if value.get("t_max") is None else int(value["t_max"])
    except (TypeError, ValueError):
        raise ValueError(f"{where}: autoguidance weight, t_min and t_max must be numbers") from None
    if not 0.0 <= weight <= 10.0 or weight != weight:
        raise ValueError(f"{where}: autoguidance weight must be between 0 and 10, got {weight}")
    if t_min < 0 or (t_max is not None and t_max < t_min):
        raise ValueError(f"{where}: autoguidance needs 0 ≤ t_min ≤ t_max, got {t_min}, {t_max}")
    return {"guide": guide, "weight": weight, "t_min": t_min, "t_max": t_max}


def set_weight(den, weight: float | None):
    """``den`` with autoguidance weight ``weight`` (``--autoguidance W``; None: as loaded). W = 1 is the model alone;
    a model without a guide takes only W = 1. Returns a copy when the weight changes, never mutating ``den``."""
    if weight is None:
        return den
    if not 0.0 <= float(weight) <= 10.0:
        raise ValueError(f"autoguidance weight must be between 0 and 10, got {weight:g}")
    if isinstance(den, AutoguidedDenoiser):
        if float(weight) != den.weight:  # a copy: the caller's model (perhaps a cached one) keeps its weight
            den = copy.copy(den)
            den.weight = float(weight)
    elif float(weight) != 1.0:
        raise ValueError(f"{den.name} has no autoguidance guide (only --autoguidance 1, the model alone, applies)")
    return den


def write_autoguided(out, model_dir, guide_dir, weight: float, t_min: int = 0, t_max: int | None = None,
                     half_guide: bool = True) -> Path:
    """A new model folder ``out``: the model's files, ``guide/`` (the guide's files; its weights in fp16 when
    ``half_guide``, which the loader reads back as fp32) and the ``autoguidance`` entry in ``config.json``.
    Both inputs are loaded first, so a mismatch fails before anything is written; ``out`` appears atomically."""
    import json
    import shutil

    from core.atomic import _UMASK, atomic_dir
    from core.models.checkpoint import CONFIG, SCHEDULE, WEIGHTS, load_checkpoint, read_json
    model_dir, guide_dir, out = Path(model_dir), Path(guide_dir), Path(out)
    model, guide = load_checkpoint(model_dir, with_guide=False), load_checkpoint(guide_dir, with_guide=False)
    check_guide(model, guide)
    settings = parse_settings({"guide": "guide", "weight": weight, "t_min": t_min, "t_max": t_max}, str(out))
    config = read_json(model_dir / CONFIG, "model config")
    config[KEY] = settings
    with atomic_dir(out) as tmp:
        for name in (WEIGHTS, SCHEDULE):
            shutil.copyfile(model_dir / name, tmp / name)
        (tmp / CONFIG).write_text(json.dumps(config, indent=1, allow_nan=False), encoding="utf-8")
        (tmp / "guide").mkdir()
        guide_config = read_json(guide_dir / CONFIG, "guide config")
        guide_config.pop(KEY, None)
        steps = guide_config.get("trained_steps")
        guide_config["name"] = f"{config.get('name') or model_dir.name} guide" + (f" (step {steps})" if steps else "")
        (tmp / "guide" / CONFIG).write_text(json.dumps(guide_config, indent=1, allow_nan=False), encoding="utf-8")
        shutil.copyfile(guide_dir / SCHEDULE, tmp / "guide" / SCHEDULE)
        if half_guide:
            from safetensors.torch import save_file
            state = {k: v.detach().half().contiguous() if v.is_floating_point() else v
                     for k, v in guide.net.state_dict().items()}
            save_file(state, str(tmp / "guide" / WEIGHTS), metadata={"format": "pt", "stored": "float16"})
        else:
            shutil.copyfile(guide_dir / WEIGHTS, tmp / "guide" / WEIGHTS)
        for f in (tmp / "guide" / WEIGHTS, tmp / WEIGHTS, tmp / SCHEDULE):
            f.chmod(0o666 & ~_UMASK)
    return out
