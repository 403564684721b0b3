"""A small ε-network for 2D points, trained live: ε_θ(x_t, t) = MLP([x_t, emb(t)]).

emb(t) is the sinusoidal embedding of the UNet (:func:`core.models.unet.timestep_embedding`, Vaswani et al.):
[cos(t·ω_k), sin(t·ω_k)], ω_k = 10000^(−k/(d/2)). The training loop has :mod:`core.train`'s semantics where they
apply (Ho et al. 2020, Alg. 1): per step, from one seeded CPU generator and in this order, data indices, t ~ U{0…T−1}
and ε ~ N(0, I); x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε (eq. 5); L_simple = ‖ε − ε_θ(x_t, t)‖² (Ho et al. eq. 14); AdamW with
a linear warm-up, gradient-norm clipping at 1, and EMA weights θ_ema ← d·θ_ema + (1−d)·θ with
d = min(decay, (1 + n)/(10 + n)) — the EMA net is the one sampled and shown. Not applicable here: classes, label
dropout, flips, checkpoints. The learning rate is ten times the images' 2e-4 (2e-3): a 2-input MLP trains stably
at it, and it is what makes "seconds on a CPU" possible (two moons: 4,000 steps of 512 points, about 14 s on one
core, give the two arcs; 1e-3 or 3 layers leave a haze between them).

:class:`Trainer2D` keeps its state (weights, optimizer, generator) outside the generator :meth:`Trainer2D.run`, so a
run stopped at a yield (every yield ends a whole step) resumes exactly where a straight run would be.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from core.lab2d.data import check_points
from core.lab2d.exact import from_points, to_points
from core.models.denoiser import Denoiser
from core.models.unet import timestep_embedding


class EpsMLP(nn.Module):
    """x (N×2), t (N,) → ε̂ (N×2): ``layers`` hidden layers of ``hidden`` units with SiLU."""

    def __init__(self, hidden: int = 128, layers: int = 4, emb_dim: int = 32):
        super().__init__()
        self.emb_dim = emb_dim
        dims = [2 + emb_dim] + [hidden] * layers
        mods: list[nn.Module] = []
        for i, o in zip(dims[:-1], dims[1:]):
            mods += [nn.Linear(i, o), nn.SiLU()]
        mods.append(nn.Linear(dims[-1], 2))
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, timestep_embedding(t, self.emb_dim)], 1))


class MLPDenoiser(Denoiser):
    """An :class:`EpsMLP` as a :class:`~core.models.denoiser.Denoiser` (prediction ε, its training schedule, no
    clipping) over B×2×H×W "images" of points, like :class:`~core.lab2d.exact.Exact2D`."""

    def __init__(self, net: EpsMLP, schedule, name: str = "learned"):
        super().__init__(resolution=1, channels=2, prediction_type="epsilon", schedule=schedule,
                         clip_sample=False, name=name)
        self.net = net.eval().requires_grad_(False)

    def model_output(self, x_t, t, class_labels=None, schedule=None) -> torch.Tensor:
        per = x_t.shape[2] * x_t.shape[3]
        tt = torch.as_tensor(t).reshape(-1).long().cpu().expand(x_t.shape[0]).repeat_interleave(per)
        with torch.inference_mode():
            out = self.net(to_points(x_t).float(), tt)
        return from_points(out.to(x_t.dtype), x_t).contiguous()


@dataclass
class LearnConfig:
    steps: int = 4000
    batch_size: int = 512
    lr: float = 2e-3
    warmup_steps: int = 100
    grad_clip: float = 1.0
    ema_decay: float = 0.995
    hidden: int = 128
    layers: int = 4
    seed: int = 0
    report_every: int = 250      # a yielded event carries the EMA weights this often (the tab redraws)

    def __post_init__(self):
        for name in ("steps", "batch_size", "hidden", "layers", "report_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"learning rate must be > 0, got {self.lr}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")


@dataclass
class LearnEvent:
    """After step ``step`` of ``total``: its loss, the exponential average (τ = 50 steps, as core.train), the wall time
    spent in training steps so far, and every ``report_every`` steps (and at the end) the EMA weights as numpy arrays."""

    step: int
    total: int
    loss: float
    loss_avg: float
    elapsed_s: float
    weights: dict | None = None


class Trainer2D:
    """``Trainer2D(points, schedule, LearnConfig(...))``; :meth:`run` is a generator of :class:`LearnEvent`."""

    def __init__(self, points, schedule, config: LearnConfig | None = None):
        self.cfg = cfg = config or LearnConfig()
        self.points = check_points(points)
        self.schedule = schedule
        self._x = torch.from_numpy(self.points).float()
        ab = torch.tensor(np.asarray(schedule.alphas_cumprod, dtype=np.float64))
        self._a, self._s = ab.sqrt().float(), (1 - ab).sqrt().float()
        with torch.random.fork_rng(devices=[]):      # seeded initial weights, the global RNG untouched
            torch.manual_seed(int(cfg.seed))
            self.model = EpsMLP(cfg.hidden, cfg.layers)
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=0.0)
        self.generator = torch.Generator().manual_seed(int(cfg.seed))
        self.step = 0
        self.loss_avg = float("nan")
        self.elapsed_s = 0.0
        self.loss_history: list[list[float]] = []    # [step, loss] every step

    def train_step(self) -> float:
        cfg, g = self.cfg, self.generator
        b = cfg.batch_size
        idx = torch.randint(len(self._x), (b,), generator=g)
        t = torch.randint(self.schedule.T, (b,), generator=g)
        eps = torch.randn((b, 2), generator=g)
        x_t = self._a[t][:, None] * self._x[idx] + self._s[t][:, None] * eps       # eq. 5
        lr = cfg.lr * (self.step + 1) / cfg.warmup_steps if self.step < cfg.warmup_steps else cfg.lr
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.model.train()
        loss = ((self.model(x_t, t) - eps) ** 2).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.opt.step()
        self.step += 1
        d = min(cfg.ema_decay, (1 + self.step) / (10 + self.step))
        torch._foreach_lerp_(list(self.ema.parameters()), [p.detach() for p in self.model.parameters()], 1.0 - d)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"loss became {value} at step {self.step}; lower the learning rate")
        self.loss_avg = value if self.loss_avg != self.loss_avg else self.loss_avg + (value - self.loss_avg) / 50
        self.loss_history.append([self.step, value])
        return value

    def weights(self) -> dict:
        """The EMA weights as numpy copies (safe to hand to another thread)."""
        return {k: v.detach().numpy().copy() for k, v in self.ema.state_dict().items()}

    def denoiser(self) -> MLPDenoiser:
        """A copy of the EMA network as a denoiser (training on does not change it)."""
        return MLPDenoiser(copy.deepcopy(self.ema), self.schedule)

    def run(self, total: int | None = None):
        """Train until ``total`` steps (default the config's), yielding a :class:`LearnEvent` after every step."""
        total = self.cfg.steps if total is None else int(total)
        while self.step < total:
            t0 = time.perf_counter()
            loss = self.train_step()
            self.elapsed_s += time.perf_counter() - t0
            report = self.step % self.cfg.report_every == 0 or self.step == total
            yield LearnEvent(self.step, total, loss, self.loss_avg, self.elapsed_s,
                             self.weights() if report else None)


def denoiser_from_weights(weights: dict, schedule, hidden: int = 128, layers: int = 4) -> MLPDenoiser:
    """An :class:`MLPDenoiser` from :meth:`Trainer2D.weights` (numpy arrays)."""
    net = EpsMLP(hidden, layers)
    net.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in weights.items()})
    return MLPDenoiser(net, schedule)
