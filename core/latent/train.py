"""Training a Stable Diffusion pipeline at digit scale (``builtin:mnist-sd``, ``ddpm train-sd``), in two stages.

1. **VAE** (:class:`VAETrainer`, ``ddpm train-sd vae``): an ``AutoencoderKL`` on the built-in digits (training split),
   grey replicated to RGB and padded 28 → 32 with background, so photos, img2img and the latent slider keep their
   three channels. Three levels (factor 4): 3×32×32 → 4×8×8 latents. Loss: the mean squared error of the
   reconstruction from a posterior draw plus ``kl_weight`` × KL(q(z|x) ‖ N(0, I)) summed over the latent and divided
   by the number of pixels (a small weight, as SD's 10⁻⁶: it keeps the latents smooth, not unit-variance). At the
   end the scaling factor is measured as SD's was: s = 1 / std of the posterior draws of every training digit;
   ``OUT/vae/`` holds the VAE with it.
2. **Text encoder + UNet** (:class:`UNetTrainer`, ``ddpm train-sd unet``): a word-level CLIP tokenizer over the
   captions' vocabulary (:mod:`core.latent.tokenizer`), a small ``CLIPTextModel`` and a ``UNet2DConditionModel`` with
   cross-attention, trained *jointly* from scratch on L_simple with ε-prediction over z = s·(a posterior draw of
   the frozen VAE): each step draws a caption per digit (:func:`core.latent.captions.caption`), replaced by "" with
   probability ``caption_dropout`` so one network serves classifier-free guidance. The schedule is SD's
   (scaled-linear β from 0.00085 to 0.012, T = 1000) and the scheduler config SD 1.x's DDIM one (``steps_offset``
   1, ``set_alpha_to_one`` false, ``clip_sample`` false). AdamW with warm-up and gradient clipping; EMA weights of
   both networks are the ones saved. ``OUT/model/`` is the whole pipeline, written with
   ``StableDiffusionPipeline(...).save_pretrained(safe_serialization=True)`` through :func:`core.atomic.atomic_dir`.

Both trainers are iterators of :class:`core.train.TrainEvent`, like :class:`core.train.Trainer`: ``save()`` writes
a resumable checkpoint (``OUT/checkpoint-vae/``, ``OUT/checkpoint-unet/``: raw and EMA weights, AdamW moments and
the RNG state as safetensors, the recipe and losses as JSON; nothing pickled) atomically at any step boundary, and
``resume=True`` continues bit-exactly at the same thread count. All randomness (batches, t, ε, posterior draws,
captions, dropout) comes from one seeded ``torch.Generator``.
"""
from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from core.atomic import atomic_dir, recover_dir
from core.models.checkpoint import read_json, read_safetensors
from core.train import TrainEvent, check_outputs

STATE_FORMAT = "ddpm-studio.train-sd-state"
STATE_JSON, STATE_TENSORS = "train_state.json", "train_state.safetensors"
PAD = 2  # 28 → 32
SCHEDULER = dict(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                 clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon",
                 timestep_spacing="leading")
CHANGEABLE_ON_RESUME = ("lr", "ema_decay", "caption_dropout", "kl_weight")


# ----- recipes ------------------------------------------------------------------------------------------------
@dataclass
class VAEConfig:
    out: str = "runs/mnist-sd"
    steps: int = 600
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 50
    grad_clip: float = 1.0
    kl_weight: float = 1e-4
    channels: list = field(default_factory=lambda: [16, 32, 64])
    latent_channels: int = 4
    groups: int = 8
    limit: int | None = None  # only the first N training digits (tests)
    seed: int = 0
    device: str = "cpu"
    checkpoint_every: int = 200
    loss_log_every: int = 10

    def __post_init__(self):
        _check_common(self)
        if not (self.kl_weight >= 0 and math.isfinite(self.kl_weight)):
            raise ValueError(f"kl_weight must be a finite number ≥ 0, got {self.kl_weight}")


