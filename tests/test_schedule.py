"""Noise schedules against diffusers' DDPMScheduler and against closed forms computed independently here."""
import json
import math

import numpy as np
import pytest

from core.schedule import NoiseSchedule, ScheduleError, rescale_zero_terminal_snr



def diffusers_betas(name, T, start, end, zero_snr=False):
    """diffusers' betas; only the tests that compare with diffusers skip when it is not installed."""
    diffusers = pytest.importorskip("diffusers")
    s = diffusers.DDPMScheduler(num_train_timesteps=T, beta_start=start, beta_end=end, beta_schedule=name,
                                rescale_betas_zero_snr=zero_snr)
    return s.betas.double().numpy()


@pytest.mark.parametrize("ours,theirs", [("linear", "linear"), ("scaled_linear", "scaled_linear"),
                                         ("cosine", "squaredcos_cap_v2"), ("sigmoid", "sigmoid")])
@pytest.mark.parametrize("T,start,end", [(1000, 1e-4, 0.02), (100, 1e-4, 0.05), (50, 8.5e-4, 0.012)])
def test_presets_match_diffusers(ours, theirs, T, start, end):
    b = NoiseSchedule.preset(ours, T=T, beta_start=start, beta_end=end).betas
    np.testing.assert_allclose(b, diffusers_betas(theirs, T, start, end), rtol=1e-6, atol=0)


def test_squaredcos_alias_is_cosine():
    assert NoiseSchedule.preset("squaredcos_cap_v2", T=10) == NoiseSchedule.preset("cosine", T=10)


@pytest.mark.parametrize("name", ["linear", "scaled_linear", "cosine"])
def test_zero_snr_matches_diffusers_to_float32_rounding(name):
    ours = NoiseSchedule.preset(name, T=1000, beta_start=8.5e-4, beta_end=0.012, zero_snr=True)
    theirs = diffusers_betas("squaredcos_cap_v2" if name == "cosine" else name, 1000, 8.5e-4, 0.012, zero_snr=True)
    # diffusers rescales in float32; we follow exact float64 math (documented in core/schedule.py): they agree to
    # float32 rounding of √ᾱ (about 2e-4 in β where β is large, a few 1e-7 where it is tiny)
    np.testing.assert_allclose(ours.betas, theirs, atol=5e-4, rtol=0)
    np.testing.assert_allclose(ours.sqrt_alphas_cumprod, np.sqrt(np.cumprod(1 - theirs)), atol=1e-5)
    assert ours.betas[-1] == 1.0 and ours.alphas_cumprod[-1] == 0.0
    plain = NoiseSchedule.preset(name, T=1000, beta_start=8.5e-4, beta_end=0.012)
    assert ours.sqrt_alphas_cumprod[0] == pytest.approx(plain.sqrt_alphas_cumprod[0], rel=1e-12)
    assert ours.snr[-1] == 0.0 and ours.log_snr[-1] == -math.inf


def test_zero_snr_rescale_is_affine_in_sqrt_alpha_bar():
    b = NoiseSchedule.preset("linear", T=200).betas
    new = rescale_zero_terminal_snr(b)
    s_old, s_new = np.sqrt(np.cumprod(1 - b)), np.sqrt(np.cumprod(1 - new))
    slope = (s_old[0]) / (s_old[0] - s_old[-1])
    np.testing.assert_allclose(s_new, (s_old - s_old[-1]) * slope, atol=1e-12)


def test_notes_example_and_quadratic_closed_forms():
    s = NoiseSchedule.preset("linear", T=100, beta_start=1e-4, beta_end=0.05)
    assert s.T == 100 and s.betas[0] == 1e-4 and s.betas[-1] == pytest.approx(0.05, rel=1e-15)
    q = NoiseSchedule.preset("quadratic", T=5, beta_start=0.1, beta_end=0.5)
    np.testing.assert_allclose(q.betas, [0.1 + 0.4 * (i / 4) ** 2 for i in range(5)], rtol=1e-14)


