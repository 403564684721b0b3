"""Samplers: exact statistics on Gaussian data, noise order, SDEdit, guidance, cancellation, spacing, validation."""
import contextlib

import numpy as np
import pytest
import torch

from core.models.denoiser import Denoiser
from core.samplers import SAMPLERS, SamplerError, SamplerStep, default_steps, run_to_end, sample
from core.samplers.clipping import dynamic_threshold
from core.samplers.guidance import GuidedModel
from core.samplers.timesteps import spaced_timesteps
from core.schedule import NoiseSchedule

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors: one thread (conftest)


class GaussianData(Denoiser):
    """The exact denoiser when every pixel of x_0 is N(μ, s²): E[x_0 | x_t] = μ + α s²/(α² s² + σ²)·(x_t − α μ)."""

    def __init__(self, mu=0.2, s=0.3, **kw):
        super().__init__(resolution=16, channels=1, prediction_type="sample", clip_sample=False, **kw)
        self.mu, self.s = mu, s

    def model_output(self, x_t, t, class_labels=None, schedule=None):
        ab = torch.tensor(np.asarray(schedule.alphas_cumprod))[t.cpu()].float()[:, None, None, None]
        a = ab.sqrt()
        return self.mu + a * self.s**2 / (ab * self.s**2 + 1 - ab) * (x_t - a * self.mu)


class Recorder(Denoiser):
    """Predicts x_0 = 0 whatever it sees (so every step is a known linear map), and records each call."""

    def __init__(self, **kw):
        kw.setdefault("prediction_type", "sample")
        super().__init__(resolution=4, channels=1, **kw)
        self.calls = []

    def model_output(self, x_t, t, class_labels=None, schedule=None):
        self.calls.append((x_t.shape[0], t.clone(), None if class_labels is None else class_labels.clone()))
        if class_labels is None:
            return torch.zeros_like(x_t)
        return 0.1 * x_t + torch.where(class_labels < 0, 0.0, class_labels.float() + 1)[:, None, None, None]


LINEAR = NoiseSchedule.preset("linear", T=1000)


@pytest.mark.parametrize("sampler,steps,kw", [("ddpm", 1000, {}), ("ddim", 1000, {}), ("dpmpp2m", 100, {})])
def test_many_steps_reproduce_gaussian_data(sampler, steps, kw):
    # With the exact denoiser of N(μ, s²) data and enough steps, each sampler must give N(μ, s²): 8192 pixels.
    den = GaussianData(mu=0.2, s=0.3, schedule=LINEAR)
    x = run_to_end(sample(den, sampler=sampler, steps=steps, n=32, seed=1, **kw)).x_t
    assert abs(float(x.mean()) - 0.2) < 0.02
    assert abs(float(x.std()) / 0.3 - 1) < 0.04, float(x.std())


def _gaussian_std(sampler, ts, s2, eta=0.0):
    """The std of the samples a few-step sampler gives for N(·, s2) data, by propagating Var(x) through its linear
    update (DDIM: Song et al. 2021 eq. 12; DPM-Solver++(2M): Lu et al. 2022 Alg. 2) in float64."""
    ab = LINEAR.alphas_cumprod
    var, c, prev = 1.0, 1.0, None
    al, sg = np.sqrt(ab[ts]), np.sqrt(1 - ab[ts])
    lam = np.log(al / sg)
    for i, t in enumerate(ts):
        k = al[i] * s2 / (ab[t] * s2 + 1 - ab[t])  # E[x_0 | x_t] = k·x_t (+ const)
        if sampler == "ddim":
            ap = ab[ts[i + 1]] if i + 1 < len(ts) else 1.0
            std = eta * np.sqrt((1 - ap) / (1 - ab[t]) * (1 - ab[t] / ap))
            coef = np.sqrt(ap) * k + np.sqrt(1 - ap - std**2) * (1 - al[i] * k) / sg[i]
            var = coef**2 * var + std**2
            continue
        m0 = k * c
        if i == len(ts) - 1:
            c = m0
            break
        h = lam[i + 1] - lam[i]
        A = al[i + 1] * (1 - np.exp(-h))
        c = sg[i + 1] / sg[i] * c + A * m0 + (0.5 * A * (m0 - prev) * h / (lam[i] - lam[i - 1]) if i else 0.0)
        prev = m0
    return np.sqrt(var) if sampler == "ddim" else abs(c)