@dataclass
class UNetConfig:
    out: str = "runs/mnist-sd"
    steps: int = 4000
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 200
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    caption_dropout: float = 0.15
    channels: list = field(default_factory=lambda: [48, 96])
    attention: list = field(default_factory=lambda: [False, True])  # cross-attention per level (and always mid)
    layers_per_block: int = 1
    heads: int = 4
    groups: int = 16
    text_hidden: int = 64
    text_layers: int = 2
    text_heads: int = 4
    limit: int | None = None
    seed: int = 0
    device: str = "cpu"
    checkpoint_every: int = 500
    sample_every: int = 1000
    loss_log_every: int = 10

    def __post_init__(self):
        _check_common(self)
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0.0 <= self.caption_dropout < 1.0:
            raise ValueError(f"caption_dropout must be in [0, 1), got {self.caption_dropout}")
        if len(self.attention) != len(self.channels):
            raise ValueError("attention needs one flag per UNet level")


def _check_common(cfg) -> None:
    for name in ("steps", "batch_size", "loss_log_every"):
        if int(getattr(cfg, name)) < 1:
            raise ValueError(f"{name} must be ≥ 1, got {getattr(cfg, name)}")
    for name in ("warmup_steps", "checkpoint_every"):
        if int(getattr(cfg, name)) < 0:
            raise ValueError(f"{name} must be ≥ 0, got {getattr(cfg, name)}")
    if not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise ValueError(f"learning rate must be > 0, got {cfg.lr}")
    if cfg.limit is not None and int(cfg.limit) < 1:
        raise ValueError(f"limit must be ≥ 1, got {cfg.limit}")


def _from_dict(cls, d: dict):
    known = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in known})


# ----- data ---------------------------------------------------------------------------------------------------
def digits_rgb32(limit: int | None = None) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """The training split as N×3×32×32 float32 in [−1, 1] (grey → RGB, 2 px of background on each side), its
    labels and the uint8 digits (for the captions' measurements)."""
    from core.data import load_mnist_arrays
    from core.images import from_uint8
    u8, labels = load_mnist_arrays("train")
    if limit is not None:
        u8, labels = u8[:limit], labels[:limit]
    x = np.pad(from_uint8(u8), ((0, 0), (PAD, PAD), (PAD, PAD)), constant_values=-1.0)
    x = np.repeat(x[:, None], 3, axis=1)
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), labels, u8