def test_derived_quantities_against_loops():
    s = NoiseSchedule.preset("cosine", T=300)
    ab, prev = 1.0, 1.0
    for t in range(s.T):
        beta = s.betas[t]
        prev, ab = ab, ab * (1 - beta)
        assert s.alphas_cumprod[t] == pytest.approx(ab, rel=1e-12)
        assert s.alphas_cumprod_prev[t] == pytest.approx(prev, rel=1e-12)
        assert s.sqrt_alphas_cumprod[t] == pytest.approx(math.sqrt(ab), rel=1e-12)
        assert s.sqrt_one_minus_alphas_cumprod[t] == pytest.approx(math.sqrt(1 - ab), rel=1e-12)
        assert s.posterior_variance[t] == pytest.approx((1 - prev) / (1 - ab) * beta, rel=1e-10, abs=1e-300)
        assert s.posterior_mean_coef1[t] == pytest.approx(beta * math.sqrt(prev) / (1 - ab), rel=1e-10)
        assert s.posterior_mean_coef2[t] == pytest.approx(math.sqrt(1 - beta) * (1 - prev) / (1 - ab), rel=1e-10)
        assert s.snr[t] == pytest.approx(ab / (1 - ab), rel=1e-10)
        assert s.log_snr[t] == pytest.approx(math.log(ab / (1 - ab)), rel=1e-9, abs=1e-12)
    assert s.posterior_variance[0] == 0.0
    assert np.all(np.diff(s.alphas_cumprod) < 0)


def test_from_alphas_cumprod_round_trip():
    s = NoiseSchedule.preset("sigmoid", T=64, beta_start=1e-4, beta_end=0.03)
    r = NoiseSchedule.from_alphas_cumprod(s.alphas_cumprod)
    np.testing.assert_allclose(r.betas, s.betas, rtol=1e-9)
    with pytest.raises(ScheduleError, match="decrease strictly"):
        NoiseSchedule.from_alphas_cumprod([0.9, 0.95, 0.5])


def test_json_round_trip_is_bit_exact(tmp_path):
    for s in (NoiseSchedule.preset("cosine", T=1000), NoiseSchedule.preset("linear", T=777, zero_snr=True),
              NoiseSchedule.from_betas(np.random.default_rng(0).uniform(1e-5, 0.3, 123))):
        path = tmp_path / "s.json"
        s.save(path)
        r = NoiseSchedule.load(path)
        assert r.betas.tobytes() == s.betas.tobytes()
        assert r.alphas_cumprod.tobytes() == s.alphas_cumprod.tobytes()
        assert r.name == s.name and json.loads(path.read_text())["version"] == 1


@pytest.mark.parametrize("betas,msg", [
    ([0.1, 0.0, 0.2], r"beta\[1\] = 0 must be > 0"),
    ([0.1, -0.2, 0.2], r"beta\[1\] = -0.2 must be > 0"),
    ([0.1, 1.0, 0.2], r"beta\[1\] = 1 must be < 1"),
    ([0.1, 0.2, 1.5], r"beta\[2\] = 1.5 must be < 1"),
    ([0.1, float("nan"), 0.2], r"beta\[1\] is nan"),
    ([0.1, 0.2, float("inf")], r"beta\[2\] is inf"),
    ([0.1], "T must be at least 2"),
])
def test_bad_betas_get_one_line(betas, msg):
    with pytest.raises(ScheduleError, match=msg) as e:
        NoiseSchedule.from_betas(betas)
    assert "\n" not in str(e.value)


def test_final_beta_of_one_is_allowed_only_at_the_end():
    assert NoiseSchedule.from_betas([0.1, 0.2, 1.0]).alphas_cumprod[-1] == 0.0


@pytest.mark.parametrize("kwargs,msg", [
    (dict(name="bogus"), "unknown schedule preset 'bogus'"),
    (dict(T=1), "T must be at least 2"),
    (dict(T=10**9), "too large"),
    (dict(beta_start=0.0), r"beta_start = 0.0 must be in \(0, 1\)"),
    (dict(beta_end=float("nan")), "beta_end = nan"),
])
def test_bad_preset_arguments(kwargs, msg):
    with pytest.raises(ScheduleError, match=msg):
        NoiseSchedule.preset(**kwargs)


def test_malformed_and_truncated_json(tmp_path):
    good = NoiseSchedule.preset("linear", T=10).to_json()
    cases = {"trunc.json": good[: len(good) // 2], "garbage.json": "not json at all",
             "wrong.json": json.dumps({"betas": "abc"}), "list.json": "[1, 2]",
             "short.json": json.dumps({**json.loads(good), "betas": json.loads(good)["betas"][:5]}),
             "future.json": json.dumps({**json.loads(good), "version": 99})}
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ScheduleError) as e:
            NoiseSchedule.load(tmp_path / name)
        assert str(e.value).startswith(str(tmp_path / name)) and "\n" not in str(e.value)
    with pytest.raises(ScheduleError, match="no such file"):
        NoiseSchedule.load(tmp_path / "missing.json")
    with pytest.raises(ScheduleError, match="directory"):
        NoiseSchedule.load(tmp_path)