@pytest.mark.parametrize("sampler,steps,eta", [("ddim", 50, 0.0), ("ddim", 50, 1.0), ("dpmpp2m", 20, 0.0)])
def test_few_step_samplers_shrink_the_spread_exactly_as_theory_says(sampler, steps, eta):
    # Few steps under-disperse Gaussian data (DDIM 50: ×0.92, DPM-Solver++ 20: ×0.86); the samples must show the
    # factor that the update rule predicts.
    from core.samplers.timesteps import spaced_timesteps
    den = GaussianData(mu=0.0, s=0.3, schedule=LINEAR)
    x = run_to_end(sample(den, sampler=sampler, steps=steps, eta=eta, n=64, seed=3)).x_t
    ts = spaced_timesteps(1000, steps, "leading" if sampler == "ddim" else "linspace", solver=sampler == "dpmpp2m")
    want = _gaussian_std(sampler, ts, 0.09, eta)
    assert want < 0.3 * 0.95
    assert abs(float(x.std()) / want - 1) < 0.02, (float(x.std()), want)


def test_fixed_large_spreads_more_than_fixed_small():
    den = GaussianData(mu=0.0, s=0.1, schedule=LINEAR)
    small = run_to_end(sample(den, sampler="ddpm", steps=100, n=16, seed=2)).x_t.std()
    large = run_to_end(sample(den, sampler="ddpm", steps=100, n=16, seed=2, variance_type="fixed_large")).x_t.std()
    assert large > small * 1.05


def test_ddpm_noise_is_drawn_in_diffusers_order():
    # x̂_0 = 0, so DDPM is x ← c2·x + σ·z: recompute it from a fresh generator, initial batch first, then one draw
    # per step with t > 0.
    sched = NoiseSchedule.preset("linear", T=20)
    den = Recorder(schedule=sched)
    got = run_to_end(sample(den, sampler="ddpm", n=3, seed=7, clip_sample=False)).x_t
    g = torch.Generator().manual_seed(7)
    x = torch.randn(3, 1, 4, 4, generator=g, dtype=torch.float32).double()
    ab = sched.alphas_cumprod
    for t in range(19, -1, -1):
        ab_prev = ab[t - 1] if t else 1.0
        c2 = np.sqrt(sched.alphas[t]) * (1 - ab_prev) / (1 - ab[t])
        x = c2 * x
        if t > 0:
            x = x + np.sqrt(sched.posterior_variance[t]) * torch.randn(3, 1, 4, 4, generator=g).double()
    assert torch.allclose(got.double(), x, atol=1e-6)
    assert len(den.calls) == 20 and den.calls[0][1].tolist() == [19, 19, 19]


def test_sdedit_noises_the_start_image_then_denoises_from_t_start():
    sched = NoiseSchedule.preset("linear", T=100)
    den = Recorder(schedule=sched)
    start = torch.linspace(-1, 1, 16).reshape(1, 1, 4, 4)
    steps = list(sample(den, sampler="ddim", steps=10, seed=3, x_start=start, t_start=40, n=2, clip_sample=False))
    assert [s.t for s in steps] == np.linspace(0, 40, 10).round()[::-1].astype(int).tolist()
    g = torch.Generator().manual_seed(3)
    ab = sched.alphas_cumprod
    x40 = np.sqrt(ab[40]) * start.double() + np.sqrt(1 - ab[40]) * torch.randn(2, 1, 4, 4, generator=g).double()
    # DDIM η = 0 with x̂_0 = 0: x_{t'} = √(1−ᾱ_{t'})·ε̂, ε̂ = x_t/√(1−ᾱ_t)
    t1 = steps[1].t
    assert torch.allclose(steps[0].x_t.double(), np.sqrt((1 - ab[t1]) / (1 - ab[40])) * x40, atol=1e-6)
    # too many steps for a short chain: capped at t_start + 1
    assert len(list(sample(den, sampler="ddpm", seed=3, x_start=start, t_start=5))) == 6


def test_sdedit_from_a_low_t_keeps_the_image():
    from core.models.oracle import OracleDenoiser
    img = torch.rand(1, 1, 8, 8) * 2 - 1
    other = torch.rand(1, 1, 8, 8) * 2 - 1
    den = OracleDenoiser(torch.cat([img, other]))
    out = run_to_end(sample(den, schedule=LINEAR, sampler="ddim", steps=10, x_start=img, t_start=50)).x_t
    assert torch.allclose(out, img, atol=1e-4)


def test_oracle_samples_are_training_images():
    from core.models.oracle import OracleDenoiser
    images = torch.rand(6, 1, 8, 8) * 2 - 1
    den = OracleDenoiser(images)
    for sampler in SAMPLERS:
        x = run_to_end(sample(den, schedule=LINEAR, sampler=sampler, steps=None if sampler != "ddpm" else 200,
                              n=5, seed=4)).x_t
        d = ((x[:, None] - images[None]) ** 2).flatten(2).sum(-1).min(1).values
        assert float(d.max()) < 1e-6, (sampler, d)