def to_digit28(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """Decoded images N×3×32×32 in [−1, 1] → N×1×28×28 (channel mean, padding cut), what the classifier reads."""
    x = np.asarray(images.detach().float().cpu() if isinstance(images, torch.Tensor) else images, dtype=np.float32)
    return np.clip(x.mean(1, keepdims=True)[:, :, PAD:-PAD, PAD:-PAD], -1.0, 1.0)


def lr_at(step: int, lr: float, warmup: int) -> float:
    return lr * min(1.0, (step + 1) / warmup) if warmup else lr


# ----- the shared loop ----------------------------------------------------------------------------------------
class _Stage:
    """What both trainers share: the iterator protocol, loss averages, checkpoints and resume."""

    name = "stage"
    config_cls = VAEConfig

    def __init__(self, cfg, resume: bool = False, change: tuple[str, ...] = ()):
        out = Path(cfg.out)
        check_outputs(out)
        self.ckpt = out / f"checkpoint-{self.name}"
        for folder in (self.ckpt, out / self.result_name):
            recover_dir(folder)
        self.recipe_changes: list = []
        if resume:
            if not (self.ckpt / STATE_JSON).is_file():
                raise FileNotFoundError(f"{out}: no {self.name} checkpoint to resume (expected {self.ckpt / STATE_JSON})")
            state = read_json(self.ckpt / STATE_JSON, "training state")
            if state.get("format") != STATE_FORMAT or state.get("stage") != self.name:
                raise ValueError(f"{self.ckpt / STATE_JSON}: not a DDPM Studio {self.name} training state")
            saved = _from_dict(self.config_cls, state["config"])
            unknown = set(change) - set(CHANGEABLE_ON_RESUME)
            if unknown:
                raise ValueError(f"cannot change {', '.join(sorted(unknown))} when resuming")
            self.recipe_changes = list(state.get("recipe_changes", []))
            diff = {n: [getattr(saved, n), getattr(cfg, n)] for n in change
                    if hasattr(saved, n) and getattr(saved, n) != getattr(cfg, n)}
            if diff:
                self.recipe_changes.append({"step": int(state["step"]), **diff})
            for n in ("steps", "device", "checkpoint_every", "sample_every", *change):
                if hasattr(saved, n):
                    setattr(saved, n, getattr(cfg, n))
            saved.out = str(out)
            cfg = saved
        elif (self.ckpt / STATE_JSON).exists():
            raise ValueError(f"{out} already holds a {self.name} run; pass --resume to continue it or choose "
                             "another --out")
        self.cfg, self.out = cfg, out
        self.device = torch.device(cfg.device)
        self.generator = torch.Generator().manual_seed(int(cfg.seed))
        self.step = 0
        self.loss_avg = float("nan")
        self.loss_history: list = []
        self._window: list = []
        self._closed, self._pending = False, []
        self._start = None
        self.build()
        if resume:
            self._load(self.ckpt)

    # subclasses: build(), train_step() -> (loss, parts), modules() -> {name: module}, ema_modules(), finish()
    result_name = "result"

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
        if self._start is None:
            self._start, self._start_step = time.perf_counter(), self.step
        loss = self.train_step()
        self.step += 1
        if not math.isfinite(loss):
            raise FloatingPointError(f"loss became {loss} at step {self.step}; lower --lr")
        self.loss_avg = loss if self.loss_avg != self.loss_avg else self.loss_avg + (loss - self.loss_avg) / 50
        self._window.append(loss)
        if len(self._window) >= self.cfg.loss_log_every:
            self.loss_history.append([self.step, float(np.mean(self._window))])
            self._window = []
        events = [self._event("step", loss)]
        s = self.step
        every = getattr(self.cfg, "sample_every", 0)
        if every and s % every == 0 or s == self.cfg.steps:
            ev = self.sample_event()
            if ev is not None:
                events.append(ev)
        if self.cfg.checkpoint_every and s % self.cfg.checkpoint_every == 0 or s == self.cfg.steps:
            events.append(self._event("checkpoint", path=str(self.save())))
        if s == self.cfg.steps:
            events.append(self._event("done", path=str(self.finish())))
        self._pending = events[1:]
        return events[0]

    @property
    def between_steps(self) -> bool:
        return not self._pending

    def close(self) -> None:
        self._closed, self._pending = True, []

    def sample_event(self):
        return None

    def _event(self, kind, loss=float("nan"), **kw) -> TrainEvent:
        elapsed = time.perf_counter() - self._start if self._start else 0.0
        done = self.step - getattr(self, "_start_step", self.step)
        return TrainEvent(kind, self.step, self.cfg.steps, loss, self.loss_avg,
                          lr_at(max(self.step - 1, 0), self.cfg.lr, self.cfg.warmup_steps),
                          done / elapsed if elapsed > 0 else 0.0, elapsed, **kw)

    def _optimizer_step(self, loss: torch.Tensor, params) -> None:
        for group in self.opt.param_groups:
            group["lr"] = lr_at(self.step, self.cfg.lr, self.cfg.warmup_steps)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
        self.opt.step()

    # ----- checkpoints ------------------------------------------------------------------------------------
    def save(self, folder=None) -> Path:
        folder = Path(folder) if folder is not None else self.ckpt
        tensors = {}
        for name, module in self.modules().items():
            tensors.update({f"{name}.{k}": v for k, v in module.state_dict().items()})
        opt_state = self.opt.state_dict()
        for pid, st in opt_state["state"].items():
            for key, value in st.items():
                tensors[f"optim.{pid}.{key}"] = torch.as_tensor(value)
        tensors["rng.generator"] = self.generator.get_state()
        tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
        groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in opt_state["param_groups"]]
        state = {"format": STATE_FORMAT, "version": 1, "stage": self.name, "step": self.step,
                 "config": asdict(self.cfg), "recipe_changes": self.recipe_changes,
                 "optimizer_param_groups": groups, "loss_avg": self.loss_avg if math.isfinite(self.loss_avg) else None,
                 "loss_history": self.loss_history, "loss_window": self._window,
                 "torch_threads": torch.get_num_threads()}
        from safetensors.torch import save_file
        with atomic_dir(folder) as tmp:
            save_file(tensors, str(tmp / STATE_TENSORS))
            (tmp / STATE_JSON).write_text(json.dumps(state, indent=1), encoding="utf-8")
        return folder

    def _load(self, ckpt: Path) -> None:
        state = read_json(ckpt / STATE_JSON, "training state")
        tensors = read_safetensors(ckpt / STATE_TENSORS)
        for name, module in self.modules().items():
            prefix = name + "."
            module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
        opt_state = {"state": {}, "param_groups": state["optimizer_param_groups"]}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, pid, n = key.split(".", 2)
                opt_state["state"].setdefault(int(pid), {})[n] = value
        for g in opt_state["param_groups"]:
            if "betas" in g:
                g["betas"] = tuple(g["betas"])
        self.opt.load_state_dict(opt_state)
        self.generator.set_state(tensors["rng.generator"])
        self.step = int(state["step"])
        self.loss_avg = float("nan") if state.get("loss_avg") is None else float(state["loss_avg"])
        self.loss_history = [list(p) for p in state.get("loss_history", [])]
        self._window = list(state.get("loss_window", []))
        if self.step > self.cfg.steps:
            raise ValueError(f"the checkpoint is at step {self.step}, past the requested {self.cfg.steps} steps")


