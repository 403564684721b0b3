"""How a job's thread runs its torch work and shares the CPU with the window (no Qt here).

- :func:`one_torch_thread`: run a block of torch work on the calling thread alone. The window's own torch work —
  the slider's render on the UI thread, the Markov chain's steps, a photo's noise — is a few memory-bound passes
  over one image, where a second thread gains little; but a thread pool that has to wait for a core busy with a
  training or sampling worker (or another program) turned a 3 ms frame into 30–50 ms on a loaded 2-core machine.
  With torch's OpenMP backend the thread count is per calling thread, and the previous count is restored on exit,
  so model workers keep theirs. The pixels are the same either way.
- :func:`background_priority`: lower the calling worker thread's CPU priority, so a long background job (decoding
  a large photo) never makes the window stutter.
- :func:`copy_payload`: what a job yields, copied so that it shares no memory with the job, before another thread
  (the window's) gets it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import threading
from typing import Any

import numpy as np
import torch


@contextlib.contextmanager
def one_torch_thread():
    prev = torch.get_num_threads()
    if prev == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def background_priority(nice: int = 10) -> None:
    """Lower the calling worker thread's CPU priority (Linux: each thread has its own nice value), so that on a
    busy machine the UI thread gets a core first and a long background job (decoding a large photo) never makes
    the window stutter. Elsewhere it does nothing: there the call would change the whole process."""
    if not sys.platform.startswith("linux") or threading.current_thread() is threading.main_thread():
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except (OSError, AttributeError):
        pass


def copy_payload(value: Any) -> Any:
    """A copy of ``value`` that shares no memory with the worker: numpy arrays are copied, torch tensors become
    numpy copies, tuples/lists/dicts/dataclasses are copied recursively, everything else is passed as is."""
    if isinstance(value, np.ndarray):
        return value.copy()
    if hasattr(value, "detach") and hasattr(value, "cpu") and hasattr(value, "numpy"):  # a torch tensor
        return value.detach().cpu().numpy().copy()
    if isinstance(value, tuple):
        if hasattr(value, "_fields"):  # a namedtuple
            return type(value)(*(copy_payload(v) for v in value))
        return tuple(copy_payload(v) for v in value)
    if isinstance(value, list):
        return [copy_payload(v) for v in value]
    if isinstance(value, dict):
        return {k: copy_payload(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: copy_payload(getattr(value, f.name))
                                             for f in dataclasses.fields(value) if f.init})
    return value
