"""core.jobs.bound without Qt: the ELBO job's events end in the numbers core.vlb.compute_bound gives when called
directly; the image loader (a photo file or pixels, or a dataset's first n of a split) and its one-line refusals;
the model request names a pasted photo by its pixels."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core.data import load_dataset
from core.images import from_uint8, load_image, photo_to_model_input, save_image, to_uint8
from core.jobs.bound import DATASET, ElboJob, ElboProgress, ElboRun, elbo_events, load_images, model_request
from core.model_spec import PHOTO, ModelCache
from core.models.denoiser import Denoiser
from core.models.load import load_model
from core.schedule import NoiseSchedule
from core.vlb import BoundResult, compute_bound

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors: one thread (conftest)


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    rng = np.random.default_rng(3)
    path = tmp_path_factory.mktemp("photos") / "p.png"
    save_image(path, rng.integers(0, 256, (10, 10, 3), dtype=np.uint8))
    return path


class Zero(Denoiser):
    """ε̂ = 0 on 6×6 grey images, its own linear T = 12 schedule."""

    def __init__(self, channels=1, resolution=6):
        super().__init__(resolution=resolution, channels=channels, prediction_type="epsilon",
                         schedule=NoiseSchedule.preset("linear", T=12), name="zero")

    def model_output(self, x_t, t, class_labels=None, schedule=None):
        return torch.zeros_like(x_t)


def drive(events):
    """Run a job generator to its end: (the progress events, the returned value)."""
    progress = []
    try:
        while True:
            ev = next(events)
            if ev is not None:
                progress.append(ev)
    except StopIteration as stop:
        return progress, stop.value


def direct(model, x0, schedule, variance, seed) -> BoundResult:
    return [ev for ev in compute_bound(model, x0, schedule, variance, seed=seed) if isinstance(ev, BoundResult)][0]


def test_the_jobs_events_end_in_the_bound_of_compute_bound_called_directly(photo):
    model = Zero()
    job = ElboJob(model_key=("zero",), loader=lambda: model, source=DATASET, data="builtin:mnist", n=3,
                  variance="large", seed=4, schedule=NoiseSchedule.preset("cosine", T=30))
    progress, run = drive(elbo_events(job, ModelCache()))
    x0 = load_dataset("builtin:mnist", resolution=6, split="heldout", channels=1).images[:3]
    ref = direct(model, x0, model.schedule, "large", 4)   # a trained model: its own schedule, not the job's
    assert isinstance(run, ElboRun) and all(isinstance(p, ElboProgress) for p in progress) and progress
    np.testing.assert_array_equal(run.per_image, ref.per_image)
    np.testing.assert_array_equal(run.terms, ref.terms)
    assert (run.T, run.variance, run.seed, run.clip_denoised, run.dims) == \
        (ref.T, ref.variance, ref.seed, ref.clip_denoised, ref.dims) == (12, "large", 4, ref.clip_denoised, 36)
    assert not run.any_schedule and run.schedule_name == "linear"
    assert run.source == "builtin:mnist (heldout, first 3)" and run.model_name == "zero"
    assert progress[-1].done == progress[-1].total == 3 * 12
    assert progress[-1].terms is not ref.terms            # copies, not the bound's own arrays

    oracle = load_model(f"oracle:{photo}")                # an oracle takes the job's schedule
    schedule = NoiseSchedule.preset("cosine", T=20)
    job = ElboJob(model_key=("o",), loader=lambda: oracle, source=PHOTO, photo_path=str(photo), variance="small",
                  seed=1, schedule=schedule)
    _, run = drive(elbo_events(job, ModelCache()))
    x0 = photo_to_model_input(load_image(photo), oracle.resolution, oracle.channels, on_uint8_grid=True)[None]
    ref = direct(oracle, x0, schedule, "small", 1)
    np.testing.assert_array_equal(run.terms, ref.terms)
    assert run.any_schedule and run.T == 20 and run.source == f"p.png at {oracle.resolution}×{oracle.resolution}"


def test_closing_the_job_stops_it_and_a_photo_job_without_a_photo_is_refused():
    model = Zero()
    cache = ModelCache()
    events = elbo_events(ElboJob(model_key=("zero",), loader=lambda: model, source=DATASET, data="builtin:mnist"),
                         cache)
    assert next(events) is None and cache.peek(("zero",)) is model   # loaded (cached), before any batch
    events.close()
    with pytest.raises(ValueError, match="open a photo first"):
        drive(elbo_events(ElboJob(model_key=("zero",), loader=lambda: model, source=PHOTO), cache))


def test_the_loader_makes_a_photo_or_pixels_model_ready_on_the_uint8_grid(photo):
    img = load_image(photo)
    for channels in (1, 3):
        model = Zero(channels=channels, resolution=8)
        want = photo_to_model_input(img, 8, channels, on_uint8_grid=True)[None]
        x0, source = load_images(model, image=str(photo))
        np.testing.assert_array_equal(x0, want)
        assert x0.shape == (1, channels, 8, 8) and source == str(photo)
        np.testing.assert_array_equal(from_uint8(to_uint8(x0)), x0)   # on the grid u/127.5 − 1
        x0, source = load_images(model, image=img)
        np.testing.assert_array_equal(x0, want)
        assert source == "the pasted photo"


def test_the_loader_takes_a_datasets_first_n_of_a_split_and_refuses_in_one_line(photo, tmp_path):
    model = Zero()
    held = load_dataset("builtin:mnist", resolution=6, split="heldout", channels=1).images
    train = load_dataset("builtin:mnist", resolution=6, split="train", channels=1).images
    x0, source = load_images(model, data="builtin:mnist")
    np.testing.assert_array_equal(x0, held[:8])                      # default: 8 held-out digits
    assert source == "builtin:mnist (heldout, first 8)"
    x0, source = load_images(model, data="builtin:mnist", n=2, split="train")
    np.testing.assert_array_equal(x0, train[:2])
    assert source == "builtin:mnist (train, first 2)"

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("b.png", "a.png"):
        save_image(folder / name, rng.integers(0, 256, (6, 6, 3), dtype=np.uint8))
    x0, source = load_images(model, data=str(folder), n=2)
    assert x0.shape == (2, 1, 6, 6) and source == f"{folder} (all, first 2)"

    refusals = [
        (dict(image=str(photo), n=2), "--n and --split go with --data, not --image"),
        (dict(image=str(photo), split="train"), "--n and --split go with --data, not --image"),
        (dict(data="builtin:mnist", n=0), "--n must be an integer in 1…100000, got 0"),
        (dict(data="builtin:mnist", n=True), "--n must be an integer in 1…100000, got True"),
        (dict(data=str(folder), split="heldout"), "--split heldout needs builtin:mnist (a folder has no held-out "
                                                  "split)"),
        (dict(data=str(folder), n=3), f"--n 3: {folder} (all) has only 2 images"),
        (dict(), "give a photo or a dataset (--image or --data)"),
    ]
    for kwargs, message in refusals:
        with pytest.raises(ValueError) as e:
            load_images(model, **kwargs)
        assert str(e.value) == message and "\n" not in str(e.value)


def test_a_pasted_photo_is_named_by_its_pixels_and_a_photo_file_by_its_file(photo):
    a = from_uint8(np.zeros((4, 4, 3), dtype=np.uint8))
    b = a.copy()
    key_a, _ = model_request("photo", "cpu", photo=a)
    b[0, 0, 0] = 1.0
    key_b, load_b = model_request("photo", "cpu", photo=b)
    assert key_a != key_b and key_a == model_request("photo", "cpu", photo=a.copy())[0]
    want = load_images(Zero(channels=3, resolution=4), image=b)[0]
    b[...] = 0.5                                   # the loader keeps the pixels it was asked for
    np.testing.assert_array_equal(load_b().images.cpu().numpy(), want)
    key_file, _ = model_request("photo", "cpu", photo_path=photo, photo=a)
    assert key_file == model_request(f"oracle:{photo}", "cpu")[0] != key_a
    with pytest.raises(ValueError, match="open a photo first"):
        model_request("photo", "cpu")
