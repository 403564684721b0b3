"""The bound in latent space (core.vlb.latent, ddpm elbo --model SD), on the tiny random pipeline, with independent
checks: a UNet replaced by the exact ε of a single latent has KL terms that vanish (σ² = β̃) or equal the variance
mismatch in closed form (σ² = β); L_T is the closed-form KL; L_0 is the Gaussian log-density torch.distributions
gives (it can be negative); the terms sum to the total; the CLI's --json has stable keys and the core's numbers."""
import copy
import dataclasses
import json
import math

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from core.cli import main  # noqa: E402
from core.images import save_image  # noqa: E402
from core.jobs.bound import ElboProgress, ElboRun, ElboStage, LatentElboJob, latent_elbo_events, load_latent_images  # noqa: E402,E501
from core.jobs.pipelines import PIPELINES, loaded_pipeline  # noqa: E402
from core.latent.pipeline import LOAD_STAGES, load_pipeline  # noqa: E402
from core.vlb import gaussian_log_likelihood, noise_seed  # noqa: E402
from core.vlb.latent import (BoundEstimate, LatentBound, compute_latent_bound, encode_latents,  # noqa: E402
                             estimate_seconds, latent_batch_size, latent_bound, latent_bound_events,
                             prompt_embeddings)
from conftest import save_tiny_unet  # noqa: E402
from sd_tiny import save_tiny_pipeline  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
LN2 = math.log(2.0)


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    return save_tiny_pipeline(tmp_path_factory.mktemp("sd") / "tiny-sd")


@pytest.fixture(scope="module")
def pipe(sd):
    return load_pipeline(sd)


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("photo") / "photo.png"
    save_image(path, np.random.default_rng(3).integers(0, 256, (16, 16, 3), dtype=np.uint8))
    return path


@pytest.fixture(scope="module")
def pixels(pipe, photo):
    return load_latent_images(pipe, image=str(photo))[0]


class ExactEps(torch.nn.Module):
    """The exact ε of one latent z_0: ε = (z_t − √ᾱ_t z_0) / √(1 − ᾱ_t), so x̂_0 = z_0 and μ_θ = μ̃_t."""

    def __init__(self, z0: torch.Tensor, schedule):
        super().__init__()
        self.z0 = z0.double()
        self.a = torch.tensor(schedule.sqrt_alphas_cumprod, dtype=torch.float64)
        self.s = torch.tensor(schedule.sqrt_one_minus_alphas_cumprod, dtype=torch.float64)

    def forward(self, x, t, encoder_hidden_states=None, return_dict=False):
        a, s = self.a[t.cpu()].view(-1, 1, 1, 1), self.s[t.cpu()].view(-1, 1, 1, 1)
        return ((x.double() - a * self.z0) / s).float(), None


def exact_denoiser(pipe, z0):
    den = copy.copy(pipe.denoiser)
    den.net = ExactEps(z0, den.schedule)
    return den


def test_the_exact_eps_of_one_latent_has_no_kl_and_closed_form_ends(pipe, pixels):
    z0, _ = encode_latents(pipe, pixels)
    den, s = exact_denoiser(pipe, z0), pipe.denoiser.schedule
    r = list(compute_latent_bound(den, z0, prompt_embeddings(pipe, ""), variance="small", batch_size=200))[-1]
    assert r.per_image.shape == (1, s.T + 1) and r.dims == z0[0].numel()
    assert np.abs(r.terms[1:-1]).max() < 1e-6                      # every L_{t−1} vanishes
    ab = float(s.alphas_cumprod[-1])                                # L_T, closed form per dimension
    z = z0.numpy()
    prior = 0.5 * np.mean(ab * z ** 2 + (1 - ab) - 1 - math.log(1 - ab)) / LN2
    assert r.prior == pytest.approx(prior, rel=1e-9)
    sigma0 = math.sqrt(s.posterior_variance[1])                     # L_0: −log N(z_0; z_0, σ_0²), a density
    assert r.decoder == pytest.approx(0.5 * math.log(2 * math.pi * sigma0 ** 2) / LN2, rel=1e-6)
    assert r.decoder < 0                                            # … which can be (and here is) negative
    assert r.bits_per_dim == pytest.approx(float(r.terms.sum()), rel=1e-12)


