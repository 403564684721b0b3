"""Stable Diffusion in core against diffusers' own pipelines: the same folder, prompt, negative prompt, seed, steps,
guidance and batch give the same final image (max abs difference ≤ 1e-4 on the [0, 1] image).

Tiny random pipelines (tests/sd_tiny.py: SD 1.x-style ε, SD 2.x-style v-prediction, an SD-Turbo-style Euler
config with trailing spacing) are written once per module; ``load_pipeline`` reads them, and diffusers'
``StableDiffusionPipeline`` / ``StableDiffusionImg2ImgPipeline`` load the same folder, with the scheduler swapped
by ``Scheduler.from_config(pipe.scheduler.config)`` as diffusers' users do. Ours is ``pipe.decode(last.x_t)/2+0.5``
clamped, theirs ``output_type="np"``.

None of these settings is chaotic: the SD configs never clip x̂_0 (``clip_sample`` false), so the random UNet is
not iterated through a saturating clip (what makes clipped DDIM η = 0 chaotic in test_samplers_parity.py), and
measured differences are float32 rounding, ~1e-6 even at w = 7.5 over 50 DDPM steps. Each image is checked to be
informative (its pixels inside (0, 1), so the final clamp hides nothing) and the settings that should change the
image are checked to change it by far more than the tolerance.
"""
import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")
from diffusers import (DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler,  # noqa: E402
                       StableDiffusionImg2ImgPipeline, StableDiffusionPipeline)
from sd_tiny import save_tiny_pipeline  # noqa: E402

from core.latent.generate import text_to_image  # noqa: E402
from core.latent.pipeline import load_pipeline  # noqa: E402
from core.samplers import run_to_end  # noqa: E402

TOL = 1e-4
PROMPT, NEGATIVE = "a red cat", "dog"
SCHEDULERS = {"ddim": DDIMScheduler, "ddpm": DDPMScheduler, "dpmpp2m": DPMSolverMultistepScheduler}

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),  # tiny tensors: one thread (conftest)
              # diffusers' own deprecation notes on the reference side (old steps_offset, one init image for 2)
              pytest.mark.filterwarnings("ignore::FutureWarning"),
              pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")]  # DPM's numpy 2 note


class Pair:
    """Our pipeline and diffusers' on the same folder."""

    def __init__(self, folder, cls=StableDiffusionPipeline):
        self.folder = folder
        self.ours = load_pipeline(folder)
        self.ref = cls.from_pretrained(str(folder), safety_checker=None, requires_safety_checker=False)
        self.ref.set_progress_bar_config(disable=True)
        self.config = self.ref.scheduler.config

    def theirs(self, sampler, steps, prompt=PROMPT, negative=NEGATIVE, guidance=7.5, n=2, seed=3, eta=0.0, **kw):
        self.ref.scheduler = SCHEDULERS[sampler].from_config(self.config)
        if sampler == "ddim":
            kw["eta"] = eta
        n_per = n // (1 if isinstance(prompt, str) else len(prompt))
        return self.ref(prompt, negative_prompt=negative, num_inference_steps=steps, guidance_scale=guidance,
                        num_images_per_prompt=n_per, generator=torch.Generator().manual_seed(seed),
                        output_type="np", **kw).images

    def mine(self, sampler, steps, prompt=PROMPT, negative=NEGATIVE, guidance=7.5, n=2, seed=3, eta=0.0, **kw):
        last = run_to_end(text_to_image(self.ours, prompt, negative_prompt=negative, guidance=guidance, n=n,
                                        seed=seed, sampler=sampler, steps=steps, eta=eta, **kw))
        assert last.index == last.total
        return as_image(self.ours.decode(last.x_t))