# ----- stage 1: the VAE -----------------------------------------------------------------------------------------
def make_vae(cfg: VAEConfig):
    from diffusers import AutoencoderKL
    n = len(cfg.channels)
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=cfg.latent_channels,
                         block_out_channels=tuple(cfg.channels), layers_per_block=1, norm_num_groups=cfg.groups,
                         sample_size=28 + 2 * PAD, down_block_types=("DownEncoderBlock2D",) * n,
                         up_block_types=("UpDecoderBlock2D",) * n)


class VAETrainer(_Stage):
    name = "vae"
    config_cls = VAEConfig
    result_name = "vae"

    def build(self) -> None:
        cfg = self.cfg
        self.x, self.labels, _ = digits_rgb32(cfg.limit)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(cfg.seed))
            self.vae = make_vae(cfg).to(self.device)
        self.opt = torch.optim.AdamW(self.vae.parameters(), lr=cfg.lr, weight_decay=0.0)
        self.last_parts = {}

    def modules(self) -> dict:
        return {"vae": self.vae}

    def train_step(self) -> float:
        cfg, g = self.cfg, self.generator
        idx = torch.randint(len(self.x), (cfg.batch_size,), generator=g)
        x = self.x[idx].to(self.device)
        self.vae.train()
        dist = self.vae.encode(x).latent_dist
        noise = torch.randn(dist.mean.shape, generator=g).to(self.device)
        z = dist.mean + dist.std * noise
        rec = self.vae.decode(z).sample
        mse = ((rec - x) ** 2).mean()
        kl = 0.5 * (dist.mean ** 2 + dist.var - 1.0 - dist.logvar).sum(dim=(1, 2, 3)).mean() / x[0].numel()
        loss = mse + cfg.kl_weight * kl
        self._optimizer_step(loss, list(self.vae.parameters()))
        self.last_parts = {"mse": float(mse.detach()), "kl": float(kl.detach()) * x[0].numel()}
        return float(loss.detach())

    @torch.no_grad()
    def measure_scaling(self) -> dict:
        """s = 1/std of posterior draws z ~ q(z|x) over every training digit (SD measured it on a batch), drawn
        with a generator of its own so the training stream is untouched; also the reconstruction MSE (posterior
        mean) over them."""
        self.vae.eval()
        g = torch.Generator().manual_seed(1234)
        zs, err = [], 0.0
        for i in range(0, len(self.x), 500):
            x = self.x[i:i + 500].to(self.device)
            dist = self.vae.encode(x).latent_dist
            zs.append((dist.mean + dist.std * torch.randn(dist.mean.shape, generator=g).to(self.device)).cpu())
            err += float(((self.vae.decode(dist.mean).sample.clamp(-1, 1) - x) ** 2).sum())
        z = torch.cat(zs).double()
        return {"scaling_factor": float(1.0 / z.std()), "latent_mean": float(z.mean()), "latent_std": float(z.std()),
                "reconstruction_mse": err / self.x.numel()}

    def finish(self) -> Path:
        stats = self.measure_scaling()
        self.vae.register_to_config(scaling_factor=stats["scaling_factor"])
        folder = self.out / "vae"
        with atomic_dir(folder) as tmp:
            self.vae.save_pretrained(str(tmp), safe_serialization=True)
            (tmp / "training.json").write_text(json.dumps(
                {"steps": self.step, "final_loss_avg": self.loss_avg, **self.last_parts, **stats,
                 "config": asdict(self.cfg), "recipe_changes": self.recipe_changes}, indent=1), encoding="utf-8")
        self.stats = stats
        return folder


