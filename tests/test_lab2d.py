"""The 2D laboratory's exact answers: the fast exact denoiser equals a float64 brute force of E[x_0|x_t]; the
density grid equals the mixture written out; Gaussian data's closed-form law after every sampler equals sampled
particles; 1000 DDPM / DDIM steps with the exact denoiser return data points; point files round-trip."""
import numpy as np
import pytest
import torch

from core.lab2d import data as pts
from core.lab2d.exact import (Exact2D, density_float64, density_grid, eps_field, grid_axes,
                              posterior_mean_float64, score_from_eps)
from core.lab2d.gaussian import GaussianDenoiser, propagate, w2_gaussian, w2_table
from core.lab2d.quality import energy_distance
from core.lab2d.run import final_particles, lockstep, nearest_distance, sweep
from core.schedule import NoiseSchedule

pytestmark = pytest.mark.usefixtures("one_torch_thread")
LINEAR = NoiseSchedule.preset("linear")


@pytest.mark.parametrize("schedule", [LINEAR, NoiseSchedule.preset("cosine", T=200)], ids=["linear", "cosine"])
def test_exact_denoiser_equals_float64_brute_force(schedule):
    p = pts.preset("8gaussians", 700, seed=3)
    x = torch.randn(300, 2, generator=torch.Generator().manual_seed(1)) * 2
    far = torch.tensor([[30.0, -30.0], [5.0, 5.0]])          # every kernel underflows: the max-shifted path
    x = torch.cat([x, far])
    d64, d32 = Exact2D(p, dtype=torch.float64), Exact2D(p)
    for t in (0, 1, 7, schedule.T // 3, schedule.T - 1):
        ab = float(schedule.alphas_cumprod[t])
        ref = posterior_mean_float64(p, x.numpy(), ab)
        assert np.abs(d64.posterior_mean(x, ab).numpy() - ref).max() < 1e-9
        assert np.abs(d32.posterior_mean(x, ab).numpy() - ref).max() < 5e-4
    # as a Denoiser on a B×2×H×W batch with one t per image
    xb = x[:300].double().T.reshape(1, 2, 1, 300).repeat(2, 1, 1, 1)
    out = d64.model_output(xb, torch.tensor([0, schedule.T - 1]), schedule=schedule)
    for b, t in enumerate((0, schedule.T - 1)):
        ref = posterior_mean_float64(p, x[:300].numpy(), float(schedule.alphas_cumprod[t]))
        assert np.abs(out[b, :, 0, :].T.numpy() - ref).max() < 1e-9


def test_density_and_field():
    p = pts.preset("moons", 500, seed=0)
    g = grid_axes(3.5, 64)
    xy = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    for t in (5, 300, 999):
        dens = density_grid(p, LINEAR, t, g, dtype=np.float64)
        assert np.allclose(dens.ravel(), density_float64(p, LINEAR, t, xy), rtol=1e-9, atol=1e-300)
    # the score is ∇ log q: compare with a finite difference of the exact density
    t, h = 200, 1e-5
    pt = np.array([[0.3, -0.2], [1.5, 0.7]])
    eps = eps_field(Exact2D(p, dtype=torch.float64), pt, LINEAR, t)
    score = score_from_eps(eps, LINEAR, t)
    for k in range(2):
        e = np.zeros(2)
        e[k] = h
        fd = (np.log(density_float64(p, LINEAR, t, pt + e)) - np.log(density_float64(p, LINEAR, t, pt - e))) / (2 * h)
        assert np.allclose(score[:, k], fd, rtol=1e-5)


@pytest.mark.parametrize("sampler,steps", [("ddpm", 10), ("ddim", 10), ("dpmpp2m", 10), ("ddpm", 100)])
def test_gaussian_closed_form_matches_particles(sampler, steps):
    mean, cov = pts.GAUSSIAN_MEAN, pts.GAUSSIAN_COV
    g = GaussianDenoiser(mean, cov)
    n = 10000
    x = final_particles(g, LINEAR, sampler, steps, n, seed=5).astype(np.float64)
    m, S = propagate(mean, cov, LINEAR, sampler, steps)
    # the sample mean and covariance within 5 standard errors of the closed form
    se_mean = np.sqrt(np.diag(S) / n)
    assert np.all(np.abs(x.mean(0) - m) < 5 * se_mean)
    C = np.cov(x.T)
    se_cov = np.sqrt((S**2 + np.outer(np.diag(S), np.diag(S))) / n)
    assert np.all(np.abs(C - S) < 5 * se_cov)
    assert w2_gaussian(m, S, m, S) < 1e-6


def test_gaussian_w2_table_shrinks_with_steps():
    table = w2_table(pts.GAUSSIAN_MEAN, pts.GAUSSIAN_COV, LINEAR, [5, 20, 100, 1000])
    for sampler, row in table.items():
        vals = [row[k] for k in sorted(row)]
        assert all(a > b for a, b in zip(vals, vals[1:])), (sampler, row)
    assert 1000 not in table["dpmpp2m"]          # DPM-Solver++ takes at most T − 1 steps
    assert table["ddpm"][1000] < 0.01


def separated(p, gap):
    """Greedy thinning: keep a point only if it is ≥ gap from every kept one."""
    kept = []
    for q in p:
        if all(np.hypot(*(q - k)) >= gap for k in kept):
            kept.append(q)
    return np.array(kept)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_many_steps_return_the_data_points(sampler):
    # √(1−ᾱ_0) = 0.01 on the linear schedule: points ≥ 0.2 apart are told apart by the last steps (at 0.1, about 1
    # DDIM particle in 2000 still ends between two points;
    # closer points are averaged: a particle between two points 0.02 apart ends between them)
    p = separated(pts.preset("checkerboard", 1000, seed=2), 0.2)
    assert len(p) > 100
    x = final_particles(Exact2D(p), LINEAR, sampler, 1000, 500, seed=0)
    assert nearest_distance(x, p).max() < 1e-3


def test_lockstep_is_sweep_and_same_start():
    p = pts.preset("rings", 200, seed=1)
    d = Exact2D(p)
    it = lockstep(d, LINEAR, ("ddpm", "ddim"), 8, 300, 4, p)
    first = next(it)
    assert np.array_equal(first["ddpm"].particles, first["ddim"].particles)   # the same x_T
    try:
        while True:
            next(it)
    except StopIteration as stop:
        rows = stop.value
    swept = {r.sampler: r for r in sweep(p, {"exact": d}, ("ddpm", "ddim"), [8], 300, 4, {"exact": LINEAR})}
    for s in ("ddpm", "ddim"):
        assert rows[s].energy == swept[s].energy
        assert np.array_equal(rows[s].particles, swept[s].particles)


def test_energy_distance():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 2))
    assert energy_distance(x, x) == pytest.approx(0.0, abs=1e-12)
    assert energy_distance(x, x + [0.5, 0]) > energy_distance(x, x + [0.1, 0]) > 0
    # against the formula written out
    d = lambda a, b: np.linalg.norm(a[:, None] - b[None], axis=-1).mean()  # noqa: E731
    y = rng.normal(size=(300, 2)) + 0.3
    assert energy_distance(x, y) == pytest.approx(2 * d(x, y) - d(x, x) - d(y, y), rel=1e-10)
