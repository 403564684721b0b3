"""core.schedule_edit, headless: the monotone interpolation never overshoots, random valid edits keep ᾱ_t strictly
decreasing and β_t in (0, 1), an edit that breaks the constraints is refused with one line, and zero terminal SNR
stays pinned through Save and Load."""
import numpy as np
import pytest

from core.schedule import NoiseSchedule
from core.schedule_edit import (BETA, LOGSNR, EditError, Knots, fit_knots, knots_from_params, pchip,
                                schedule_from_knots, to_space)


def test_pchip_interpolates_is_monotone_and_never_overshoots():
    rng = np.random.default_rng(0)
    for _ in range(200):
        x = np.sort(rng.choice(1000, size=rng.integers(2, 9), replace=False)).astype(float)
        y = np.sort(rng.random(len(x)))[::-1] * rng.choice([1e-3, 1, 50])   # decreasing data
        q = np.arange(x[0], x[-1] + 1)
        f = pchip(x, y, q)
        assert np.allclose(pchip(x, y, x), y)                                # passes through the knots
        assert np.all(np.diff(f) <= 1e-12 * max(1, y.max()))                 # monotone like the data
        assert f.min() >= y.min() - 1e-12 and f.max() <= y.max() + 1e-12     # no overshoot
    # non-monotone data: each piece stays between its two knot values
    x, y = np.array([0.0, 3, 7, 10]), np.array([0.1, 0.9, 0.05, 0.5])
    f = pchip(x, y, np.linspace(0, 10, 1001))
    assert f.min() >= 0.05 - 1e-12 and f.max() <= 0.9 + 1e-12
    # linear data is reproduced exactly
    assert np.allclose(pchip([0, 2, 9], [1, 5, 19], np.arange(10)), 1 + 2 * np.arange(10))


@pytest.mark.parametrize("space", [BETA, LOGSNR])
@pytest.mark.parametrize("name", ["linear", "cosine", "sigmoid"])
def test_random_valid_edits_keep_alpha_bar_strictly_decreasing_and_beta_in_0_1(space, name):
    rng = np.random.default_rng(1)
    base = NoiseSchedule.preset(name, T=300)
    knots = fit_knots(base, space)
    accepted = 0
    for _ in range(100):
        i = int(rng.integers(0, len(knots)))
        v = knots.v[i] * rng.uniform(0.3, 3) if space == BETA else knots.v[i] + rng.normal(0, 3)
        try:
            s = schedule_from_knots(knots.with_point(i, knots.t[i], v), base.T)
        except EditError:
            continue
        accepted += 1
        assert np.all((s.betas > 0) & (s.betas < 1))
        assert np.all(np.diff(np.concatenate([[1.0], s.alphas_cumprod])) < 0)
    assert accepted > 10


def test_linear_schedule_is_reproduced_exactly_by_its_beta_points():
    s = NoiseSchedule.preset("linear")
    k = fit_knots(s, BETA)
    assert np.allclose(schedule_from_knots(k, 1000).betas, s.betas, rtol=1e-12)


def test_edits_that_break_the_constraints_are_refused_with_one_line():
    s = NoiseSchedule.preset("linear", T=100)
    kb = fit_knots(s, BETA)
    for bad in (1.2, 0.0, -0.1):
        with pytest.raises(EditError, match="between 0 and 1"):
            schedule_from_knots(kb.with_point(2, kb.t[2], bad), 100)
    kl = fit_knots(s, LOGSNR)
    with pytest.raises(EditError, match="must decrease"):
        schedule_from_knots(kl.with_point(2, kl.t[2], kl.v[1] + 1.0), 100)     # above its left neighbour
    with pytest.raises(EditError, match="underflows"):
        schedule_from_knots(Knots(BETA, (0, 999), (0.9, 0.9)), 1000)        # ᾱ = 0.1^1000 = 0 in float64
    with pytest.raises(EditError, match="between 0 and 1"):
        to_space("sqrt_alphas_cumprod", 1.3)
    with pytest.raises(EditError):
        Knots(BETA, (0, 50, 99), (0.1, 0.2, 0.3)).removed(0)


