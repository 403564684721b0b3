"""Training a DDPM: the one loop the CLI (``ddpm train``) and the GUI's Train panel both drive.

Per step (Ho et al. 2020, Alg. 1): draw x_0 from the data, t ~ U{0…T−1}, ε ~ N(0, I), form
x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε (eq. 5) and take a gradient step on L_simple = ‖target − f_θ(x_t, t, y)‖², where the
target is ε (eq. 14 of Ho et al.), x_0, or v = √ᾱ_t·ε − √(1−ᾱ_t)·x_0 (Salimans & Ho 2022). Optional min-SNR-γ
weighting (Hang et al. 2023): w_t = min(SNR_t, γ)/SNR_t for ε, min(SNR_t, γ) for x_0, min(SNR_t, γ)/(SNR_t + 1) for v.
AdamW with linear warm-up, gradient-norm clipping, and EMA weights (the ones saved and sampled). With labelled data
the model is class-conditional and each label is replaced by the null class with probability ``label_dropout``, so
one network serves classifier-free guidance (Ho & Salimans 2022).

Distillation (``teacher``): the target is the teacher's own prediction f_teacher(x_t, t, y) instead of ε, and the
student starts from the teacher's network (its size, schedule and prediction type). With an autoguided teacher
(:mod:`core.models.autoguidance`) the student learns ε_guide + w·(ε_model − ε_guide) in one network, so sampling
costs one call a step instead of two (the first stage of Meng et al. 2023, "On Distillation of Guided Diffusion
Models", with autoguidance in place of classifier-free guidance).

:class:`Trainer` is an iterator of :class:`TrainEvent` (``for event in train(...)``). ``close()`` stops it at once;
``save()`` writes a resumable checkpoint at any time between events (every event ends a whole step, so the saved
RNG state is the one the next step starts from). Checkpoints are folders written by :func:`core.atomic.atomic_dir`
(a temporary folder, fsynced, swapped in atomically; a kill at any point leaves a complete checkpoint, and a start
puts back one that a kill between the fallback renames left beside its name): the model files of
:mod:`core.models.checkpoint` holding the EMA weights (so a checkpoint loads like any model), plus
``train_state.safetensors`` (raw weights, optimizer moments, RNG state as uint8) and ``train_state.json`` (step,
options, loss history). No pickle anywhere. ``resume=True`` continues bit-exactly.

Every output place is checked before the first step (the folder can be created and written, ``checkpoint``,
``model`` and ``samples`` are not files), so an unwritable ``out`` fails in the first second, not at the first save.

Layout of ``out``: ``checkpoint/`` (latest resumable state), ``model/`` (inference files, written at the end),
``samples/step_NNNNNN.png`` (EMA sample grids).

Data order: epoch ``e`` is a permutation of the images seeded by (seed, e) (:mod:`core.data_stream`), consumed as
one stream of positions; an optimizer step takes the next *global batch* = world size × ``batch_size`` ×
``accumulate`` positions, and every per-sample random draw (t, ε, label dropout, flip) is a function of the sample's
place in the global batch (drawn by one generator all ranks share: t, the dropout and flip coins and a seed per
sample for its ε). So the samples and noise of a step do not depend on how the global batch is split over processes
or accumulation steps: 2 processes × batch 8 train on exactly what 1 process × batch 16 trains on.

Scale-out (``torchrun``, :mod:`core.distributed`): every rank holds the model in DistributedDataParallel (gradients
averaged over ranks), draws its disjoint slice of each micro-batch, and all-reduces its loss, its it/s and its stop
flag once a step (one collective), so the reported loss is the mean over ranks and all ranks stop at the same step
boundary when any of them is asked to (:attr:`Trainer.stop_check`). Rank 0 alone keeps the EMA, draws sample grids
and writes checkpoints and the model, with a barrier after each, so a checkpoint is the state of every rank at one
step boundary. A folder of images streams from disk (:func:`core.data_stream.open_folder`, DataLoader workers);
``builtin:mnist`` (and a :class:`core.data.Dataset` passed in) stays in memory.
"""
from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

