"""core.jobs.threads without a display: what a job yields is copied before the window's thread gets it, and the
torch thread count is restored after one_torch_thread."""
import dataclasses
from typing import NamedTuple

import numpy as np
import torch

from core.jobs.threads import copy_payload, one_torch_thread


class Pair(NamedTuple):
    a: object
    b: object


@dataclasses.dataclass
class Frame:
    image: object
    t: int
    note: str = dataclasses.field(default="", init=False)


def test_arrays_and_tensors_are_copied_through_every_container():
    src = np.ones(2)
    tensor = torch.arange(3.0, requires_grad=True) * 2
    out = copy_payload({"x": (tensor, [src]), "p": Pair(src, 3), "f": Frame(src, 7)})
    assert isinstance(out["x"][0], np.ndarray) and out["x"][0].tolist() == [0.0, 2.0, 4.0]
    assert out["x"][1][0] is not src and np.array_equal(out["x"][1][0], src)
    assert isinstance(out["p"], Pair) and out["p"].a is not src and out["p"].b == 3
    assert isinstance(out["f"], Frame) and out["f"].image is not src and out["f"].t == 7
    src[:] = 5   # the job reuses its buffer: the copies keep what was yielded
    assert out["x"][1][0].tolist() == [1.0, 1.0] and out["f"].image.tolist() == [1.0, 1.0]


def test_other_values_pass_as_they_are():
    marker = object()
    assert copy_payload(marker) is marker and copy_payload("text") == "text" and copy_payload(None) is None
    assert copy_payload(Frame) is Frame   # a dataclass type, not an instance


def test_one_torch_thread_restores_the_count():
    before = torch.get_num_threads()
    with one_torch_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