def test_guidance_is_one_batched_call_with_the_cfg_combination():
    sched = NoiseSchedule.preset("linear", T=10)
    den = Recorder(schedule=sched, num_classes=3)
    labels = torch.tensor([0, 2])
    model = GuidedModel(den, sched, labels, 3.0, contextlib.nullcontext())
    x = torch.randn(2, 1, 4, 4)
    out = model(x, torch.tensor([5, 5, 5, 5]))
    b, _, seen = den.calls[-1]
    assert b == 4 and seen.tolist() == [-1, -1, 0, 2]
    uncond = 0.1 * x
    cond = 0.1 * x + (labels.float() + 1)[:, None, None, None]
    assert torch.allclose(out, uncond + 3.0 * (cond - uncond))
    den.calls.clear()
    run_to_end(sample(den, sampler="ddim", steps=4, n=2, class_labels=[0, 2], guidance=3.0))
    assert [c[0] for c in den.calls] == [4] * 4
    den.calls.clear()
    run_to_end(sample(den, sampler="ddim", steps=4, n=2, class_labels=1))  # w = 1: no doubled batch
    assert [c[0] for c in den.calls] == [2] * 4 and den.calls[0][2].tolist() == [1, 1]


def test_closing_the_generator_cancels_between_steps():
    den = Recorder(schedule=NoiseSchedule.preset("linear", T=100))
    gen = sample(den, sampler="ddpm")
    for _ in range(3):
        step = next(gen)
    gen.close()
    assert len(den.calls) == 3 and isinstance(step, SamplerStep) and step.index == 3 and step.total == 100
    with pytest.raises(StopIteration):
        next(gen)


def test_steps_run_in_inference_mode_without_leaking_it():
    den = Recorder(schedule=NoiseSchedule.preset("linear", T=10))
    for step in sample(den, sampler="ddpm", n=2):
        assert not torch.is_inference_mode_enabled()
        assert step.x_t.is_inference() and step.x0_pred.shape == (2, 1, 4, 4)


def test_a_seed_means_the_same_images_and_another_seed_others():
    den = GaussianData(schedule=LINEAR)
    run = lambda seed: run_to_end(sample(den, sampler="ddim", steps=5, eta=1.0, n=2, seed=seed)).x_t  # noqa: E731
    assert torch.equal(run(5), run(5)) and not torch.allclose(run(5), run(6))


def test_dynamic_threshold_matches_diffusers():
    from diffusers import DDPMScheduler
    x = torch.randn(4, 3, 8, 8) * torch.tensor([0.5, 1.2, 3.0, 40.0])[:, None, None, None]
    ref = DDPMScheduler(thresholding=True, dynamic_thresholding_ratio=0.9, sample_max_value=1.5)._threshold_sample(x)
    assert torch.allclose(dynamic_threshold(x, 0.9, 1.5), ref, atol=1e-6)
    out = dynamic_threshold(x, 0.995)  # no cap: each image scaled into [−1, 1] by its own quantile
    for b in range(4):
        q = max(1.0, float(np.quantile(x[b].abs().numpy(), 0.995)))
        assert torch.allclose(out[b], x[b].clamp(-q, q) / q, atol=1e-6)
    assert out.abs().max() <= 1


@pytest.mark.parametrize("cls,solver", [("DDPMScheduler", False), ("DDIMScheduler", False),
                                        ("DPMSolverMultistepScheduler", True)])
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_timestep_spacing_matches_diffusers(cls, solver, spacing):
    import diffusers
    for T, steps, offset in [(1000, 50, 0), (1000, 20, 1), (1000, 7, 0), (100, 100 if not solver else 99, 0),
                             (300, 1, 0)]:
        if offset and spacing != "leading":
            continue
        sch = getattr(diffusers, cls)(num_train_timesteps=T, timestep_spacing=spacing, steps_offset=offset)
        sch.set_timesteps(steps)
        ours = spaced_timesteps(T, steps, spacing, offset, solver=solver)
        assert ours.tolist() == sch.timesteps.tolist(), (T, steps, offset)


def test_default_steps():
    assert [default_steps(s, 1000) for s in SAMPLERS] == [1000, 50, 20]
    assert [default_steps(s, 10) for s in SAMPLERS] == [10, 10, 9]