import core.distributed as D
from core.atomic import atomic_dir, recover_dir
from core.data import Dataset, load_dataset
from core.data_stream import DataOrder, RankBatches, open_folder, shard_of
from core.device import DeviceError, autocast, pick_device
from core.images import make_grid, save_image, to_uint8
from core.models.checkpoint import read_json, read_safetensors, write_model_files
from core.models.unet import UNet, UNetConfig, UNetDenoiser
from core.outputs import check_output_folder
from core.samplers import run_to_end, sample
from core.samplers.guidance import labels_each_class
from core.schedule import NoiseSchedule

STATE_JSON, STATE_TENSORS = "train_state.json", "train_state.safetensors"
STATE_FORMAT = "ddpm-studio.train-state"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")

# Model sizes: (base channels, channel multipliers, attention at the lowest feature map?). ``small`` is the built-in
# MNIST model: no attention in the res-blocks (the mid-block keeps its one) because CPU attention backward costs
# ~5× a whole step at 7×7, and the sampling goals (1000 DDPM steps ≤ 10 s) need ≤ 10 ms per network call.
# ``medium`` (2.3× small's parameters, ~1.6× its CPU time per call) is the largest that still fits that budget.
MODEL_SIZES = {
    "tiny": dict(base_channels=16, channel_mults=(1, 2, 2), attention=False),
    "small": dict(base_channels=32, channel_mults=(1, 2, 2), attention=False),
    "medium": dict(base_channels=48, channel_mults=(1, 2, 2), attention=False),
    "base": dict(base_channels=64, channel_mults=(1, 2, 2), attention=True),
    "large": dict(base_channels=96, channel_mults=(1, 2, 2, 2), attention=True),
}


def unet_config_for(size: str, resolution: int, channels: int, num_classes: int,
                    prediction_type: str = "epsilon") -> UNetConfig:
    """The :class:`UNetConfig` of a named model size for data of the given shape."""
    if size not in MODEL_SIZES:
        raise ValueError(f"unknown model size {size!r}; choose one of {', '.join(MODEL_SIZES)}")
    spec = MODEL_SIZES[size]
    mults = spec["channel_mults"]
    lowest = resolution
    for _ in mults[1:]:
        lowest = (lowest + 1) // 2
    return UNetConfig(resolution=resolution, in_channels=channels, base_channels=spec["base_channels"],
                      channel_mults=mults, attention_resolutions=(lowest,) if spec["attention"] else (),
                      num_classes=num_classes, groups=8, prediction_type=prediction_type)


#: Recipe fields a resumed run may change on purpose (``ddpm train --resume --label-dropout P``), e.g. to give the
#: unconditional (null-label) mode more training late in a run. Each change is logged in ``train_state.json``.
CHANGEABLE_ON_RESUME = ("label_dropout", "lr", "ema_decay", "accumulate")
#: Options that are not the recipe: how and where this session runs (a resume takes them from its own command).
SESSION_OPTIONS = ("steps", "device", "precision", "checkpoint_every", "sample_every", "sample_steps", "clip_sample",
                   "compile", "workers")


