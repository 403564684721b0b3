"""The bound of the built-in MNIST model on held-out digits: finite, better than a uniform 8-bit code, and carried
by the small timesteps (Ho et al. 2020, §4.2; Nichol & Dhariwal 2021, Fig. 2: the first few terms dominate)."""
from __future__ import annotations

import numpy as np
import pytest

from core.models.load import builtin_root

MODEL = builtin_root() / "mnist"
pytestmark = pytest.mark.skipif(not (MODEL / "config.json").is_file(),
                                reason=f"the built-in model is not installed yet ({MODEL} has no config.json)")


@pytest.fixture(scope="module")
def bound():
    from core.data import load_dataset
    from core.models.load import load_model
    from core.vlb import variational_bound
    model = load_model("builtin:mnist", device="cpu")
    digits = load_dataset("builtin:mnist", split="heldout").images[:2]
    return variational_bound(model, digits, seed=0)


def test_the_bound_on_held_out_digits_is_finite_and_beats_a_uniform_code(bound):
    assert np.all(np.isfinite(bound.per_image))
    assert np.all(bound.terms >= -1e-9)  # KLs and a negative log-probability
    assert 0 < bound.bits_per_dim < 8.0  # 8 bits/dim is the cost of a uniform distribution over the 256 levels
    assert bound.prior < 1e-3  # x_T is almost pure noise on the linear schedule


def test_the_kl_terms_are_largest_at_small_t(bound):
    kl = bound.terms[1:-1]  # L_1 … L_{T−1}
    T = bound.T
    assert int(np.argmax(kl)) < T // 10, f"largest KL at L_{int(np.argmax(kl)) + 1}"
    assert kl[:10].mean() > 10 * kl[T // 2:].mean()
