"""Where a model runs: ``auto`` picks CUDA, then Apple MPS, then the CPU; optional reduced-precision autocast.

Noise is never drawn on the device: samplers draw it from a seeded CPU ``torch.Generator`` and move it, so a seed
gives the same images on every device (AUTOMATIC1111 #9613).
"""
from __future__ import annotations

import contextlib

import torch

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class DeviceError(ValueError):
    """A device that was asked for but is not present; one line."""


def mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def available_devices() -> list[str]:
    """The devices this machine has, best first (for menus)."""
    found = ["cuda"] if torch.cuda.is_available() else []
    if mps_available():
        found.append("mps")
    return found + ["cpu"]


def pick_device(name: str | torch.device | None = "auto") -> torch.device:
    """``auto`` → CUDA, then MPS, then CPU; ``cpu`` / ``cuda`` / ``cuda:N`` / ``mps`` → that device, or a
    :class:`DeviceError` when it is absent."""
    if isinstance(name, torch.device):
        name = str(name)
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device(available_devices()[0])
    kind, _, index = name.partition(":")
    if kind not in DEVICES[1:] or (index and not index.isdigit()):
        raise DeviceError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)}")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError("device 'cuda' was asked for but no CUDA GPU is available (this torch build: "
                              f"{'CPU only' if torch.version.cuda is None else 'CUDA ' + torch.version.cuda})")
        if index and int(index) >= torch.cuda.device_count():
            raise DeviceError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) present")
    if kind == "mps" and not mps_available():
        raise DeviceError("device 'mps' was asked for but Apple MPS is not available on this machine")
    return torch.device(name)


def autocast(device: torch.device, precision: str = "fp32"):
    """A context that runs the network in ``precision`` (``fp32`` | ``bf16`` | ``fp16``) on ``device``.

    fp32 is a no-op; reduced precision is meant for GPUs (the samplers keep x_t and every coefficient in fp32)."""
    if precision not in PRECISIONS:
        raise DeviceError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    if device.type == "cpu" and dtype is torch.float16:
        raise DeviceError("fp16 autocast needs a GPU; use bf16 or fp32 on the CPU")
    return torch.autocast(device_type=device.type, dtype=dtype)