def test_with_large_variance_the_kl_terms_are_the_variance_mismatch(pipe, pixels):
    z0, _ = encode_latents(pipe, pixels)
    den, s = exact_denoiser(pipe, z0), pipe.denoiser.schedule
    r = list(compute_latent_bound(den, z0, prompt_embeddings(pipe, ""), variance="large", batch_size=250))[-1]
    b, bt = s.betas[1:], s.posterior_variance[1:]
    expected = 0.5 * (np.log(b / bt) + bt / b - 1) / LN2
    np.testing.assert_allclose(r.terms[1:-1], expected, rtol=1e-5, atol=1e-9)


def test_l0_is_the_gaussian_density_of_torch_distributions(pipe, pixels):
    x, m, ls = torch.randn(50, dtype=torch.float64), torch.randn(50, dtype=torch.float64), torch.randn(50) * 0.5
    ref = torch.distributions.Normal(m, torch.exp(ls.double())).log_prob(x)
    torch.testing.assert_close(gaussian_log_likelihood(x, m, ls), ref, rtol=1e-12, atol=1e-12)
    # and the bound's L_0 for the real (random) UNet with a prompt, from scratch
    z0, _ = encode_latents(pipe, pixels)
    s, den = pipe.denoiser.schedule, pipe.denoiser
    emb = prompt_embeddings(pipe, "a red cat")
    r = list(compute_latent_bound(den, z0, emb, seed=4))[-1]
    eps = torch.randn(z0.shape[1:], generator=torch.Generator().manual_seed(noise_seed(4, 0, 0)), dtype=torch.float64)
    a, sg = float(s.sqrt_alphas_cumprod[0]), float(s.sqrt_one_minus_alphas_cumprod[0])
    z1 = (a * z0 + sg * eps).float()
    with torch.inference_mode():
        e = den.net(z1, torch.tensor([0]), encoder_hidden_states=emb, return_dict=False)[0].double()
    mean = (z1.double() - sg * e) / a                               # μ_θ(z_1, 1) = x̂_0 at the first step
    nll = -torch.distributions.Normal(mean, math.sqrt(s.posterior_variance[1])).log_prob(z0).mean() / LN2
    assert r.decoder == pytest.approx(float(nll), rel=1e-6)         # (float32 UNet: batch of 125 vs 1)
    uncond = list(compute_latent_bound(den, z0, prompt_embeddings(pipe, ""), seed=4))[-1]
    assert uncond.bits_per_dim != r.bits_per_dim                    # the prompt conditions the one model


def test_events_encoding_estimate_progress_then_the_result(pipe, pixels):
    events = list(latent_bound_events(pipe, pixels, "a dog", seed=1))
    assert isinstance(events[0], str) and isinstance(events[1], BoundEstimate)
    assert isinstance(events[-1], LatentBound)
    est, b = events[1], events[-1]
    assert est.batch_size == latent_batch_size(b.latent_shape) and est.calls == math.ceil(1000 / est.batch_size)
    assert est.seconds == pytest.approx(est.call_seconds * est.calls)
    done = [e.done for e in events[2:-1]]
    assert done == sorted(done) and done[-1] == 1000
    z0, psnr = encode_latents(pipe, pixels)
    assert b.latent_shape == tuple(z0.shape[1:]) and b.psnr_db.tolist() == pytest.approx(psnr.tolist())
    rec = pipe.decode(z0.float()).clamp(-1, 1).double()             # PSNR of the VAE's reconstruction, directly
    mse = float(((rec - pixels.double()) ** 2).mean())
    assert b.vae_psnr_db == pytest.approx(10 * math.log10(4 / mse), rel=1e-9)
    again = latent_bound(pipe, pixels, "a dog", seed=1, estimate=False)
    np.testing.assert_array_equal(again.result.per_image, b.result.per_image)


def test_closing_the_generator_stops_the_work(pipe, pixels):
    calls = []
    net = pipe.denoiser.net
    hook = net.register_forward_hook(lambda *a: calls.append(1))
    try:
        events = latent_bound_events(pipe, pixels, estimate=False, batch_size=10)
        for ev in events:
            if getattr(ev, "done", 0) >= 20:
                break
        events.close()
        assert len(calls) == 2
    finally:
        hook.remove()


JSON_KEYS = {"bits_per_dim", "terms", "decoder_bits_per_dim", "kl_bits_per_dim", "prior_bits_per_dim",
             "per_image_bits_per_dim", "n_images", "T", "dims", "variance", "clip_denoised", "seed", "schedule",
             "space", "bounds", "decoder", "prompt", "guidance", "latent_shape", "scaling_factor", "vae_psnr_db",
             "per_image_vae_psnr_db", "estimate_seconds", "model", "images", "seconds"}


