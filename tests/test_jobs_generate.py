"""core.jobs.generate without Qt: a run equals core.samplers.sample run directly, frame by frame; the recording's
memory budget keeps the first and the last step; the exports round-trip to the sampler's pixels; 'each class in
turn'; the live view's pacing on a fake clock."""
import numpy as np
import pytest
import torch
from PIL import Image

from core.images import batch_grid, load_image, photo_to_model_input, save_image
from core.jobs.generate import (EACH_CLASS, EXPORTS, GenerateJob, LivePacer, ModelRequests, Recording, RunFrame,
                                class_labels, export_animation, export_final, export_frame_folder, export_grid,
                                export_name, export_scale, export_writer, generate_frames, model_note, preload_model,
                                start_input)
from core.model_spec import ModelCache, cache_key
from core.models.denoiser import Denoiser
from core.samplers import sample
from core.samplers.guidance import labels_each_class
from core.schedule import NoiseSchedule, default_schedule

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors: one thread (conftest)

LINEAR = NoiseSchedule.preset("linear", T=1000)


class Shift(Denoiser):
    """A fixed, non-trivial ε-prediction: 0.3·x_t plus a per-class offset (−1 = no class → 0)."""

    def model_output(self, x_t, t, class_labels=None, schedule=None):
        out = 0.3 * x_t + 0.001 * t.float()[:, None, None, None]
        if class_labels is not None:
            out = out + 0.1 * (class_labels.float() + 1)[:, None, None, None]
        return out


def shift(**kw):
    kw = {"resolution": 6, "channels": 1, "schedule": LINEAR, "name": "shift", **kw}
    return Shift(**kw)


def job_for(den, **kw):
    return GenerateJob(model_key=("test", id(den)), loader=lambda: den, **kw)


def run_job(job, cache=None, recording=None):
    """Drive generate_frames to the end; returns (frames, final, recording)."""
    recording = recording if recording is not None else Recording()
    gen = generate_frames(job, cache or ModelCache(), recording)
    frames = []
    while True:
        try:
            frames.append(next(gen))
        except StopIteration as stop:
            return frames, stop.value, recording


def direct(den, **kw):
    steps = list(sample(den, **kw))
    return steps, steps[-1].x_t.numpy()


# ----- the run equals the sampler ------------------------------------------------------------------------------
@pytest.mark.parametrize("sampler, steps, eta", [("ddpm", 10, 0.0), ("ddim", 7, 0.5), ("dpmpp2m", 5, 0.0)])
def test_the_final_frame_and_every_step_equal_the_sampler_run_directly(sampler, steps, eta):
    den = shift()
    frames, final, rec = run_job(job_for(den, sampler=sampler, steps=steps, eta=eta, seed=3, n=4))
    ref, expected = direct(den, sampler=sampler, steps=steps, eta=eta, seed=3, n=4)
    assert np.array_equal(final, expected) and np.array_equal(rec.final, expected)
    assert [(f.index, f.total, f.t) for f in frames] == [(s.index, s.total, s.t) for s in ref]
    for f, s in zip(frames, ref):
        assert np.array_equal(f.xt, batch_grid(s.x_t)) and np.array_equal(f.x0, batch_grid(s.x0_pred))
    assert rec.frames == frames and rec.latest is frames[-1] and rec.total == steps
    assert rec.model_name == "shift" and rec.schedule_T == 1000


def test_class_labels_and_guidance_reach_the_sampler():
    den = shift(num_classes=3)
    labels = labels_each_class(5, 3)
    _, final, _ = run_job(job_for(den, sampler="ddim", steps=4, n=5, class_labels=labels, guidance=2.0))
    _, expected = direct(den, sampler="ddim", steps=4, n=5, class_labels=[0, 1, 2, 0, 1], guidance=2.0)
    _, unguided = direct(den, sampler="ddim", steps=4, n=5, class_labels=[0, 1, 2, 0, 1])
    assert np.array_equal(final, expected) and not np.array_equal(final, unguided)


def test_a_model_without_a_schedule_uses_the_jobs_or_else_ho_et_als():
    den = shift(schedule=None)
    cosine = NoiseSchedule.preset("cosine", T=200)
    _, final, rec = run_job(job_for(den, sampler="ddim", steps=6, schedule=cosine))
    assert np.array_equal(final, direct(den, schedule=cosine, sampler="ddim", steps=6)[1]) and rec.schedule_T == 200
    _, final, rec = run_job(job_for(den, sampler="ddim", steps=6))
    assert np.array_equal(final, direct(den, schedule=default_schedule(), sampler="ddim", steps=6)[1])
    assert rec.schedule_T == 1000
    # a model's own schedule wins over the job's (the window's)
    own = shift()
    _, final, _ = run_job(job_for(own, sampler="ddim", steps=6, schedule=cosine))
    assert np.array_equal(final, direct(own, sampler="ddim", steps=6)[1])


