"""core.jobs.generate_latent headless: a pipeline run's final image equals text_to_image + the full VAE (and so
`ddpm sample --prompt`), its frames are the preview decoder's, "denoise from here" is text_to_image's
init_image/t_start, guidance parts are recorded, loading yields its stages and a failed load keeps the previous
pipeline in the shared cache; exports of a pipeline run write files."""
import shutil

import numpy as np
import pytest

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from core.images import to_uint8  # noqa: E402
from core.jobs import generate as jg  # noqa: E402
from core.jobs.generate_latent import (LatentJob, Loaded, init_image, latent_frames, pipeline_loading,  # noqa: E402
                                       size_presets, snap)
from core.jobs.pipelines import PIPELINES, loaded_pipeline  # noqa: E402
from core.latent.decoders import make_decoder  # noqa: E402
from core.latent.forward import fit_photo  # noqa: E402
from core.latent.generate import text_to_image  # noqa: E402
from core.models.checkpoint import ModelLoadError  # noqa: E402
from core.samplers import run_to_end  # noqa: E402
from sd_tiny import save_tiny_pipeline  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    return save_tiny_pipeline(tmp_path_factory.mktemp("sd") / "tiny-sd")


def _load(spec, **keep):
    gen = pipeline_loading(str(spec), "cpu", **keep)
    stages = []
    try:
        while True:
            stages.append(next(gen))
    except StopIteration as stop:
        return stop.value.pipe, stages


@pytest.fixture(scope="module")
def pipe(sd):
    return _load(sd)[0]


def _drain(gen):
    frames = []
    try:
        while True:
            f = next(gen)
            if f is not None:
                frames.append(f)
    except StopIteration as stop:
        return frames, stop.value


def test_loading_yields_its_stages_then_the_pipeline(sd):
    pipe, stages = _load(sd)
    assert [s[2] for s in stages] == ["checking the folder", "the text encoder", "the UNet", "the VAE"] or \
        stages == []   # already in the shared cache: no stages
    assert loaded_pipeline(str(sd), "cpu") is pipe


def test_final_image_equals_text_to_image_and_the_vae(pipe, sd):
    job = LatentJob(spec=str(sd), prompt="a red cat", negative_prompt="dog", guidance=3.0, height=12, width=20,
                    n=2, seed=4, sampler="ddim", steps=5, preview_share=None)
    rec = jg.Recording()
    frames, final = _drain(latent_frames(job, pipe, rec))
    last = run_to_end(text_to_image(pipe, "a red cat", "dog", guidance=3.0, height=12, width=20, n=2, seed=4,
                                    sampler="ddim", steps=5))
    ref = pipe.decode(last.x_t).clamp(-1, 1).numpy()
    assert final.shape == (2, 3, 12, 20) and np.array_equal(final, ref)
    assert np.array_equal(rec.final, ref) and len(rec) == 5 and len(frames) == 5
    dec = make_decoder(pipe, "approx")
    xt, x0 = dec.decode_step(last.x_t, last.x0_pred)
    assert np.array_equal(rec.frames[-1].x0_u8, to_uint8(x0.numpy()))
    assert np.array_equal(rec.frames[-1].xt_u8, to_uint8(ref)), "the last frame's x_t is the VAE's image"
    assert np.array_equal(jg.final_grid(rec), jg.batch_grid(ref))


def test_guidance_parts_are_recorded_and_do_not_change_the_image(pipe, sd):
    base = dict(spec=str(sd), prompt="a dog", guidance=5.0, height=8, width=8, seed=1, steps=3)
    rec = jg.Recording()
    _, with_parts = _drain(latent_frames(LatentJob(**base, guidance_parts=True), pipe, rec))
    _, plain = _drain(latent_frames(LatentJob(**base), pipe, jg.Recording()))
    assert np.array_equal(with_parts, plain)
    unc, cond = rec.frames[0].parts
    assert unc.shape == cond.shape == rec.frames[0].x0.shape and not np.array_equal(unc, cond)


def test_denoise_from_here_equals_text_to_image_with_init_image(pipe, sd):
    rng = np.random.default_rng(0)
    photo = (rng.random((20, 28, 3), dtype=np.float32) * 2 - 1)
    job = LatentJob(spec=str(sd), prompt="a cat", height=16, width=16, seed=2, steps=4, init_array=photo,
                    t_start=400)
    _, final = _drain(latent_frames(job, pipe, jg.Recording()))
    fitted = fit_photo(photo, 16)
    assert np.array_equal(init_image(job), fitted)
    last = run_to_end(text_to_image(pipe, "a cat", seed=2, steps=4, init_image=fitted, t_start=400))
    assert np.array_equal(final, pipe.decode(last.x_t).clamp(-1, 1).numpy())
    assert final.shape[-2:] == (10, 16)   # 20×28 fitted within 16, floored to the VAE's factor 2


def test_closing_mid_run_records_what_ran(pipe, sd):
    rec = jg.Recording()
    gen = latent_frames(LatentJob(spec=str(sd), prompt="x", height=8, width=8, steps=6, preview_share=None), pipe,
                        rec)
    next(gen), next(gen)
    gen.close()
    assert len(rec) == 2 and rec.final is None


def test_exports_of_a_pipeline_run_write_files(pipe, sd, tmp_path):
    rec = jg.Recording()
    _drain(latent_frames(LatentJob(spec=str(sd), prompt="a cat", height=8, width=8, n=2, steps=3,
                                   preview_share=None), pipe, rec))
    for kind in ("gif", "apng", "grid", "final"):
        out = tmp_path / f"out_{kind}{jg.EXPORTS[kind][1]}"
        jg.export_writer(kind, rec)(out, rec)
        assert out.is_file() and out.stat().st_size > 0
    folder = jg.export_frame_folder(tmp_path / "frames", rec)
    assert sorted(p.name for p in folder.iterdir()) == ["final.png", "frame_0001.png", "frame_0002.png",
                                                        "frame_0003.png"]


def test_a_failed_load_puts_the_previous_pipeline_back(pipe, sd, tmp_path):
    broken = tmp_path / "broken-sd"
    shutil.copytree(sd, broken)
    shutil.rmtree(broken / "vae")
    with pytest.raises(ModelLoadError) as e:
        _load(broken, keep=pipe, keep_spec=str(sd))
    assert "vae" in str(e.value) and "\n" not in str(e.value)
    assert loaded_pipeline(str(sd), "cpu") is pipe


def test_previews_take_at_most_their_share_of_the_sampling_time(pipe, sd):
    rec = jg.Recording()
    job = LatentJob(spec=str(sd), prompt="a cat", height=8, width=8, steps=20, preview_share=0.0)
    frames, final = _drain(latent_frames(job, pipe, rec))
    assert [f.index for f in rec.frames] == [1, 20], "a zero share decodes only the first and the last step"
    every = LatentJob(spec=str(sd), prompt="a cat", height=8, width=8, steps=20, preview_share=None)
    assert np.array_equal(final, _drain(latent_frames(every, pipe, jg.Recording()))[1])


def test_sizes_snap_to_the_vae_factor(pipe):
    assert snap(15, 8) == 16 and snap(3, 8) == 8 and snap(10_000, 8) == 2048 and snap(17, 4) == 16
    assert size_presets(pipe) == [("16×16 (native)", 16), ("512×512", 512), ("768×768", 768)]
    assert isinstance(Loaded(pipe).pipe, type(pipe)) and PIPELINES.peek(("nothing",)) is None
