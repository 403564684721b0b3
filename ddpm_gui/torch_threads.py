"""``one_torch_thread()``: run a block of torch work on the calling thread alone.

The GUI's own torch work — the slider's render on the UI thread, the Markov chain's steps on its worker — is a
few memory-bound passes over one image, where a second thread gains little; but a thread pool that has to wait
for a core busy with a training or sampling worker (or another program) turned a 3 ms frame into 30–50 ms on a
loaded 2-core machine. With torch's OpenMP backend the thread count is per calling thread, and the previous count
is restored on exit, so model workers keep theirs. The pixels are the same either way.
"""
from __future__ import annotations

import contextlib

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