def test_denoise_from_here_starts_from_the_photo_file_or_its_pixels(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "photo.png"
    save_image(path, rng.integers(0, 256, (9, 12, 3), dtype=np.uint8))
    photo = load_image(path)
    for channels in (1, 3):
        den = shift(channels=channels)
        x_start = photo_to_model_input(photo, 6, channels)
        assert x_start.shape == (channels, 6, 6)
        _, expected = direct(den, sampler="ddim", steps=5, seed=2, x_start=x_start, t_start=300)
        for where in ({"start_path": str(path)}, {"start_array": photo}):
            job = job_for(den, sampler="ddim", steps=5, seed=2, t_start=300, **where)
            assert np.array_equal(start_input(job, den), x_start)
            frames, final, _ = run_job(job)
            assert np.array_equal(final, expected) and frames[0].t == 300
    assert start_input(job_for(den), den) is None                       # pure noise
    with pytest.raises(ValueError, match="needs a photo"):
        run_job(job_for(den, t_start=300))


def test_closing_the_generator_cancels_and_keeps_the_steps_done():
    den = shift()
    rec = Recording()
    gen = generate_frames(job_for(den, sampler="ddpm", steps=50), ModelCache(), rec)
    for _ in range(4):
        next(gen)
    gen.close()
    assert [f.index for f in rec.frames] == [1, 2, 3, 4] and rec.final is None and rec.total == 50


def test_the_cache_loads_a_model_once_and_preload_returns_only_its_name():
    den, loads = shift(), []
    job = GenerateJob(model_key=("k",), loader=lambda: loads.append(1) or den, sampler="ddim", steps=2)
    cache = ModelCache()
    assert preload_model(cache, job.model_key, job.loader) == "shift"
    run_job(job, cache)
    run_job(job, cache)
    assert len(loads) == 1 and cache.peek(("k",)) is den


def test_model_requests_resolve_the_photo_and_key_pasted_pixels_by_their_hash(tmp_path, monkeypatch):
    import core.model_spec as ms
    requests, loads = ModelRequests(), []
    load = lambda spec, device="cpu": loads.append((spec, device)) or spec   # noqa: E731
    key, loader, spec = requests("builtin:mnist", "cpu", load)
    assert key == cache_key("builtin:mnist", "cpu") and spec == "builtin:mnist"
    assert loader() == "builtin:mnist" and loads == [("builtin:mnist", "cpu")]
    path = tmp_path / "cat.png"
    save_image(path, np.zeros((4, 4, 3), np.uint8))
    key, loader, spec = requests("photo", "cpu", load, photo_path=path, photo=np.zeros((4, 4, 3), np.float32))
    assert spec == f"oracle:{path}" and key == cache_key(spec, "cpu") and loader() == spec
    with pytest.raises(ValueError, match="open a photo"):
        requests("photo", "cpu", load)
    hashed = []
    real = ms.pixels_token
    monkeypatch.setattr(ms, "pixels_token", lambda x: hashed.append(1) or real(x))
    a = np.random.default_rng(0).random((5, 5, 3), dtype=np.float32)
    k1, loader, spec = requests("photo", "cpu", load, photo=a)
    k2, _, _ = requests("photo", "cpu", load, photo=a)
    assert k1 == k2 == cache_key("photo", "cpu", pixels=a) and spec is None and len(hashed) == 2   # once, + ours
    assert requests("photo", "cpu", load, photo=a.copy())[0] == k1                 # equal pixels, equal key
    assert requests("photo", "cpu", load, photo=a + 0.5)[0] != k1
    assert loader().name == "oracle:pasted photo" and loader().resolution == 5    # the oracle over those pixels


# ----- the recording -----------------------------------------------------------------------------------------------
def frame(i, total=100, side=10):
    return RunFrame(i, total, 1000 - 10 * i, np.full((1, 1, side, side), i, np.uint8),
                    np.zeros((1, 1, side, side), np.uint8), i * 0.01)


def test_the_budget_keeps_every_kth_step_and_always_the_first_and_the_last():
    per = frame(1).nbytes
    rec = Recording(budget=20 * per)
    for i in range(1, 101):
        rec.add(frame(i))
    rec.close()
    idx = [f.index for f in rec.frames]
    assert idx[0] == 1 and idx[-1] == 100 and rec.stride == 8 and idx[:-1] == list(range(1, 101, 8))
    assert rec.nbytes == per * len(idx) <= 21 * per
    assert [int(f.xt[0, 0, 0]) for f in rec.frames] == idx
    assert rec.timeline_label(2) == f"3/{len(idx)} (1 step in 8 kept)"
    small = Recording()
    for i in range(1, 4):
        small.add(frame(i, total=3))
    small.close()
    assert [f.index for f in small.frames] == [1, 2, 3] and small.timeline_label(0) == "1/3"   # close adds nothing


def test_the_status_lines():
    f = RunFrame(4, 10, 600, np.zeros((1, 1, 2, 2), np.uint8), np.zeros((1, 1, 2, 2), np.uint8), 2.0)
    assert f.progress_line() == "step 4/10 · t = 600 · 2.0 it/s · ETA 0:03"
    rec = Recording(model_name="tiny")
    rec.add(RunFrame(10, 10, 0, f.xt_u8, f.x0_u8, 4.0))
    assert rec.done_line("ddim", 7) == "Done: 10 steps of DDIM with tiny, seed 7 (2.5 it/s)"
    den = shift(num_classes=3)
    assert model_note(den, 100) == "shift: 6×6, 1 channel, 3 classes; samples with its own schedule (T = 1000)"
    assert model_note(shift(channels=3, schedule=None), 100) == ("shift: 6×6, 3 channels; samples with the "
                                                                  "window's schedule (T = 100)")


def test_each_class_in_turn():
    assert labels_each_class(7, 3) == [0, 1, 2, 0, 1, 2, 0]
    counts = np.bincount(labels_each_class(64, 10), minlength=10)
    assert counts.max() - counts.min() <= 1 and counts.sum() == 64
    assert labels_each_class(0, 4) == [] and labels_each_class(3, 1) == [0, 0, 0]
    with pytest.raises(ValueError):
        labels_each_class(4, 0)
    assert class_labels(EACH_CLASS, 3, 4) == [0, 1, 2, 0]
    assert class_labels(2, 3, 4) == 2 and class_labels(None, 3, 4) is None
    assert class_labels(EACH_CLASS, 0, 4) is None                          # an unconditional model: no labels


# ----- exports -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def finished():
    """A finished 5-step run of a batch of 2 and the sampler's own steps."""
    den = shift()
    _, _, rec = run_job(job_for(den, sampler="ddim", steps=5, seed=1, n=2))
    steps, _ = direct(den, sampler="ddim", steps=5, seed=1, n=2)
    return rec, steps


def test_the_final_png_is_the_samplers_last_state(finished, tmp_path):
    rec, steps = finished
    export_final(tmp_path / "final.png", rec)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "final.png").convert("RGB")), batch_grid(steps[-1].x_t))


