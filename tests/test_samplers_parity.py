"""Our samplers against diffusers' pipelines and schedulers: same weights, same seed → the same images.

A small, randomly initialised UNet2DModel is saved as a pipeline folder and loaded through ``load_model``; diffusers
runs its own pipeline on the same weights. Unscaled random nets keep float32 rounding from growing, except where
x̂_0 clipping saturates (DDIM η = 0 at high t then iterates the random net itself, whose Jacobian is expanding):
that case runs with clipping off, and clipped DDIM is checked with the oracle, a denoiser that contracts.
"""
import pytest
import torch

diffusers = pytest.importorskip("diffusers")
from diffusers import (DDIMPipeline, DDIMScheduler, DDPMPipeline, DDPMScheduler,  # noqa: E402
                       DPMSolverMultistepScheduler, UNet2DModel)

from core.models.load import load_model  # noqa: E402
from core.models.oracle import OracleDenoiser  # noqa: E402
from core.samplers import run_to_end, sample  # noqa: E402
from core.schedule import NoiseSchedule  # noqa: E402

TOL = 1e-4


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors: one thread (conftest)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=4)
    path = tmp_path_factory.mktemp("ddpm-pipeline")
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=1000)).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def ours(folder):
    return load_model(str(folder))


def _pipe(cls, unet, scheduler):
    pipe = cls(unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _as_pipeline_output(x):
    return (x / 2 + 0.5).clamp(0, 1)


def rel_err(x, ref):
    """max |x − ref| / max(1, |ref|): without clipping a random net's x̂_0 reaches hundreds, where float32 itself
    only resolves ~1e-5, so raw (unclamped) states are compared relatively; images are compared absolutely."""
    return float(((x - ref).abs() / ref.abs().clamp(min=1)).max())


def diffusers_loop(model, scheduler, shape, steps, seed, **step_kwargs):
    """The pipelines' loop, unclamped: all initial noise in one draw, then scheduler.step with the generator."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g)
    scheduler.set_timesteps(steps)
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.step(model(x, t), t, x, generator=g, **step_kwargs).prev_sample
    return x


def test_the_folder_loads_with_the_schedulers_defaults(ours):
    assert ours.schedule == NoiseSchedule.preset("linear", T=1000)
    assert (ours.prediction_type, ours.variance_type, ours.clip_sample) == ("epsilon", "fixed_small", True)
    assert (ours.resolution, ours.channels) == (8, 3)


def test_ddpm_1000_steps_equals_ddpm_pipeline(folder, ours):
    pipe = _pipe(DDPMPipeline, ours.net, DDPMScheduler.from_pretrained(folder, subfolder="scheduler"))
    ref = pipe(batch_size=2, generator=torch.Generator().manual_seed(3), num_inference_steps=1000,
               output_type="pt").images
    x = run_to_end(sample(ours, sampler="ddpm", steps=1000, n=2, seed=3)).x_t
    assert x.abs().max() <= 1  # the last step returns the clipped x̂_0, so the pipeline's clamp hides nothing
    assert float((_as_pipeline_output(x) * 2 - ref * 2).abs().max()) <= TOL


@pytest.mark.parametrize("eta,clip", [(0.0, False), (1.0, True)])
def test_ddim_50_steps_equals_ddim_pipeline(folder, ours, eta, clip):
    config = DDIMScheduler.load_config(folder, subfolder="scheduler")
    pipe = _pipe(DDIMPipeline, ours.net, DDIMScheduler.from_config(config, clip_sample=clip))
    ref = pipe(batch_size=2, generator=torch.Generator().manual_seed(4), num_inference_steps=50, eta=eta,
               output_type="pt").images
    x = run_to_end(sample(ours, sampler="ddim", steps=50, eta=eta, n=2, seed=4, clip_sample=clip)).x_t
    assert float((_as_pipeline_output(x) * 2 - ref * 2).abs().max()) <= TOL
    raw = diffusers_loop(lambda x, t: ours.net(x, t).sample, DDIMScheduler.from_config(config, clip_sample=clip),
                         (2, 3, 8, 8), 50, 4, eta=eta)
    assert rel_err(x, raw) <= TOL


@pytest.mark.parametrize("spacing", [None, "linspace"])
def test_dpm_solver_pp_20_steps_equals_diffusers(folder, ours, spacing):
    # None: the scheduler built from the model's config (which carries "leading"), as the pipeline does
    config = DPMSolverMultistepScheduler.load_config(folder, subfolder="scheduler")
    extra = {"timestep_spacing": spacing} if spacing else {}
    sched = DPMSolverMultistepScheduler.from_config(config, **extra)
    assert sched.config.algorithm_type == "dpmsolver++" and sched.config.solver_order == 2
    ref = _pipe(DDPMPipeline, ours.net, sched).__call__(batch_size=2, generator=torch.Generator().manual_seed(5),
                                                        num_inference_steps=20, output_type="pt").images
    x = run_to_end(sample(ours, sampler="dpmpp2m", steps=20, n=2, seed=5, timestep_spacing=spacing)).x_t
    assert float((_as_pipeline_output(x) * 2 - ref * 2).abs().max()) <= TOL
    raw = diffusers_loop(lambda x, t: ours.net(x, t).sample, DPMSolverMultistepScheduler.from_config(config, **extra),
                         (2, 3, 8, 8), 20, 5)
    assert rel_err(x, raw) <= TOL


def test_dynamic_thresholding_equals_diffusers(folder, ours):
    config = DDPMScheduler.load_config(folder, subfolder="scheduler")
    sched = DDPMScheduler.from_config(config, thresholding=True, dynamic_thresholding_ratio=0.9, sample_max_value=1.5)
    raw = diffusers_loop(lambda x, t: ours.net(x, t).sample, sched, (2, 3, 8, 8), 50, 6)
    x = run_to_end(sample(ours, sampler="ddpm", steps=50, n=2, seed=6, dynamic_threshold=(0.9, 1.5))).x_t
    assert rel_err(x, raw) <= TOL


class VOracle(OracleDenoiser):
    """The oracle answering in v = α·ε − σ·x_0 (to drive the v-prediction paths)."""

    def __init__(self, images, schedule):
        super().__init__(images)
        self.prediction_type, self._sched = "v_prediction", schedule

    def model_output(self, x_t, t, class_labels=None, schedule=None):
        x0 = super().model_output(x_t, t, schedule=self._sched)
        ab = torch.tensor(self._sched.alphas_cumprod)[t.cpu()].float()[:, None, None, None]
        a, s = ab.sqrt(), (1 - ab).sqrt()
        return a * (x_t - a * x0) / s - s * x0


@pytest.mark.parametrize("case", ["ddim-sample-clip", "ddim-clipped-output", "ddpm-v-large", "dpm-v"])
def test_other_prediction_types_equal_diffusers(case):
    sched = NoiseSchedule.preset("linear", T=1000)
    g = torch.Generator().manual_seed(8)
    images = torch.rand(12, 1, 8, 8, generator=g) * 2 - 1
    if case == "ddim-clipped-output":
        images = images * 1.6  # data beyond [−1, 1]: x̂_0 is clipped at most steps, so the recomputed ε̂ differs
    den = OracleDenoiser(images) if case.startswith("ddim") else VOracle(images, sched)
    ptype = den.prediction_type
    model = lambda x, t: den.model_output(x, t.reshape(1).expand(len(x)), schedule=sched)  # noqa: E731
    if case == "ddim-sample-clip":
        scheduler, kw, ours = DDIMScheduler(prediction_type=ptype, clip_sample=True), {"eta": 0.0}, {}
        steps, sampler = 50, "ddim"
    elif case == "ddim-clipped-output":
        scheduler = DDIMScheduler(prediction_type=ptype, clip_sample=True)
        kw, ours = {"eta": 0.0, "use_clipped_model_output": True}, {"use_clipped_model_output": True}
        steps, sampler = 50, "ddim"
    elif case == "ddpm-v-large":
        scheduler = DDPMScheduler(prediction_type=ptype, variance_type="fixed_large")
        kw, ours, steps, sampler = {}, {"variance_type": "fixed_large"}, 100, "ddpm"
    else:
        scheduler, kw, ours, steps, sampler = DPMSolverMultistepScheduler(prediction_type=ptype), {}, {}, 20, "dpmpp2m"
    raw = diffusers_loop(model, scheduler, (3, 1, 8, 8), steps, 9, **kw)
    x = run_to_end(sample(den, schedule=sched, sampler=sampler, steps=steps, n=3, seed=9, **ours)).x_t
    assert rel_err(x, raw) <= TOL
    if case == "ddim-clipped-output":  # and the option matters here: without it the result is another one
        plain = run_to_end(sample(den, schedule=sched, sampler=sampler, steps=steps, n=3, seed=9)).x_t
        assert rel_err(plain, raw) > 100 * TOL