def test_zero_terminal_snr_stays_pinned_and_knots_survive_save_and_load(tmp_path):
    s = NoiseSchedule.preset("linear", T=200, zero_snr=True)
    k = fit_knots(s, LOGSNR)
    assert k.t[-1] == 198
    edited = schedule_from_knots(k.with_point(2, k.t[2], k.v[2] - 0.5), 200, zero_terminal_snr=True)
    assert edited.alphas_cumprod[-1] == 0.0 and edited.betas[-1] == 1.0
    edited.save(tmp_path / "s.json")
    loaded = NoiseSchedule.load(tmp_path / "s.json")
    assert knots_from_params(loaded) == k.with_point(2, k.t[2], k.v[2] - 0.5)


def test_stretched_knots_keep_an_edited_shape_when_T_changes():
    k = Knots(BETA, (0, 10, 11, 50, 99), (1e-4, 0.004, 0.005, 0.01, 0.02))
    assert k.stretched(199) == Knots(BETA, (0, 20, 22, 101, 199), k.v)
    short = k.stretched(9)                                     # 10 and 11 land on the same t: one is dropped
    assert short.t == (0, 1, 5, 9) and short.v == (1e-4, 0.004, 0.01, 0.02)
    s = schedule_from_knots(k.stretched(199), 200)
    assert s.betas[101] == pytest.approx(0.01) and s.betas[199] == pytest.approx(0.02)
    with pytest.raises(EditError):
        k.stretched(0)


def test_panel_edits_drag_add_stretch_and_the_points_drawn():
    from core.schedule_edit import (CURVE_HTML, CURVE_TIPS, CURVES, knot_points, knots_in, point_added, rebuilt,
                                    stretched_to, summary_html)
    assert set(CURVE_HTML) == set(CURVE_TIPS) == set(CURVES)
    assert "eq. 2" in CURVE_TIPS["beta"] and "<sub>" in CURVE_HTML["alphas_cumprod"]
    s = NoiseSchedule.preset("linear", T=100)
    k = Knots(BETA, (0, 30, 60, 99), (1e-4, 0.004, 0.01, 0.02))
    assert k.dragged(1, 75, 0.005).t == (0, 59, 60, 99)             # kept left of its right neighbour
    assert k.dragged(0, 40, 2e-4).t[0] == 0 and k.dragged(3, 10, 0.03).t[-1] == 99   # the ends stay put
    assert k.dragged(2, 45, 0.011) == k.with_point(2, 45, 0.011)
    added = point_added(k, s, 45.4)
    assert added.t == (0, 30, 45, 60, 99) and added.v[2] == pytest.approx(s.betas[45])
    for bad, match in ((0, "between t = 1 and t = 98"), (99, "between"), (30, "already a point")):
        with pytest.raises(EditError, match=match):
            point_added(k, s, bad)
    assert np.array_equal(rebuilt(k, s).betas, schedule_from_knots(k, 100).betas)
    zs = NoiseSchedule.preset("linear", T=100, zero_snr=True)
    kz = fit_knots(zs, LOGSNR)
    assert rebuilt(kz, zs).alphas_cumprod[-1] == 0.0
    k2, s2 = stretched_to(kz, zs, 200)
    assert k2.t[-1] == 198 and s2.T == 200 and s2.alphas_cumprod[-1] == 0.0
    with pytest.raises(EditError, match="T = 2 is too small"):
        stretched_to(kz, zs, 2)
    assert knots_in(BETA, s, k) is k and knots_in(LOGSNR, s, k) == fit_knots(s, LOGSNR)
    assert knots_in(BETA, s) == fit_knots(s, BETA)
    x, y = knot_points(k, "beta", log_y=True)
    assert np.array_equal(x, [0, 30, 60, 99]) and np.allclose(y, np.log10(k.v))
    kl = fit_knots(s, LOGSNR)
    assert np.allclose(knot_points(kl, "alphas_cumprod", False)[1], s.alphas_cumprod[list(kl.t)])
    want = "<b>linear</b> · T = 100 · β 0.0001 → 0.02 · ᾱ<sub>T−1</sub> = 0.364 · 4 control points"
    assert summary_html(s, 4) == want
    assert "0 (zero terminal SNR)" in summary_html(zs, 5)