@dataclass
class TrainConfig:
    """Every option of a training run (saved in ``train_state.json``, so ``resume`` needs only ``out``).
    ``clip_sample`` is not a training option: it is the saved model's default for clipping x̂_0 when sampling."""

    data: str = "builtin:mnist"
    out: str = "runs/model"
    steps: int = 10_000
    batch_size: int = 64
    resolution: int | None = None
    channels: int | None = None
    model_size: str = "small"
    prediction_type: str = "epsilon"
    schedule: str = "linear"
    T: int = 1000
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 500
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    label_dropout: float = 0.15
    min_snr_gamma: float | None = None
    hflip: bool = False
    clip_sample: bool = True
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    checkpoint_every: int = 500
    sample_every: int = 500
    sample_steps: int = 25
    loss_log_every: int = 10
    accumulate: int = 1          # micro-batches per optimizer step (gradient accumulation)
    compile: bool = False        # torch.compile the network
    workers: int | None = None   # DataLoader worker processes per rank for a folder (None: one per spare core)
    teacher: str | None = None   # a model SPEC to distil: its prediction is the target, its weights the start

    def __post_init__(self):
        if self.workers is not None and int(self.workers) < 0:
            raise ValueError(f"workers must be ≥ 0, got {self.workers}")
        for name in ("steps", "batch_size", "T", "sample_steps", "loss_log_every", "accumulate"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "checkpoint_every", "sample_every"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be ≥ 0, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"learning rate must be > 0, got {self.lr}")
        for name in ("weight_decay", "grad_clip"):
            if not (getattr(self, name) >= 0 and math.isfinite(getattr(self, name))):
                raise ValueError(f"{name} must be a finite number ≥ 0, got {getattr(self, name)}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0.0 <= self.label_dropout < 1.0:
            raise ValueError(f"label_dropout must be in [0, 1), got {self.label_dropout}")
        if self.min_snr_gamma is not None and not (self.min_snr_gamma > 0 and math.isfinite(self.min_snr_gamma)):
            raise ValueError(f"min_snr_gamma must be a finite number > 0, got {self.min_snr_gamma}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.model_size not in MODEL_SIZES:
            raise ValueError(f"unknown model size {self.model_size!r}; choose one of {', '.join(MODEL_SIZES)}")

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class TrainEvent:
    """One report from the loop. ``kind``: ``"step"`` (every step), ``"sample"`` (``grid`` is an H×W×3 uint8 EMA
    sample grid, also saved as ``path``), ``"checkpoint"`` (``path`` is the folder), ``"done"`` (the final model
    folder in ``path``). ``loss`` is this step's loss; ``loss_avg`` an exponential average (τ = 50 steps)."""

    kind: str
    step: int
    total: int
    loss: float = float("nan")
    loss_avg: float = float("nan")
    lr: float = 0.0
    it_per_s: float = 0.0
    elapsed_s: float = 0.0
    grid: np.ndarray | None = None
    path: str | None = None


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up over ``warmup_steps``, then constant (Ho et al. 2020 used 5000 warm-up steps at 2e-4)."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    return cfg.lr


def loss_weights(snr: torch.Tensor, prediction_type: str, gamma: float | None) -> torch.Tensor:
    """Min-SNR-γ weights (Hang et al. 2023) per sample; all ones when γ is None."""
    if gamma is None:
        return torch.ones_like(snr)
    clipped = torch.clamp(snr, max=gamma)
    if prediction_type == "epsilon":
        return clipped / snr
    if prediction_type == "sample":
        return clipped
    return clipped / (snr + 1.0)


class Trainer:
    """An iterator over :class:`TrainEvent`; see the module docstring. Build with :func:`train`."""

    def __init__(self, config: TrainConfig, resume: bool = False, dataset: Dataset | None = None,
                 change: tuple[str, ...] = ()):
        out = Path(config.out)
        created = not out.exists()
        try:
            self._init(config, out, resume, dataset, change)
        except BaseException:
            if created:  # a run that never started leaves no empty folder behind
                with contextlib.suppress(OSError):
                    out.rmdir()
            raise

    def _init(self, config: TrainConfig, out: Path, resume: bool, dataset: Dataset | None,
              change: tuple[str, ...]) -> None:
        ckpt = out / "checkpoint"
        failed = None
        if D.is_main():  # one rank checks and tidies the folder; the others hear how it went
            try:
                check_outputs(out)
                for folder in (ckpt, out / "model"):  # after a kill: the complete folder back, leftovers gone
                    recover_dir(folder)
            except Exception as e:  # noqa: BLE001 - re-raised below, on every rank
                failed = e
        failed = D.broadcast_object(failed)
        if failed is not None:
            raise failed
        if resume:
            if not (ckpt / STATE_JSON).is_file():
                raise FileNotFoundError(f"{out}: no checkpoint to resume (expected {ckpt / STATE_JSON})")
            state = read_json(ckpt / STATE_JSON, "training state")
            if state.get("format") != STATE_FORMAT:
                raise ValueError(f"{ckpt / STATE_JSON}: not a DDPM Studio training state")
            saved = TrainConfig.from_dict(state["config"])
            # a resumed run keeps its recipe; only the length, the device and the reporting cadence may change,
            # and the fields named in ``change`` (a deliberate new recipe from this step on, logged in the state)
            unknown = set(change) - set(CHANGEABLE_ON_RESUME)
            if unknown:
                raise ValueError(f"cannot change {', '.join(sorted(unknown))} when resuming; only "
                                 f"{', '.join(CHANGEABLE_ON_RESUME)}")
            changes = list(state.get("recipe_changes", []))
            diff = {name: [getattr(saved, name), getattr(config, name)] for name in change
                    if getattr(saved, name) != getattr(config, name)}
            if diff:
                changes.append({"step": int(state["step"]), **diff})
            for name in (*SESSION_OPTIONS, *change):
                setattr(saved, name, getattr(config, name))
            saved.out = str(out)
            config = saved
            was = int(state.get("world_size", 1))
            self.resume_note = ""
            if was != D.world() or int(state["config"].get("accumulate", 1)) != saved.accumulate:
                old_g = int(state.get("global_batch", saved.batch_size * was))
                new_g = saved.batch_size * D.world() * saved.accumulate
                changes.append({"step": int(state["step"]), "world_size": [was, D.world()],
                                "global_batch": [old_g, new_g]})
                self.resume_note = (f"the run was trained by {was} process{'es' * (was != 1)} (global batch {old_g}); "
                                    f"now {D.world()} (global batch {new_g}): the model, EMA and optimizer resume "
                                    "exactly, the data order changes from here on")
            self.recipe_changes = changes
        elif (ckpt / STATE_JSON).exists():
            raise ValueError(f"{out} already holds a training run; pass --resume to continue it or choose another --out")
        else:
            self.recipe_changes = []
            self.resume_note = ""
        self.cfg = cfg = config
        self.out = out
        self.world, self.rank = D.world(), D.rank()
        self.is_main = self.rank == 0
        self.device = pick_device(cfg.device)
        if self.world > 1 and self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", D.local_rank())  # one GPU per rank
        self.precision = cfg.precision
        if self.precision == "auto":
            self.precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if self.device.type == "cuda" \
                else "fp32"
        if self.precision == "fp16" and self.device.type == "cpu":  # found now, not at the first step
            raise DeviceError("fp16 autocast needs a GPU; use bf16 or fp32 on the CPU")
        data = dataset if dataset is not None else _open_data(cfg)
        self.dataset = data
        self.streaming = bool(getattr(data, "streaming", False))
        self.schedule = NoiseSchedule.preset(cfg.schedule, T=cfg.T)
        ucfg = unet_config_for(cfg.model_size, data.resolution, data.channels, data.num_classes, cfg.prediction_type)
        self.teacher = None
        if cfg.teacher:
            self.teacher = load_teacher(cfg.teacher, data, self.device)
            self.schedule, ucfg = self.teacher.schedule, self.teacher.net.config
            cfg.prediction_type, cfg.T = ucfg.prediction_type, self.schedule.T
            cfg.model_size = self.teacher.meta.get("model_size", cfg.model_size)
        with torch.random.fork_rng(devices=[]):  # seeded initial weights, without touching the global RNG
            torch.manual_seed(int(cfg.seed))
            self.model = UNet(ucfg).to(self.device)
        if self.teacher is not None:  # the student starts as the teacher's network
            self.model.load_state_dict(self.teacher.net.state_dict())
        self.ema = None  # rank 0 alone keeps the EMA weights (the ones saved and sampled)
        if self.is_main:
            self.ema = UNet(ucfg).to(self.device)
            self.ema.load_state_dict(self.model.state_dict())
            self.ema.eval().requires_grad_(False)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        # loss scaling only where it does something: fp16 on CUDA (bf16 and fp32 have fp32's range; elsewhere
        # GradScaler only warns that it disables itself)
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" and self.device.type == "cuda" \
            else None
        self.generator = torch.Generator().manual_seed(int(cfg.seed))  # all randomness: data, t, ε, dropout
        self.step = 0
        self.loss_history: list[list[float]] = []  # [step, mean loss over the last loss_log_every steps]
        self.loss_avg = float("nan")
        self._loss_window: list[float] = []
        self.position = 0  # samples of the data order consumed (global, over all ranks)
        self.global_batch = cfg.batch_size * self.world * cfg.accumulate
        self._order = DataOrder(len(data), cfg.seed)
        self._x = None if self.streaming else torch.from_numpy(data.images).to(self.device)
        self._labels = data.labels
        self._y = torch.from_numpy(data.labels).to(self.device) if data.labels is not None else None
        self._loader = None
        self._noise_gen = torch.Generator()
        self.stop_check = None   # a callable: True once this rank was asked to stop (a signal); see ``stopping``
        self.stopping = False    # all ranks agreed, after the last step, to stop at this step boundary
        self._it_per_s = None
        ab = torch.tensor(np.array(self.schedule.alphas_cumprod), dtype=torch.float64)
        self._sqrt_ab = ab.sqrt().float().to(self.device)
        self._sqrt_1mab = (1.0 - ab).sqrt().float().to(self.device)
        self._snr = (ab / (1.0 - ab)).float().to(self.device)
        self._closed = False
        self._pending: list[TrainEvent] = []
        self._start_time = None
        if resume:
            self._load_state(ckpt)
        self._net = self._ddp = self.model
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP
            self._net = self._ddp = DDP(self.model,
                                        device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if cfg.compile:  # the compiled DDP module (torch's recommended order); no_sync stays on the DDP one
            self._net = torch.compile(self._net)

    @property
    def batch_text(self) -> str:
        """The global batch and how it is made, e.g. ``global batch 64 = 2 processes × 16 × 2 accumulation steps``."""
        w, k = self.world, self.cfg.accumulate
        return (f"global batch {self.global_batch} = {w} process{'es' * (w != 1)} × batch {self.cfg.batch_size}"
                f" × {k} accumulation step{'s' * (k != 1)}")

    # ----- the iterator protocol ----------------------------------------------------------------------------
    def __iter__(self):
        return self

    def __next__(self) -> TrainEvent:
        if self._closed:
            raise StopIteration
        if self._pending:
            return self._pending.pop(0)
        if self.step >= self.cfg.steps:
            self._closed = True
            raise StopIteration
        loss = self.train_step()
        events = [self._event("step", loss)]
        s = self.step
        if self.cfg.sample_every and s % self.cfg.sample_every == 0 or s == self.cfg.steps:
            ev = self.sample_event()
            if ev is not None:
                events.append(ev)
        if self.cfg.checkpoint_every and s % self.cfg.checkpoint_every == 0 or s == self.cfg.steps:
            events.append(self._event("checkpoint", path=str(self.save())))
        if s == self.cfg.steps:
            events.append(self._event("done", path=str(self.save_model())))
        self._pending = events[1:]
        return events[0]

    def send(self, value=None) -> TrainEvent:
        """Generator protocol, for workers that drive generators with ``send``: the same as ``next``."""
        return self.__next__()

    @property
    def between_steps(self) -> bool:
        """True when the events of the last step have all been handed out (a stop here loses nothing: not even
        that step's sample grid or checkpoint)."""
        return not self._pending

    def close(self) -> None:
        """Stop now (no more steps). State stays in memory, so :meth:`save` still works afterwards."""
        self._closed = True
        self._pending = []
        self._loader = None  # the DataLoader's workers exit

    # ----- one step -----------------------------------------------------------------------------------------
    def train_step(self) -> float:
        """One optimizer step on the next global batch (Ho et al. Alg. 1, plus options); returns the loss (the
        mean over ranks and accumulation steps)."""
        if self._start_time is None:
            self._start_time, self._start_step = time.perf_counter(), self.step
        cfg, g, dev = self.cfg, self.generator, self.device
        b, w, k_acc = cfg.batch_size, self.world, cfg.accumulate
        n = b * w * k_acc
        # every rank draws the whole global batch's (small) per-sample randomness from the shared generator
        t_all = torch.randint(self.schedule.T, (n,), generator=g)
        drop_all = torch.rand(n, generator=g) < cfg.label_dropout
        flip_all = torch.rand(n, generator=g) < 0.5
        seeds_all = torch.randint(1 << 62, (n,), generator=g)
        for group in self.opt.param_groups:
            group["lr"] = lr_at(self.step, cfg)
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        total = None
        for k in range(k_acc):
            lo = (k * w + self.rank) * b
            sl = slice(lo, lo + b)
            idx = self._order.take(shard_of(self.position, k, w, self.rank, b), b)
            x0 = self._images(idx)
            t, drop, flip = t_all[sl].to(dev), drop_all[sl], flip_all[sl]
            eps = self._noise(seeds_all[sl], x0.shape[1:]).to(dev)
            if cfg.hflip:
                x0 = torch.where(flip.to(dev)[:, None, None, None], x0.flip(-1), x0)
            labels = None
            if self._y is not None:
                y = self._y[torch.from_numpy(idx).to(dev)]
                labels = torch.where(drop.to(dev), torch.full_like(y, self.dataset.num_classes), y)
            a, s = self._sqrt_ab[t][:, None, None, None], self._sqrt_1mab[t][:, None, None, None]
            x_t = a * x0 + s * eps  # eq. 5
            if self.teacher is not None:
                with torch.no_grad():
                    target = self.teacher.model_output(x_t, t, labels).float()
            else:
                target = {"epsilon": eps, "sample": x0, "v_prediction": a * eps - s * x0}[cfg.prediction_type]
            sync = contextlib.nullcontext() if w == 1 or k == k_acc - 1 else self._ddp.no_sync()
            with sync:  # DDP averages the gradients over ranks on the last micro-batch only
                with autocast(dev, self.precision):
                    out = self._net(x_t, t, labels)
                per_sample = ((out.float() - target) ** 2).mean(dim=(1, 2, 3))
                loss = (loss_weights(self._snr[t], cfg.prediction_type, cfg.min_snr_gamma) * per_sample).mean()
                part = loss / k_acc if k_acc > 1 else loss
                if self.scaler is not None:
                    self.scaler.scale(part).backward()
                else:
                    part.backward()
            total = part.detach() if total is None else total + part.detach()
        if self.scaler is not None:
            self.scaler.unscale_(self.opt)
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            self.opt.step()
        self.step += 1
        self.position += n
        if self.ema is not None:
            self._update_ema()
        value = float(total)
        asked = bool(self.stop_check()) if self.stop_check is not None else False
        if w > 1:  # one collective a step: the loss, the stop flags and it/s of all ranks
            elapsed = time.perf_counter() - self._start_time
            ips = (self.step - self._start_step) / elapsed if elapsed > 0 else 0.0
            loss_sum, stops, ips_sum = D.all_reduce_sum([value, float(asked), ips], dev)
            value, self._it_per_s = loss_sum / w, ips_sum / w
            self.stopping = stops > 0
        else:
            self.stopping = asked
        if not math.isfinite(value):
            raise FloatingPointError(f"loss became {value} at step {self.step}; lower --lr or use fp32")
        self.loss_avg = value if self.loss_avg != self.loss_avg else self.loss_avg + (value - self.loss_avg) / 50
        self._loss_window.append(value)
        if len(self._loss_window) >= cfg.loss_log_every:
            self.loss_history.append([self.step, float(np.mean(self._loss_window))])
            self._loss_window = []
        return value

    def _noise(self, seeds: torch.Tensor, shape) -> torch.Tensor:
        """ε for each sample from its own seed (so a sample's noise does not depend on which rank draws it)."""
        eps = torch.empty((len(seeds), *shape))
        gen = self._noise_gen
        for i, seed in enumerate(seeds.tolist()):
            gen.manual_seed(seed)
            eps[i].normal_(generator=gen)
        return eps

    def _images(self, idx: np.ndarray) -> torch.Tensor:
        """The x_0 of this rank's micro-batch: indexed in memory, or the next batch of the streaming loader (which
        walks the same order: :class:`core.data_stream.RankBatches` from the same position)."""
        if not self.streaming:
            return self._x[torch.from_numpy(idx).to(self.device)]
        if self._loader is None:
            cfg = self.cfg
            from core.data_stream import default_workers
            workers = default_workers() if cfg.workers is None else int(cfg.workers)
            sampler = RankBatches(len(self.dataset), cfg.seed, self.position, self.world, self.rank,
                                  cfg.batch_size, cfg.accumulate)
            loader = torch.utils.data.DataLoader(self.dataset.source, batch_sampler=sampler, num_workers=workers,
                                                 pin_memory=self.device.type == "cuda",
                                                 persistent_workers=False, prefetch_factor=4 if workers else None)
            self._loader = iter(loader)
        return next(self._loader).to(self.device, non_blocking=True)

    @torch.no_grad()
    def _update_ema(self) -> None:
        """θ_ema ← d·θ_ema + (1 − d)·θ with d = min(decay, (1 + n)/(10 + n)) (warm-up so early EMA is usable)."""
        d = min(self.cfg.ema_decay, (1 + self.step) / (10 + self.step))
        ema_p = list(self.ema.parameters())
        torch._foreach_lerp_(ema_p, [p.detach() for p in self.model.parameters()], 1.0 - d)
        for eb, b in zip(self.ema.buffers(), self.model.buffers()):
            eb.copy_(b)

    def _event(self, kind: str, loss: float = float("nan"), **kw) -> TrainEvent:
        elapsed = time.perf_counter() - self._start_time if self._start_time else 0.0
        done = self.step - getattr(self, "_start_step", self.step)
        ips = self._it_per_s if self._it_per_s is not None else (done / elapsed if elapsed > 0 else 0.0)
        return TrainEvent(kind, self.step, self.cfg.steps, loss, self.loss_avg, lr_at(max(self.step - 1, 0), self.cfg),
                          ips, elapsed, **kw)

    # ----- samples ------------------------------------------------------------------------------------------
    def sample_grid(self, n: int | None = None, seed: int = 0) -> np.ndarray:
        """EMA samples as one H×W×3 uint8 grid, drawn exactly as Generate draws "DDIM, ``sample_steps`` steps"
        from the saved model: :func:`core.samplers.sample` (η = 0, the model's default spacing and clipping, noise
        from a CPU generator seeded with ``seed``). Labelled data: each class in turn (guidance 1, i.e. plain
        conditional), two rows of classes 0…K−1; otherwise 16 samples."""
        k = self.dataset.num_classes
        if n is None:
            n = 2 * k if 0 < k <= 10 else 16
        denoiser = UNetDenoiser(self.ema, self.schedule, clip_sample=self.cfg.clip_sample,
                                name=Path(self.cfg.out).name)
        x = run_to_end(sample(denoiser, sampler="ddim", steps=self.cfg.sample_steps, seed=seed, n=n,
                              class_labels=labels_each_class(n, k) if k else None)).x_t
        return make_grid(to_uint8(x.permute(0, 2, 3, 1).cpu().numpy()), ncols=k if 0 < k <= 10 else None, pad=2)

    def sample_event(self) -> TrainEvent | None:
        """Rank 0 draws and saves the grid (None on the other ranks, which wait for it at a barrier)."""
        if not self.is_main:
            D.barrier()
            return None
        grid = self.sample_grid()
        folder = self.out / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        path = save_image(folder / f"step_{self.step:06d}.png", grid)
        D.barrier()
        return self._event("sample", grid=grid, path=str(path))

    # ----- saving and resuming ------------------------------------------------------------------------------
    def _model_meta(self) -> dict:
        return {"name": Path(self.cfg.out).name, "trained_steps": self.step, "data": self.cfg.data,
                "model_size": self.cfg.model_size, "class_names": list(self.dataset.class_names),
                "weights": "ema", "ema_decay": self.cfg.ema_decay, "label_dropout": self.cfg.label_dropout,
                "final_loss_avg": self.loss_avg if math.isfinite(self.loss_avg) else None,
                "clip_sample": bool(self.cfg.clip_sample),
                **({"distilled_from": self.cfg.teacher} if self.cfg.teacher else {})}

    def save(self, folder=None) -> Path:
        """Write a resumable checkpoint (default ``out/checkpoint``) atomically; returns its path."""
        folder = Path(folder) if folder is not None else self.out / "checkpoint"
        if not self.is_main:  # rank 0 writes; every rank holds the same state at this step boundary
            D.barrier()
            return folder
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        opt_state = self.opt.state_dict()
        for pid, st in opt_state["state"].items():
            for key, value in st.items():
                tensors[f"optim.{pid}.{key}"] = torch.as_tensor(value)
        tensors["rng.generator"] = self.generator.get_state()
        tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
        groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in opt_state["param_groups"]]
        state = {"format": STATE_FORMAT, "version": 1, "step": self.step, "config": asdict(self.cfg),
                 "recipe_changes": self.recipe_changes,
                 "optimizer_param_groups": groups, "loss_avg": self.loss_avg if math.isfinite(self.loss_avg) else None,
                 "loss_history": self.loss_history, "loss_window": self._loss_window,
                 "grad_scale": float(self.scaler.get_scale()) if self.scaler is not None else None,
                 "position": self.position, "world_size": self.world, "global_batch": self.global_batch}
        from safetensors.torch import save_file
        with atomic_dir(folder) as tmp:
            write_model_files(tmp, self.ema, self.schedule, **self._model_meta())
            save_file(tensors, str(tmp / STATE_TENSORS))
            (tmp / STATE_JSON).write_text(json.dumps(state, indent=1), encoding="utf-8")
        D.barrier()
        return folder

    def save_model(self, folder=None) -> Path:
        """Inference files only (EMA weights; no optimizer state), atomically (default ``out/model``)."""
        folder = Path(folder) if folder is not None else self.out / "model"
        if self.is_main:
            with atomic_dir(folder) as tmp:
                write_model_files(tmp, self.ema, self.schedule, **self._model_meta())
        D.barrier()
        return folder

    def _load_state(self, ckpt: Path) -> None:
        state = read_json(ckpt / STATE_JSON, "training state")
        tensors = read_safetensors(ckpt / STATE_TENSORS)
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        if self.ema is not None:
            self.ema.load_state_dict(read_safetensors(ckpt / "model.safetensors"))
        opt_state = {"state": {}, "param_groups": state["optimizer_param_groups"]}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, pid, name = key.split(".", 2)
                opt_state["state"].setdefault(int(pid), {})[name] = value
        for g in opt_state["param_groups"]:
            if "betas" in g:
                g["betas"] = tuple(g["betas"])
        self.opt.load_state_dict(opt_state)
        self.generator.set_state(tensors["rng.generator"])
        self.step = int(state["step"])
        self.position = int(state.get("position", self.step * self.cfg.batch_size))
        self.loss_avg = float("nan") if state.get("loss_avg") is None else float(state["loss_avg"])
        self.loss_history = [list(p) for p in state.get("loss_history", [])]
        self._loss_window = list(state.get("loss_window", []))
        if self.scaler is not None and state.get("grad_scale"):
            self.scaler.update(float(state["grad_scale"]))
        if self.step > self.cfg.steps:
            raise ValueError(f"the checkpoint is at step {self.step}, past the requested {self.cfg.steps} steps")


def load_teacher(spec: str, data, device):
    """The model a distillation run learns from: one of our UNet folders (alone or autoguided) that fits ``data``
    (same image size, channels and classes); raises a one-line ``ValueError`` otherwise."""
    from core.messages import printable
    from core.models.load import load_model
    teacher = load_model(spec, device=device)
    spec = printable(spec)
    if not isinstance(getattr(teacher, "net", None), UNet):
        raise ValueError(f"--teacher {spec}: distillation needs one of this project's UNet models (a folder made by "
                         "ddpm train or ddpm autoguide)")
    want = (data.resolution, data.channels, data.num_classes)
    have = (teacher.resolution, teacher.channels, teacher.num_classes)
    if want != have:
        raise ValueError(f"--teacher {spec}: it makes {have[0]}×{have[0]} images with {have[1]} channel(s) and "
                         f"{have[2]} classes; the data has {want[0]}×{want[0]}, {want[1]} and {want[2]}")
    return teacher


def _open_data(cfg: TrainConfig):
    """``builtin:mnist`` in memory (:func:`core.data.load_dataset`); a folder streamed from disk."""
    if str(cfg.data).startswith("builtin:"):
        return load_dataset(cfg.data, cfg.resolution, "train", cfg.channels)
    from core.data import DEFAULT_FOLDER_RESOLUTION
    if cfg.resolution is not None and not 4 <= int(cfg.resolution) <= 512:
        raise ValueError(f"resolution must be between 4 and 512, got {cfg.resolution}")
    if cfg.channels not in (None, 1, 3):
        raise ValueError(f"channels must be 1 or 3, got {cfg.channels}")
    return open_folder(cfg.data, int(cfg.resolution or DEFAULT_FOLDER_RESOLUTION), cfg.channels, cfg.workers)


def check_outputs(out) -> None:
    """Raise a one-line ``OSError`` unless a run can write everything it writes in ``out`` (created if need be):
    ``checkpoint/`` and ``model/`` (swapped in beside their old versions, so ``out`` itself must be writable) and
    ``samples/``."""
    out = check_output_folder(out)
    for name in ("checkpoint", "model", "samples"):
        p = out / name
        if p.exists() and not p.is_dir():
            raise NotADirectoryError(f"{p}: is a file; the run writes a folder there — move it or choose another "
                                     "output folder")
    if (out / "samples").is_dir():
        check_output_folder(out / "samples")


def train(config: TrainConfig | None = None, resume: bool = False, dataset: Dataset | None = None,
          change: tuple[str, ...] = (),
          **options) -> Trainer:
    """Start (or with ``resume=True`` continue) a run: ``for event in train(data=…, out=…, steps=…): …``.
    Keyword options are :class:`TrainConfig` fields; ``change`` names fields of :data:`CHANGEABLE_ON_RESUME` whose
    value in ``config`` replaces the resumed run's."""
    cfg = config if config is not None else TrainConfig(**options)
    return Trainer(cfg, resume=resume, dataset=dataset, change=tuple(change))