def as_image(x):
    return (x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def assert_same(mine, theirs):
    assert mine.shape == theirs.shape
    assert ((theirs > 0) & (theirs < 1)).mean() > 0.9 and theirs.std() > 0.05  # an image, not a clamped blank
    assert float(np.abs(mine - theirs).max()) <= TOL


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("sd-parity")


@pytest.fixture(scope="module")
def sd1(root):
    """SD 1.x-style: ε-prediction, scaled_linear betas, leading spacing, steps_offset 1, set_alpha_to_one false."""
    return Pair(save_tiny_pipeline(root / "sd1"))


@pytest.fixture(scope="module")
def sd2v(root):
    """SD 2.x (768-v)-style: the same config with v-prediction."""
    return Pair(save_tiny_pipeline(root / "sd2v", seed=1, prediction_type="v_prediction"))


@pytest.fixture(scope="module")
def turbo(root):
    """SD-Turbo-style: an EulerDiscreteScheduler config with trailing spacing, run with guidance 0, 1–4 steps."""
    return Pair(save_tiny_pipeline(root / "turbo", seed=2, scheduler_class="EulerDiscreteScheduler",
                                   scheduler_config=dict(timestep_spacing="trailing")))


@pytest.mark.parametrize("sampler,steps,eta,guidance", [
    ("ddim", 20, 0.0, 7.5), ("ddim", 20, 1.0, 7.5), ("ddpm", 50, 0.0, 7.5), ("dpmpp2m", 20, 0.0, 7.5),
    ("ddim", 20, 0.0, 1.0), ("ddpm", 50, 0.0, 1.0), ("dpmpp2m", 20, 0.0, 1.0)])
def test_text_to_image_equals_stable_diffusion_pipeline(sd1, sampler, steps, eta, guidance):
    batches = []
    hook = sd1.ours.denoiser.net.register_forward_pre_hook(lambda m, args: batches.append(args[0].shape[0]))
    try:
        mine = sd1.mine(sampler, steps, guidance=guidance, eta=eta)
    finally:
        hook.remove()
    assert batches == [4 if guidance > 1 else 2] * steps  # guided: one doubled call a step; w = 1: one plain call
    assert_same(mine, sd1.theirs(sampler, steps, guidance=guidance, eta=eta))


@pytest.mark.parametrize("sampler,steps", [("ddim", 20), ("ddpm", 50), ("dpmpp2m", 20)])
def test_v_prediction_equals_stable_diffusion_pipeline(sd2v, sampler, steps):
    assert sd2v.ours.denoiser.prediction_type == "v_prediction"
    assert_same(sd2v.mine(sampler, steps), sd2v.theirs(sampler, steps))


@pytest.mark.parametrize("sampler,steps", [("ddim", 1), ("ddim", 4), ("ddpm", 4), ("dpmpp2m", 4)])
def test_turbo_style_trailing_few_steps_no_guidance(turbo, sampler, steps):
    assert turbo.ours.denoiser.timestep_spacing == "trailing"
    mine = turbo.mine(sampler, steps, guidance=0.0, negative=None)
    assert_same(mine, turbo.theirs(sampler, steps, guidance=0.0, negative=None))


@pytest.mark.parametrize("sampler,height,width,guidance", [("ddim", 16, 24, 7.5), ("dpmpp2m", 24, 16, 3.0)])
def test_non_square_images(sd1, sampler, height, width, guidance):
    mine = sd1.mine(sampler, 20, guidance=guidance, height=height, width=width)
    assert mine.shape == (2, height, width, 3)
    assert_same(mine, sd1.theirs(sampler, 20, guidance=guidance, height=height, width=width))


def test_one_prompt_per_group_of_images(sd1):
    prompts, negatives = ["a red cat", "a dog"], ["dog", "cat"]
    mine = sd1.mine("ddim", 10, prompt=prompts, negative=negatives, n=4)
    assert_same(mine, sd1.theirs("ddim", 10, prompt=prompts, negative=negatives, n=4))
    assert np.abs(mine[1] - mine[2]).max() > 100 * TOL  # the groups differ in prompt (and noise)


@pytest.fixture(scope="module")
def photo():
    return np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def sd1_img2img(sd1):
    return Pair(sd1.folder, StableDiffusionImg2ImgPipeline)


@pytest.mark.parametrize("sampler,steps,strength", [("ddim", 20, 0.6), ("ddpm", 50, 0.6), ("dpmpp2m", 20, 0.6),
                                                    ("ddim", 10, 1.0)])
def test_img2img_equals_img2img_pipeline(sd1_img2img, photo, sampler, steps, strength):
    from PIL import Image
    pair = sd1_img2img
    steps_run = []
    mine = pair.mine(sampler, steps, init_image=photo, strength=strength)
    for step in text_to_image(pair.ours, PROMPT, n=2, sampler=sampler, steps=steps, init_image=photo,
                              strength=strength):
        steps_run.append(step.t)
        break
    theirs = pair.theirs(sampler, steps, image=Image.fromarray(photo), strength=strength)
    assert_same(mine, theirs)
    pair.ref.scheduler.set_timesteps(steps)
    assert steps_run[0] == int(pair.ref.scheduler.timesteps[steps - int(steps * strength)])


def test_the_text_condition_matters(sd1):
    base = sd1.mine("ddim", 10)
    assert np.abs(sd1.mine("ddim", 10, prompt="a dog") - base).max() > 100 * TOL
    assert np.abs(sd1.mine("ddim", 10, negative="cat") - base).max() > 100 * TOL  # the negative side at w > 1
    assert np.abs(sd1.mine("ddim", 10, seed=4) - base).max() > 100 * TOL
    assert np.abs(sd1.mine("ddim", 10) - base).max() == 0  # and the same settings repeat exactly


def test_a_prompt_longer_than_the_tokenizer_warns_and_is_cut_as_diffusers_does(sd1):
    long = " ".join(["red cat"] * 20)  # 40 words: far beyond the tiny tokenizer's 16 tokens
    assert len(sd1.ours.tokenizer(long).input_ids) > sd1.ours.tokenizer.model_max_length
    with pytest.warns(UserWarning, match="longer than the text encoder's 16 tokens"):
        mine = sd1.mine("ddim", 10, prompt=long)
    assert_same(mine, sd1.theirs("ddim", 10, prompt=long))