@pytest.mark.parametrize("kwargs,match", [
    ({"sampler": "euler"}, "unknown sampler"),
    ({"steps": 101}, "outside 1…100"),
    ({"steps": 2.5}, "integer"),
    ({"eta": 1.5, "sampler": "ddim"}, "eta"),
    ({"guidance": 2.0}, "guidance needs class labels"),
    ({"class_labels": 1}, "unconditional"),
    ({"t_start": 5}, "go together"),
    ({"x_start": torch.zeros(1, 3, 4, 4), "t_start": 5}, "needs B×1×4×4"),
    ({"x_start": torch.zeros(1, 1, 4, 4), "t_start": 100}, "outside 0…99"),
    ({"n": 0}, "outside 1"),
    ({"variance_type": "learned"}, "unknown variance"),
    ({"timestep_spacing": "cosine"}, "unknown timestep spacing"),
    ({"schedule": NoiseSchedule.preset("linear", T=50)}, "trained with T = 100"),
    ({"dynamic_threshold": 1.5}, "quantile"),
    ({"precision": "fp8"}, "unknown precision"),
])
def test_bad_arguments_fail_at_once_with_one_line(kwargs, match):
    den = Recorder(schedule=NoiseSchedule.preset("linear", T=100))
    with pytest.raises(ValueError, match=match) as e:
        sample(den, **kwargs)  # raised by the call itself, before any step
    assert "\n" not in str(e.value) and den.calls == []


def test_labels_are_checked_against_the_model():
    den = Recorder(schedule=NoiseSchedule.preset("linear", T=10), num_classes=3)
    with pytest.raises(SamplerError, match="class 3 is outside 0…2"):
        sample(den, class_labels=3)
    with pytest.raises(SamplerError, match="3 class labels for a batch of 2"):
        sample(den, class_labels=[0, 1, 2], n=2)
    den.has_null_class = False
    with pytest.raises(SamplerError, match="no 'no class'"):
        sample(den, class_labels=1, guidance=2.0)


def test_the_oracle_needs_a_schedule_to_sample():
    from core.models.oracle import OracleDenoiser
    with pytest.raises(SamplerError, match="pass schedule"):
        sample(OracleDenoiser(torch.zeros(2, 1, 4, 4)))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for a missing GPU")
def test_a_missing_device_is_one_line():
    with pytest.raises(ValueError, match="no CUDA GPU"):
        sample(Recorder(schedule=NoiseSchedule.preset("linear", T=10)), device="cuda")


def test_plan_timesteps_is_what_a_run_visits():
    from core.samplers import plan_timesteps
    den = Recorder(schedule=NoiseSchedule.preset("linear", T=100))
    for sampler in SAMPLERS:
        for kw in ({}, {"steps": 7, "timestep_spacing": "trailing"}, {"t_start": 30, "steps": 5}):
            start = {"x_start": torch.zeros(1, 1, 4, 4)} if "t_start" in kw else {}
            visited = [s.t for s in sample(den, sampler=sampler, **kw, **start)]
            assert visited == plan_timesteps(100, sampler, kw.get("steps"), kw.get("timestep_spacing"),
                                             t_start=kw.get("t_start")).tolist()
    assert plan_timesteps(1000, "dpmpp2m")[:2].tolist() == [999, 949]


def test_guidance_parts_are_the_unconditional_and_conditional_x0(one_torch_thread):
    """x̂_0 is linear in the model output, so the guided x̂_0 = lerp(x̂_0 uncond, x̂_0 cond, w) (before clipping)."""
    from core.models.oracle import OracleDenoiser
    from core.schedule import NoiseSchedule
    rng = torch.Generator().manual_seed(0)
    data = torch.rand(6, 1, 4, 4, generator=rng) * 2 - 1
    den = OracleDenoiser(data, labels=np.array([0, 0, 0, 1, 1, 1]), num_classes=2)
    sched = NoiseSchedule.preset("linear", T=50)
    w = 3.0
    plain = list(sample(den, schedule=sched, sampler="ddim", steps=5, n=2, class_labels=[0, 1], guidance=w,
                        clip_sample=False))
    kept = list(sample(den, schedule=sched, sampler="ddim", steps=5, n=2, class_labels=[0, 1], guidance=w,
                       clip_sample=False, keep_guidance_parts=True))
    for a, b in zip(plain, kept):
        assert a.x0_parts is None and torch.equal(a.x_t, b.x_t)
        uncond, cond = b.x0_parts
        assert torch.allclose(torch.lerp(uncond, cond, w), b.x0_pred, atol=1e-5)
    uncond, cond = kept[0].x0_parts  # at high noise the class changes the posterior mean
    assert (uncond - cond).abs().max() > 0.05


def test_the_default_ddpm_steps_fit_a_leading_offset():
    """Stable Diffusion's steps_offset = 1: DDPM's default (every timestep) would ask for t = T; it visits T − 1."""
    from core.samplers import plan_timesteps
    ts = plan_timesteps(1000, "ddpm", None, "leading", steps_offset=1)
    assert len(ts) == 999 and ts[0] == 999 and ts[-1] == 1
    assert len(plan_timesteps(1000, "ddpm", None, "leading")) == 1000
    with pytest.raises(SamplerError, match="use fewer steps"):
        plan_timesteps(1000, "ddpm", 1000, "leading", steps_offset=1)