# ----- stage 2: the text encoder and the UNet -----------------------------------------------------------------
def make_text_encoder(cfg: UNetConfig, tokenizer):
    from transformers import CLIPTextConfig, CLIPTextModel
    return CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.text_hidden, intermediate_size=4 * cfg.text_hidden,
        num_hidden_layers=cfg.text_layers, num_attention_heads=cfg.text_heads, projection_dim=cfg.text_hidden,
        max_position_embeddings=tokenizer.model_max_length, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, hidden_act="quick_gelu"))


def make_unet(cfg: UNetConfig, latent_channels: int, sample_size: int):
    from diffusers import UNet2DConditionModel
    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in cfg.attention)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cfg.attention))
    return UNet2DConditionModel(sample_size=sample_size, in_channels=latent_channels, out_channels=latent_channels,
                                layers_per_block=cfg.layers_per_block, block_out_channels=tuple(cfg.channels),
                                down_block_types=down, up_block_types=up, norm_num_groups=cfg.groups,
                                cross_attention_dim=cfg.text_hidden, attention_head_dim=cfg.heads)


def scheduler():
    from diffusers import DDIMScheduler
    return DDIMScheduler(**SCHEDULER)


class UNetTrainer(_Stage):
    name = "unet"
    config_cls = UNetConfig
    result_name = "model"

    def build(self) -> None:
        from diffusers import AutoencoderKL
        from core.latent.captions import measure
        from core.latent.tokenizer import write_tokenizer
        cfg = self.cfg
        vae_dir = self.out / "vae"
        if not (vae_dir / "config.json").is_file():
            raise FileNotFoundError(f"{vae_dir}: no trained VAE (run ddpm train-sd vae --out {self.out} first)")
        self.vae = AutoencoderKL.from_pretrained(str(vae_dir), use_safetensors=True).to(self.device).eval()
        self.vae.requires_grad_(False)
        self.scale = float(self.vae.config.scaling_factor)
        x, self.labels, u8 = digits_rgb32(cfg.limit)
        self.attrs = measure(u8)
        with torch.no_grad():  # the frozen VAE's posterior of every digit, once
            means, stds = [], []
            for i in range(0, len(x), 500):
                d = self.vae.encode(x[i:i + 500].to(self.device)).latent_dist
                means.append(d.mean)
                stds.append(d.std)
        self.z_mean, self.z_std = torch.cat(means), torch.cat(stds)
        self.tokenizer = write_tokenizer(self.out / "tokenizer")
        self._ids: dict[str, torch.Tensor] = {}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(cfg.seed))
            self.text_encoder = make_text_encoder(cfg, self.tokenizer).to(self.device)
            self.unet = make_unet(cfg, self.z_mean.shape[1], self.z_mean.shape[-1]).to(self.device)
        self.ema_text = make_text_encoder(cfg, self.tokenizer).to(self.device).eval().requires_grad_(False)
        self.ema_unet = make_unet(cfg, self.z_mean.shape[1], self.z_mean.shape[-1]).to(self.device).eval()
        self.ema_unet.requires_grad_(False)
        self.ema_text.load_state_dict(self.text_encoder.state_dict())
        self.ema_unet.load_state_dict(self.unet.state_dict())
        self.params = list(self.unet.parameters()) + list(self.text_encoder.parameters())
        self.opt = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=0.0)
        ab = scheduler().alphas_cumprod.double()
        self._sqrt_ab, self._sqrt_1mab = ab.sqrt().float().to(self.device), (1 - ab).sqrt().float().to(self.device)

    def modules(self) -> dict:
        return {"unet": self.unet, "text_encoder": self.text_encoder, "ema_unet": self.ema_unet,
                "ema_text_encoder": self.ema_text}

    def token_ids(self, captions: list[str]) -> torch.Tensor:
        """Token ids (B×max_length) as the pipeline makes them, cached per caption (there are a few thousand)."""
        out = []
        for c in captions:
            ids = self._ids.get(c)
            if ids is None:
                ids = self.tokenizer(c, padding="max_length", max_length=self.tokenizer.model_max_length,
                                     truncation=True, return_tensors="pt").input_ids[0]
                self._ids[c] = ids
            out.append(ids)
        return torch.stack(out)

    def draw_captions(self, idx: torch.Tensor, g: torch.Generator) -> list[str]:
        from core.latent.captions import DRAWS, caption
        u = torch.rand((len(idx), DRAWS), generator=g, dtype=torch.float64).numpy()
        drop = (torch.rand(len(idx), generator=g) < self.cfg.caption_dropout).numpy()
        return ["" if d else caption(int(self.labels[i]), self.attrs[i], draws=row)
                for i, row, d in zip(idx.tolist(), u, drop)]

    def train_step(self) -> float:
        cfg, g, dev = self.cfg, self.generator, self.device
        b = cfg.batch_size
        idx = torch.randint(len(self.z_mean), (b,), generator=g)
        post = torch.randn((b, *self.z_mean.shape[1:]), generator=g)
        t = torch.randint(len(self._sqrt_ab), (b,), generator=g)
        eps = torch.randn((b, *self.z_mean.shape[1:]), generator=g)
        captions = self.draw_captions(idx, g)
        ids = self.token_ids(captions).to(dev)
        idx, post, t, eps = idx.to(dev), post.to(dev), t.to(dev), eps.to(dev)
        z0 = (self.z_mean[idx] + self.z_std[idx] * post) * self.scale
        z_t = self._sqrt_ab[t][:, None, None, None] * z0 + self._sqrt_1mab[t][:, None, None, None] * eps
        self.unet.train()
        self.text_encoder.train()
        cond = self.text_encoder(ids)[0]
        pred = self.unet(z_t, t, encoder_hidden_states=cond).sample
        loss = ((pred - eps) ** 2).mean()
        self._optimizer_step(loss, self.params)
        self._update_ema()
        return float(loss.detach())

    @torch.no_grad()
    def _update_ema(self) -> None:
        d = min(self.cfg.ema_decay, (1 + self.step) / (10 + self.step))
        for ema, net in ((self.ema_unet, self.unet), (self.ema_text, self.text_encoder)):
            torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in net.parameters()], 1.0 - d)
            for eb, bb in zip(ema.buffers(), net.buffers()):
                eb.copy_(bb)

    def pipeline(self):
        """The EMA networks as a diffusers ``StableDiffusionPipeline`` (CPU, eval)."""
        from core.latent.parts import one_line_quiet
        with one_line_quiet():  # transformers' notes about image processors this pipeline has none of
            from diffusers import StableDiffusionPipeline
        return StableDiffusionPipeline(unet=self.ema_unet, vae=self.vae, text_encoder=self.ema_text,
                                       tokenizer=self.tokenizer, scheduler=scheduler(), safety_checker=None,
                                       feature_extractor=None, requires_safety_checker=False)

    @torch.no_grad()
    def sample_grid(self, steps: int = 20, guidance: float = 5.0, seed: int = 0) -> np.ndarray:
        """Two rows of "a handwritten 0" … "9" from the EMA networks (DDIM, guidance 5), as an H×W×3 uint8 grid."""
        from core.images import make_grid, to_uint8
        prompts = [f"a handwritten {d}" for d in range(10)] * 2
        sch = scheduler()
        sch.set_timesteps(steps)
        g = torch.Generator().manual_seed(seed)
        z = torch.randn((len(prompts), *self.z_mean.shape[1:]), generator=g).to(self.device)
        cond = self.ema_text(self.token_ids(prompts).to(self.device))[0]
        null = self.ema_text(self.token_ids([""] * len(prompts)).to(self.device))[0]
        for t in sch.timesteps:
            e = self.ema_unet(torch.cat([z, z]), t, encoder_hidden_states=torch.cat([null, cond])).sample
            eu, ec = e.chunk(2)
            z = sch.step(eu + guidance * (ec - eu), t, z).prev_sample
        x = self.vae.decode(z / self.scale).sample.clamp(-1, 1)
        return make_grid(to_uint8(x.permute(0, 2, 3, 1).cpu().numpy()), ncols=10, pad=2)

    def sample_event(self) -> TrainEvent:
        from core.images import save_image
        grid = self.sample_grid()
        folder = self.out / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        path = save_image(folder / f"unet_step_{self.step:06d}.png", grid)
        return self._event("sample", grid=grid, path=str(path))

    def finish(self) -> Path:
        folder = self.out / "model"
        pipe = self.pipeline()
        from core.latent.parts import offline
        with atomic_dir(folder) as tmp:
            with offline():  # no progress bars, nothing fetched
                pipe.save_pretrained(str(tmp), safe_serialization=True)
            store_half(tmp / "unet" / "diffusion_pytorch_model.safetensors")
            for name in ("vocab.json", "merges.txt"):  # the word-level vocabulary itself, beside tokenizer.json
                shutil.copyfile(self.out / "tokenizer" / name, tmp / "tokenizer" / name)
            (tmp / "training.json").write_text(json.dumps(
                {"steps": self.step, "final_loss_avg": self.loss_avg, "weights": "ema",
                 "config": asdict(self.cfg), "recipe_changes": self.recipe_changes,
                 "vae": read_json(self.out / "vae" / "training.json", "VAE training record")
                 if (self.out / "vae" / "training.json").is_file() else None}, indent=1), encoding="utf-8")
        return folder


