"""torch.distributed for ``ddpm train`` under ``torchrun``: start, who am I, barriers and all-reduced means.

``torchrun`` (``--nproc_per_node N``, ``--nnodes``, ``--rdzv-backend c10d --rdzv-endpoint HOST:PORT``) starts one
process per GPU (or per CPU slot) with ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``
in the environment; :func:`init_from_env` joins the process group those describe: NCCL when the run trains on CUDA,
gloo otherwise. Without those variables (a plain ``ddpm train``) nothing is started and every helper here is the
one-process identity (rank 0 of 1, a barrier that returns at once, a mean that is the value).

The group's timeout (``timeout_s``, default :data:`DEFAULT_TIMEOUT_S`) bounds how long a rank waits for the others
in any collective: a rank that died leaves no survivor hung longer than that (gloo notices a closed peer at once;
``torchrun`` also stops the remaining workers when one exits with an error).
"""
from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist

DEFAULT_TIMEOUT_S = 300.0   # rank 0's sample grids and checkpoints must fit in it (the others wait at a barrier)
_started_here = False


def launched() -> bool:
    """True when this process was started by ``torchrun`` (or anything that sets ``WORLD_SIZE`` and ``RANK``)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world() -> int:
    return dist.get_world_size() if active() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0)) if active() else 0


def is_main() -> bool:
    return rank() == 0


def backend_for(device: str) -> str:
    """NCCL for CUDA training (when built in), gloo for everything else."""
    want_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    return "nccl" if want_cuda and torch.cuda.is_available() and dist.is_nccl_available() else "gloo"


def init_from_env(device: str = "auto", timeout_s: float | None = None) -> bool:
    """Join the process group ``torchrun`` describes (no-op when not launched by it or already joined); returns
    whether this process is part of a group of more than one. CUDA ranks are pinned to ``cuda:LOCAL_RANK``."""
    global _started_here
    if not launched() or active():
        return world() > 1
    backend = backend_for(device)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    timeout = datetime.timedelta(seconds=float(timeout_s if timeout_s is not None else DEFAULT_TIMEOUT_S))
    dist.init_process_group(backend=backend, timeout=timeout)
    _started_here = True
    return world() > 1


def shutdown() -> None:
    """Leave the group this module joined (a clean exit without NCCL's "destroy_process_group" warning)."""
    global _started_here
    if _started_here and active():
        dist.destroy_process_group()
    _started_here = False


def barrier() -> None:
    if world() > 1:
        dist.barrier()


def all_reduce_sum(values: list[float], device=None) -> list[float]:
    """The sums over all ranks of a few numbers (one collective; a float64 tensor on ``device`` for NCCL)."""
    if world() == 1:
        return list(values)
    dev = device if device is not None and dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor(values, dtype=torch.float64, device=dev)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return [float(v) for v in t.cpu()]


def all_reduce_mean(values: list[float], device=None) -> list[float]:
    n = world()
    return [v / n for v in all_reduce_sum(values, device)]


def broadcast_object(obj, src: int = 0):
    """``obj`` of rank ``src`` on every rank (picklable Python objects: a file list, a scan's result)."""
    if world() == 1:
        return obj
    box = [obj if rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]