def test_an_apng_frame_is_x_t_beside_x0_enlarged_with_a_caption(finished, tmp_path):
    rec, steps = finished
    export_animation(tmp_path / "run.png", rec)
    h, w = batch_grid(steps[0].x_t).shape[:2]
    scale = export_scale(rec.frames[0])
    assert scale == -(-256 // h) and h * scale >= 256
    with Image.open(tmp_path / "run.png") as im:
        assert im.n_frames == len(steps)
        for i, s in enumerate(steps):
            im.seek(i)
            a = np.asarray(im.convert("RGB"))
            assert a.shape == (h * scale + 16, (2 * w + 4) * scale, 3)
            assert np.array_equal(a[:h * scale:scale, :w * scale:scale], batch_grid(s.x_t))
            assert np.array_equal(a[:h * scale:scale, (w + 4) * scale::scale], batch_grid(s.x0_pred))
    export_animation(tmp_path / "run.gif", rec)
    with Image.open(tmp_path / "run.gif") as im:
        assert im.n_frames == len(steps) and im.size[1] == h * scale + 16


def test_the_progression_grid_has_x_t_over_x0(finished, tmp_path):
    rec, steps = finished
    export_grid(tmp_path / "grid.png", rec)
    g = np.asarray(Image.open(tmp_path / "grid.png").convert("RGB"))
    h, w = batch_grid(steps[0].x_t).shape[:2]
    n = len(steps)
    assert g.shape == (2 * h + 4, n * w + (n - 1) * 4, 3)
    assert np.array_equal(g[:h, :w], batch_grid(steps[0].x_t))
    assert np.array_equal(g[h + 4:, -w:], batch_grid(steps[-1].x0_pred))


def test_the_frame_folder_is_complete_and_never_replaces_other_files(finished, tmp_path):
    rec, steps = finished
    out = tmp_path / "frames"
    export_frame_folder(out, rec)
    assert sorted(p.name for p in out.iterdir()) == sorted([f"frame_{i:04d}.png" for i in range(1, 6)] + ["final.png"])
    export_animation(tmp_path / "run.png", rec)
    with Image.open(tmp_path / "run.png") as im:
        im.seek(2)
        assert np.array_equal(np.asarray(Image.open(out / "frame_0003.png").convert("RGB")),
                              np.asarray(im.convert("RGB")))
    assert np.array_equal(np.asarray(Image.open(out / "final.png").convert("RGB")), batch_grid(steps[-1].x_t))
    export_frame_folder(out, rec)                                          # an earlier export is replaced
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(ValueError, match="holds other files"):
        export_frame_folder(tmp_path / "mine", rec)
    with pytest.raises(ValueError, match="is a file"):
        export_frame_folder(tmp_path / "run.png", rec)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_export_kinds_and_names(finished):
    rec, _ = finished
    assert export_writer("gif", rec) is export_animation and export_writer("frames", rec) is export_frame_folder
    with pytest.raises(ValueError, match="unknown export"):
        export_writer("bmp", rec)
    for empty in (None, Recording()):
        with pytest.raises(ValueError, match="nothing to export"):
            export_writer("gif", empty)
    unfinished = Recording(frames=list(rec.frames))
    with pytest.raises(ValueError, match="did not finish"):
        export_final("x.png", unfinished)
    assert export_name("oracle:/a/b", 3, "grid") == "generate_oracle__a_b_seed3_grid.png"
    assert export_name("tiny", 0, "frames") == "generate_tiny_seed0_frames"
    assert set(EXPORTS) == {"gif", "apng", "grid", "final", "frames"}


# ----- the live view's pacing ----------------------------------------------------------------------------------------
class Clocks:
    def __init__(self):
        self.wall = self.cpu = self.ui = 0.0

    def __call__(self):
        return (lambda: self.wall), (lambda: self.cpu), (lambda: self.ui)


def test_the_live_view_paints_within_its_share_of_the_samplers_time():
    c = Clocks()
    pacer = LivePacer(budget=0.02, duty=0.03, max_interval=0.5, clocks=c())
    assert pacer.next(new=False, first=True) == (False, 4)                # waiting for the first frame
    c.wall, c.cpu, c.ui = 0.125, 0.125, 0.0625                            # the UI is far over budget …
    assert pacer.next(new=True, first=True) == (True, 33)                 # … but the first frame is shown at once
    assert pacer.next(new=False, first=False) == (False, 33)              # nothing new: look again at 30 Hz
    c.wall = 0.25
    assert pacer.next(new=True, first=False) == (False, 100)              # over budget: wait (0.1 s at most) …
    c.wall = 0.5625
    assert pacer.next(new=True, first=False) == (False, 62)               # … until 0.5 s after the last paint
    c.wall = 0.625
    assert pacer.next(new=True, first=False) == (True, 33)                # at least twice a second
    c.wall, c.cpu = 16.0, 16.0                                             # UI 1/16 s of ~16 s work: 0.4 %
    assert pacer.next(new=True, first=False) == (True, 33)
    c.ui = 0.5                                                             # 3.2 % of the wall time: over the duty
    assert pacer.next(new=True, first=False)[0] is False


def test_the_tabs_texts_class_menu_start_and_export_targets(tmp_path):
    from core.jobs.generate import (EXPORT_MENU, SAMPLER_TIPS, TIPS, class_choices, export_target, start_from)
    from core.samplers import SAMPLERS
    assert set(SAMPLER_TIPS) == set(SAMPLERS) and "eq. 12" in SAMPLER_TIPS["ddim"]
    assert "w·(ε(x_t, c) − ε(x_t, ∅))" in TIPS["guidanceSpin"] and "√ᾱ_t·x_0" in TIPS["startCombo"]
    assert [k for k, _ in EXPORT_MENU] == list(EXPORTS)
    assert class_choices(0) == [("any (unconditional)", None)]
    assert class_choices(2) == [("any (unconditional)", None), ("each class in turn", EACH_CLASS), ("0", 0), ("1", 1)]
    photo = np.zeros((2, 2, 3), np.float32)
    assert start_from(7, tmp_path / "a.png", photo) == {"t_start": 7, "start_path": str(tmp_path / "a.png")}
    got = start_from(7, None, photo)
    assert got["t_start"] == 7 and np.array_equal(got["start_array"], photo) and got["start_array"] is not photo
    with pytest.raises(ValueError, match="needs a photo"):
        start_from(7)
    assert export_target("grid", str(tmp_path / "run"), "x") == tmp_path / "run.png"
    assert export_target("gif", str(tmp_path / "run.webp"), "x") == tmp_path / "run.webp"
    assert export_target("frames", str(tmp_path), "f") == tmp_path / "f"
    (tmp_path / "f").mkdir()
    (tmp_path / "f_2").mkdir()
    assert export_target("frames", str(tmp_path), "f") == tmp_path / "f_3"
    rec = Recording()
    assert rec.cancelled_line(3) == "cancelled at step 3/?"
    rec.total = 10
    assert rec.cancelled_line(3) == "cancelled at step 3/10"