def store_half(path: Path) -> None:
    """Rewrite a safetensors file with its float32 tensors as float16 (half the size: the shipped UNet stays under
    the repository's 8 MB a file). Loaders cast them back to the network's dtype; sampling in fp32 is unchanged but
    for the weights' rounding (≤ 2⁻¹¹ relative)."""
    from safetensors.torch import load_file, save_file
    tensors = {k: (v.half() if v.dtype == torch.float32 else v) for k, v in load_file(str(path)).items()}
    save_file(tensors, str(path), metadata={"format": "pt"})


def train_vae(config: VAEConfig | None = None, resume: bool = False, change: tuple[str, ...] = (),
              **options) -> VAETrainer:
    return VAETrainer(config if config is not None else VAEConfig(**options), resume=resume, change=tuple(change))


def train_unet(config: UNetConfig | None = None, resume: bool = False, change: tuple[str, ...] = (),
               **options) -> UNetTrainer:
    return UNetTrainer(config if config is not None else UNetConfig(**options), resume=resume, change=tuple(change))


# ----- how good is it ------------------------------------------------------------------------------------------
def ink(digits28: np.ndarray) -> np.ndarray:
    """Mean ink of each digit N×1×28×28 in [−1, 1]: the mean pixel in [0, 1] (0 = blank)."""
    return ((np.asarray(digits28, dtype=np.float64) + 1.0) / 2.0).mean(axis=(1, 2, 3))


