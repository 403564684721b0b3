"""core.jobs.chain, headless: the cached walk of eq. 2 equals core.forward.markov_chain exactly, whatever path
reached a step; checkpoints stay within the memory budget; the frames a worker yields; the pixel stride."""
import math

import numpy as np
import pytest
import torch

from core.forward import markov_chain
from core.images import to_uint8
from core.jobs import chain as chain_job
from core.jobs.chain import ChainCache, ChainFrame, chain_frames, chain_stride
from core.schedule import NoiseSchedule


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Tiny tensors on one thread (tests/conftest.py)."""


def photo(h=24, w=32):
    return np.random.default_rng(0).uniform(-1, 1, (h, w, 3)).astype(np.float32)


def test_any_state_equals_the_independent_walk_whatever_path_reached_it():
    s = NoiseSchedule.preset("linear", T=100, beta_start=1e-4, beta_end=0.05)
    x0 = photo()
    states = [x.clone() for x in markov_chain(x0, s, seed=3)]
    cache = ChainCache(x0, s, seed=3, budget_bytes=x0.size * 4 * 10)   # room for 10 states: every 10th step
    assert cache.stride == 10
    assert torch.equal(cache.state(57), states[57])                     # 0 → 57 from the photo
    assert cache.cached_steps == [0, 10, 20, 30, 40, 50]
    assert torch.equal(cache.state(33), states[33])                     # from the checkpoint at 30
    assert torch.equal(cache.state(99), states[99])
    assert torch.equal(cache.state(50), states[50])                     # a checkpoint itself
    assert len(cache.cached_steps) <= 10
    with pytest.raises(ValueError, match="outside"):
        cache.state(100)


def test_frames_show_the_walk_and_end_on_the_target_with_its_mse_and_sample():
    s = NoiseSchedule.preset("cosine", T=50)
    x0 = photo()
    *_, state = markov_chain(x0, s, seed=0, t_end=40)
    index = np.array([0, 5, 99, x0.size - 1])
    frames = list(chain_frames(ChainCache(x0, s, seed=0), 40, frame_interval_s=math.inf, sample_index=index))
    assert len(frames) == 41 and all(f is None for f in frames[:-1])   # a cancel point after every step
    last = frames[-1]
    assert isinstance(last, ChainFrame) and last.final and last.t == last.target == 40
    assert np.array_equal(last.image, to_uint8(state))
    assert last.mse == pytest.approx(float(torch.mean((state - torch.from_numpy(x0)) ** 2)), rel=1e-6)
    assert np.array_equal(last.sample, state.reshape(-1)[index].numpy())
    # with frames due at once, every step shows on the way
    moving = list(chain_frames(ChainCache(x0, s, seed=0), 5, frame_interval_s=0.0))
    assert [f.t for f in moving] == [0, 1, 2, 3, 4, 5] and [f.final for f in moving] == [False] * 5 + [True]
    assert moving[-1].sample is None


def test_the_chain_walks_every_s_th_pixel_of_a_large_photo(monkeypatch):
    assert chain_stride((300, 451, 3)) == 1                              # an ordinary photo: every pixel
    assert chain_stride((300, 451, 3), display_stride=3) == 3             # the view's level of detail
    assert chain_stride((2048, 2048, 3)) == 2                             # ≤ 1024² pixels a step
    assert chain_stride((4000, 6000)) == math.ceil(math.sqrt(4000 * 6000 / 1024**2))
    assert chain_stride((400, 600), max_pixels=60_000) == 2
    monkeypatch.setattr(chain_job, "CHAIN_MAX_PIXELS", 60_000)            # read at each call
    assert chain_stride((400, 600)) == 2 and chain_stride((401, 600)) == 3
