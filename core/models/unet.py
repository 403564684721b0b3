"""A small ε-prediction UNet in plain torch (Ho et al. 2020, §4 and App. B; class conditioning for
classifier-free guidance as in Ho & Salimans 2022).

Sinusoidal timestep embedding → MLP; per resolution ``num_res_blocks`` residual blocks (GroupNorm, SiLU, the time
embedding added after the first conv), self-attention at the feature-map sizes in ``attention_resolutions``,
stride-2 conv down, nearest-neighbour up with skip connections. With ``num_classes`` = K > 0 a learned class
embedding (K + 1 rows; row K is the null class used for unconditional / guided sampling) is added to the time
embedding. :class:`UNetDenoiser` is the same network as a :class:`~core.models.denoiser.Denoiser`; its file
format is :mod:`core.models.checkpoint`.
"""
from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import nn

from core.messages import printable
from core.models.denoiser import Denoiser
from core.models.prediction import PREDICTION_TYPES
from core.schedule import NoiseSchedule

# Bounds on each config value (a config file is untrusted input): far above any useful network, low enough that
# checking a config never means building one. The total size is bounded separately (see unet_parameter_count and
# core.models.checkpoint.MAX_PARAMETERS).
MAX_RESOLUTION = 4096
MAX_IN_CHANNELS = 64
MAX_CHANNELS = 1 << 20
MAX_LEVELS = 12             # channel_mults entries (4096 halves to 1 in 12 steps)
MAX_RES_BLOCKS = 32         # per level; published DDPM UNets use 2–3
MAX_ATTENTION_RESOLUTIONS = 64
MAX_CLASSES = 1_000_000


def shown(value) -> str:
    """A config value for a one-line message: its repr, escaped and cut short (a 10**5000 int has no repr)."""
    try:
        text = repr(value)
    except ValueError:
        text = "a huge integer"
    return printable(text if len(text) <= 40 else text[:37] + "…")


def _whole(name: str, value, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not low <= value <= high:
        raise ValueError(f"UNet config: {name} must be an integer in {low}…{high}, got {shown(value)}")


def _whole_list(name: str, values, min_len: int, max_len: int, low: int, high: int) -> tuple:
    if (isinstance(values, (str, bytes, dict)) or not hasattr(values, "__len__")
            or not min_len <= len(values) <= max_len):
        raise ValueError(f"UNet config: {name} must be a list of {min_len}…{max_len} integers, got {shown(values)}")
    for v in values:
        _whole(f"each of {name}", v, low, high)
    return tuple(int(v) for v in values)


@dataclass
class UNetConfig:
    resolution: int = 28
    in_channels: int = 1
    base_channels: int = 32
    channel_mults: tuple = (1, 2, 2)
    num_res_blocks: int = 1
    attention_resolutions: tuple = (7,)
    num_classes: int = 0
    dropout: float = 0.0
    groups: int = 8
    prediction_type: str = "epsilon"
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        _whole("resolution", self.resolution, 1, MAX_RESOLUTION)
        _whole("in_channels", self.in_channels, 1, MAX_IN_CHANNELS)
        _whole("base_channels", self.base_channels, 1, MAX_CHANNELS)
        _whole("num_res_blocks", self.num_res_blocks, 1, MAX_RES_BLOCKS)
        _whole("num_classes", self.num_classes, 0, MAX_CLASSES)
        _whole("groups", self.groups, 1, MAX_CHANNELS)
        self.resolution, self.in_channels, self.base_channels = (int(self.resolution), int(self.in_channels),
                                                                 int(self.base_channels))
        self.num_res_blocks, self.num_classes, self.groups = (int(self.num_res_blocks), int(self.num_classes),
                                                              int(self.groups))
        self.channel_mults = _whole_list("channel_mults", self.channel_mults, 1, MAX_LEVELS, 1, MAX_CHANNELS)
        self.attention_resolutions = _whole_list("attention_resolutions", self.attention_resolutions, 0,
                                                 MAX_ATTENTION_RESOLUTIONS, 1, MAX_RESOLUTION)
        if (isinstance(self.dropout, bool) or not isinstance(self.dropout, numbers.Real)
                or not 0.0 <= float(self.dropout) < 1.0):
            raise ValueError(f"UNet config: dropout must be a number in [0, 1), got {shown(self.dropout)}")
        self.dropout = float(self.dropout)
        if not isinstance(self.prediction_type, str) or self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {', '.join(PREDICTION_TYPES)}, "
                             f"got {shown(self.prediction_type)}")
        if not isinstance(self.extra, dict):
            raise ValueError(f"UNet config: extra must be an object, got {shown(self.extra)}")
        for m in self.channel_mults:
            if (self.base_channels * m) % self.groups:
                raise ValueError(f"UNet config: {self.base_channels}×{m} channels are not divisible by "
                                 f"{self.groups} groups")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channel_mults"] = list(self.channel_mults)
        d["attention_resolutions"] = list(self.attention_resolutions)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in set(d) - known)
        if unknown:
            raise ValueError(f"UNet config has unknown keys: {printable(', '.join(unknown))[:200]}")
        return cls(**d)