def sample_digits(pipe, prompt: str, n: int, guidance: float = 5.0, steps: int = 30, seed: int = 0,
                  batch: int = 100, sampler: str = "ddim") -> np.ndarray:
    """``n`` images for one prompt with :func:`core.latent.generate.text_to_image` (batch b seeded seed + b),
    decoded by the VAE and cut to the classifier's N×1×28×28."""
    from core.latent.generate import text_to_image
    from core.samplers import run_to_end
    out = []
    for b, start in enumerate(range(0, n, batch)):
        m = min(batch, n - start)
        last = run_to_end(text_to_image(pipe, prompt, guidance=guidance, n=m, seed=seed + b, sampler=sampler,
                                        steps=steps))
        out.append(to_digit28(pipe.decode(last.x_t)))
    return np.concatenate(out)


def evaluate_pipeline(pipe, n: int = 100, guidance: float = 5.0, steps: int = 30, seed: int = 0,
                      digits=range(10), attributes: bool = True, empty: int | None = None,
                      on_progress=None) -> dict:
    """The issue's figures for a digit pipeline, scored by the bundled classifier (:mod:`core.classifier`, as
    ``ddpm evaluate`` scores): per digit the on-label share of ``n`` samples of "a handwritten D" (guidance
    ``guidance``, DDIM ``steps``), their confident share and mean ink; with ``attributes`` the mean ink of
    "a thin D" and "a bold D" samples (n/2 per digit each) and their on-label shares; and the class histogram
    (and confident share) of ``empty`` samples of the empty prompt (default 5·n)."""
    from core.classifier import CONFIDENCE, classify, load_classifier
    net = load_classifier()
    result = {"n": n, "guidance": guidance, "steps": steps, "seed": seed, "on_label": {}, "confident": {},
              "ink": {}}

    def score(prompt, count, label=None, salt=0):
        x = sample_digits(pipe, prompt, count, guidance, steps, seed + 1000 * salt)
        probs, _ = classify(net, x)
        if on_progress is not None:
            on_progress(prompt)
        return x, probs

    for d in digits:
        x, p = score(f"a handwritten {d}", n, salt=d)
        result["on_label"][str(d)] = float((p.argmax(1) == d).mean())
        result["confident"][str(d)] = float((p.max(1) >= CONFIDENCE).mean())
        result["ink"][str(d)] = float(ink(x).mean())
    if attributes:
        for word in ("thin", "bold"):
            inks, hits = [], []
            for d in digits:
                x, p = score(f"a {word} {d}", max(n // 2, 1), salt=10 + d)
                inks.append(ink(x))
                hits.append(p.argmax(1) == d)
            result[f"{word}_ink"] = float(np.concatenate(inks).mean())
            result[f"{word}_on_label"] = float(np.concatenate(hits).mean())
    empty = 5 * n if empty is None else empty
    if empty:
        x, p = score("", empty, salt=99)
        result["empty_histogram"] = [int(c) for c in np.bincount(p.argmax(1), minlength=10)]
        result["empty_confident"] = float((p.max(1) >= CONFIDENCE).mean())
    result["min_on_label"] = min(result["on_label"].values()) if result["on_label"] else None
    return result