def run_cli(capsys, *argv):
    code = main(["elbo", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_json_keys_are_stable_and_equal_the_core_function(capsys, sd, pipe, photo, pixels):
    code, out, err = run_cli(capsys, "--model", str(sd), "--image", str(photo), "--prompt", "a cat", "--seed", "2",
                             "--json")
    assert code == 0
    d = json.loads(out)
    assert set(d) == JSON_KEYS
    assert "estimate" in err                                        # printed before the run
    ref = latent_bound(pipe, pixels, "a cat", seed=2).to_dict()
    for k in ("terms", "per_image_bits_per_dim", "per_image_vae_psnr_db"):
        np.testing.assert_allclose(d[k], ref[k], rtol=1e-12)
    for k in ("bits_per_dim", "decoder_bits_per_dim", "kl_bits_per_dim", "prior_bits_per_dim", "vae_psnr_db"):
        assert d[k] == pytest.approx(ref[k], rel=1e-12)
    assert {k: d[k] for k in ("n_images", "T", "dims", "variance", "space", "prompt", "latent_shape")} == \
        {k: ref[k] for k in ("n_images", "T", "dims", "variance", "space", "prompt", "latent_shape")}
    assert sum(d["terms"]) == pytest.approx(d["bits_per_dim"], rel=1e-12)


def test_cli_summary_says_what_it_bounds(capsys, sd, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        save_image(folder / f"{i}.png", np.random.default_rng(i).integers(0, 256, (20, 20, 3), dtype=np.uint8))
    code, out, err = run_cli(capsys, "--model", str(sd), "--data", str(folder), "--n", "2")
    assert code == 0, err
    for text in ("bits/latent-dim", "in latent space", "not −log p(pixels)", "PSNR", "continuous",
                 "may be negative", "'' (unconditional)", "guidance does not enter", "on 2 images"):
        assert text in out
    assert err.splitlines()[0].startswith("estimate ≈")


@pytest.mark.parametrize("argv, message", [
    (["--prompt", "x"], "--prompt goes with a Stable Diffusion pipeline"),
])
def test_a_prompt_for_a_pixel_model_exits_2(capsys, tmp_path, photo, argv, message):
    model = save_tiny_unet(tmp_path / "m", T=10)
    code, out, err = run_cli(capsys, "--model", str(model), "--image", str(photo), *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_a_pipeline_refuses_another_schedule(capsys, sd, photo):
    code, out, err = run_cli(capsys, "--model", str(sd), "--image", str(photo), "--schedule", "linear")
    assert code == 2 and "tied to its own schedule" in err


def test_the_job_loads_through_the_shared_cache_and_equals_core(sd, photo):
    PIPELINES.clear()
    job = LatentElboJob(spec=str(sd), device="cpu", source="photo", photo_path=str(photo), prompt="a cat", seed=3)
    events = latent_elbo_events(job)
    seen = []
    try:
        while True:
            seen.append(next(events))
    except StopIteration as stop:
        run = stop.value
    stages = [e.text for e in seen if isinstance(e, ElboStage)]
    assert stages[:4] == [f"Loading the pipeline: {s}…" for s in LOAD_STAGES]
    assert any(e.note.startswith("estimate ≈") for e in seen if isinstance(e, ElboStage))
    assert all(e.note.startswith("estimate ≈") for e in seen if isinstance(e, ElboProgress))
    assert isinstance(run, ElboRun) and run.latent and run.prompt == "a cat" and run.source.startswith("photo.png")
    cached = loaded_pipeline(str(sd), "cpu")
    ref = latent_bound(cached, load_latent_images(cached, image=str(photo))[0], "a cat", seed=3, estimate=False)
    np.testing.assert_array_equal(run.per_image, ref.result.per_image)
    assert run.vae_psnr_db == pytest.approx(ref.vae_psnr_db)
    again = list(latent_elbo_events(dataclasses.replace(job, seed=4)))
    assert not any(isinstance(e, ElboStage) and e.text.startswith("Loading") for e in again)  # loaded once
    PIPELINES.clear()


def test_estimate_times_one_call_and_counts_the_calls(pipe):
    est = estimate_seconds(pipe.denoiser, (4, 8, 8), prompt_embeddings(pipe, ""), n_images=3, T=1000, batch_size=7)
    assert est.batch_size == 7 and est.calls == math.ceil(3000 / 7) and est.call_seconds > 0
    assert "one UNet call on 7 latents" in est.line()