def unet_parameter_count(cfg: UNetConfig) -> int:
    """The exact number of parameters :class:`UNet` (``cfg``) has, in closed form, without building it (the loaders
    check a config's size before any allocation). Mirrors :meth:`UNet.__init__` level by level; a test compares it
    with ``sum(p.numel())`` of built networks."""
    ch, temb = cfg.base_channels, 4 * cfg.base_channels  # (a GroupNorm has 2·C parameters whatever its groups)

    def conv(cin, cout, k):
        return cin * cout * k * k + cout

    def res(cin, cout):
        return (2 * cin + conv(cin, cout, 3) + (temb * cout + cout) + 2 * cout + conv(cout, cout, 3)
                + (conv(cin, cout, 1) if cin != cout else 0))

    def attn(c):
        return 2 * c + conv(c, 3 * c, 1) + conv(c, c, 1)

    total = (ch * temb + temb) + (temb * temb + temb) + conv(cfg.in_channels, ch, 3)
    if cfg.num_classes > 0:
        total += (cfg.num_classes + 1) * temb
    attend = set(cfg.attention_resolutions)
    skips, cur, res_now, n = [ch], ch, cfg.resolution, cfg.num_res_blocks
    levels = len(cfg.channel_mults)
    for level, mult in enumerate(cfg.channel_mults):
        out = ch * mult
        total += res(cur, out) + (n - 1) * res(out, out) + (n * attn(out) if res_now in attend else 0)
        skips += [out] * n
        cur = out
        if level < levels - 1:
            total += conv(cur, cur, 3)
            skips.append(cur)
            res_now = (res_now + 1) // 2
    total += 2 * res(cur, cur) + attn(cur)
    for level, mult in reversed(list(enumerate(cfg.channel_mults))):
        out = ch * mult
        for _ in range(n + 1):  # n + 1 ≤ MAX_RES_BLOCKS + 1 blocks: a short loop
            total += res(cur + skips.pop(), out) + (attn(out) if res_now in attend else 0)
            cur = out
        if level > 0:
            total += conv(cur, cur, 3)
            res_now *= 2
    return total + 2 * cur + conv(cur, cfg.in_channels, 3)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps: [cos(t·ω_k), sin(t·ω_k)], ω_k = P^(−k/(dim/2))."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, temb: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.temb = nn.Linear(temb, cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb(emb)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    def __init__(self, channels: int, groups: int, head_dim: int = 32):
        super().__init__()
        self.heads = max(1, channels // head_dim)
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class UNet(nn.Module):
    """ε_θ(x_t, t[, y]): ``forward(x, t, class_labels=None)``; ``t`` a scalar or a (B,) tensor of timesteps in
    0…T−1; ``class_labels`` (B,) ints, where −1 or ``num_classes`` means "no class" (the null embedding)."""

    def __init__(self, config: UNetConfig | None = None, **kwargs):
        super().__init__()
        cfg = config or UNetConfig(**kwargs)
        self.config = cfg
        ch, temb = cfg.base_channels, cfg.base_channels * 4
        self.time_mlp = nn.Sequential(nn.Linear(ch, temb), nn.SiLU(), nn.Linear(temb, temb))
        self.class_emb = nn.Embedding(cfg.num_classes + 1, temb) if cfg.num_classes > 0 else None
        self.conv_in = nn.Conv2d(cfg.in_channels, ch, 3, padding=1)

        self.down = nn.ModuleList()
        skips, cur, res = [ch], ch, cfg.resolution
        for level, mult in enumerate(cfg.channel_mults):
            for _ in range(cfg.num_res_blocks):
                block = nn.ModuleList([ResBlock(cur, ch * mult, temb, cfg.groups, cfg.dropout)])
                cur = ch * mult
                if res in cfg.attention_resolutions:
                    block.append(SelfAttention(cur, cfg.groups))
                self.down.append(block)
                skips.append(cur)
            if level < len(cfg.channel_mults) - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(cur, cur, 3, stride=2, padding=1)]))
                skips.append(cur)
                res = (res + 1) // 2
        self.mid = nn.ModuleList([ResBlock(cur, cur, temb, cfg.groups, cfg.dropout), SelfAttention(cur, cfg.groups),
                                  ResBlock(cur, cur, temb, cfg.groups, cfg.dropout)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mults))):
            for _ in range(cfg.num_res_blocks + 1):
                block = nn.ModuleList([ResBlock(cur + skips.pop(), ch * mult, temb, cfg.groups, cfg.dropout)])
                cur = ch * mult
                if res in cfg.attention_resolutions:
                    block.append(SelfAttention(cur, cfg.groups))
                self.up.append(block)
            if level > 0:
                self.up.append(nn.ModuleList([nn.Upsample(scale_factor=2, mode="nearest"),
                                              nn.Conv2d(cur, cur, 3, padding=1)]))
                res *= 2
        self.norm_out = nn.GroupNorm(cfg.groups, cur)
        self.conv_out = nn.Conv2d(cur, cfg.in_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, t, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        b = x.shape[0]
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(b)
        emb = self.time_mlp(timestep_embedding(t, self.config.base_channels))
        if self.class_emb is not None:
            if class_labels is None:
                labels = torch.full((b,), self.config.num_classes, dtype=torch.long, device=x.device)
            else:
                labels = torch.as_tensor(class_labels, device=x.device).long().expand(b)
                labels = torch.where(labels < 0, torch.full_like(labels, self.config.num_classes), labels)
            emb = emb + self.class_emb(labels)
        h = self.conv_in(x)
        hs = [h]
        for block in self.down:
            if isinstance(block[0], ResBlock):
                h = block[0](h, emb)
                for layer in block[1:]:
                    h = layer(h)
            else:
                h = block[0](h)
            hs.append(h)
        h = self.mid[0](h, emb)
        h = self.mid[1](h)
        h = self.mid[2](h, emb)
        for block in self.up:
            if isinstance(block[0], ResBlock):
                skip = hs.pop()
                if skip.shape[-2:] != h.shape[-2:]:
                    h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")
                h = block[0](torch.cat([h, skip], dim=1), emb)
                for layer in block[1:]:
                    h = layer(h)
            else:
                for layer in block:
                    h = layer(h)
        if h.shape[-2:] != x.shape[-2:]:
            h = F.interpolate(h, size=x.shape[-2:], mode="nearest")
        return self.conv_out(F.silu(self.norm_out(h)))


class UNetDenoiser(Denoiser):
    """Our :class:`UNet` as a :class:`Denoiser`; the network is ``.net``, the training metadata ``.meta``."""

    def __init__(self, net: UNet, schedule: NoiseSchedule | None = None, variance_type: str = "fixed_small",
                 clip_sample: bool = True, name: str = "model", meta: dict | None = None):
        cfg = net.config
        param = next(net.parameters(), None)
        super().__init__(resolution=cfg.resolution, channels=cfg.in_channels, prediction_type=cfg.prediction_type,
                         num_classes=cfg.num_classes, schedule=schedule, variance_type=variance_type,
                         clip_sample=bool(clip_sample), name=name,
                         device=param.device if param is not None else torch.device("cpu"))
        self.net = net.eval()
        self.meta = dict(meta or {})
        self._traces: dict = {}

    def model_output(self, x_t, t, class_labels=None, schedule=None):
        return self.run_net(x_t, t, class_labels)

    def run_net(self, x, t, class_labels=None) -> torch.Tensor:
        """``self.net(x, t, class_labels)``. Inference on the CPU runs a TorchScript trace of the network, made on
        first use for each image shape (it shares the weights, and the profiling executor's optimisations are off):
        the same aten kernels in the same order, so the same bits, without the ~100 Python module calls of each
        step (about a fifth of a batch-1 call of the built-in model on a 2-core CPU)."""
        net = self.net
        if x.device.type != "cpu" or x.dtype != torch.float32 or net.training or torch.is_grad_enabled():
            return net(x, t, class_labels)
        b = x.shape[0]
        t = torch.as_tensor(t, device=x.device).reshape(-1).expand(b)
        if net.class_emb is None:
            args = (x, t)
        else:
            labels = torch.full((b,), -1, dtype=torch.long) if class_labels is None else \
                torch.as_tensor(class_labels, device=x.device).long().reshape(-1).expand(b)
            args = (x, t, labels)
        key = (len(args), tuple(x.shape[1:]), t.dtype)
        with torch.jit.optimized_execution(False):
            if key not in self._traces:
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")  # the tracer's notes on shape checks fixed by the image size
                        self._traces[key] = torch.jit.trace(net, args, check_trace=False)
                except Exception:  # noqa: BLE001 - a network the tracer cannot follow runs as it is
                    self._traces[key] = None
            traced = self._traces[key]
            return traced(*args) if traced is not None else net(x, t, class_labels)

    def to(self, device) -> "UNetDenoiser":
        self.net.to(device)
        self._traces = {}
        return super().to(device)
