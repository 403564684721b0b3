"""core.jobs.bound without Qt: the ELBO job's events end in the numbers core.vlb.compute_bound gives when called
directly; the image loader (a photo file or pixels, or a dataset's first n of a split) and its one-line refusals;
the model request names a pasted photo by its pixels; what the tab says about a bound (totals, hover, status lines)
and the plot's range and nearest point."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core.data import load_dataset
from core.images import from_uint8, load_image, photo_to_model_input, save_image, to_uint8
from core.jobs.bound import (DATASET, ElboJob, ElboProgress, ElboRun, done_line, elbo_events, format_bits, hover_text,
                             load_images, model_note, model_request, nearest_term, progress_line, totals_text,
                             view_range)
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


def a_run(terms, **kw) -> ElboRun:
    terms = np.asarray(terms, dtype=float)
    fields = dict(terms=terms, per_image=terms[None], model_name="m", source="s <1>", schedule_name="linear",
                  T=len(terms) - 1, variance="small", seed=0, clip_denoised=True, dims=4, any_schedule=True,
                  seconds=1.25)
    return ElboRun(**{**fields, **kw})


def test_what_the_tab_says_about_a_bound_totals_hover_and_status_lines():
    run = a_run([1.0, 0.5, 0.0, 2.5])                              # L_0, L_1, L_2 (0), L_T; T = 3
    total, breakdown = totals_text(run, None, None)
    assert total == "L<sub>VLB</sub> = <b>4</b> bits/dim"
    assert "L<sub>0</sub> 1 (25 %)" in breakdown and "Σ L<sub>1</sub>…L<sub>2</sub> 0.5 (12.5 %)" in breakdown
    assert "s &lt;1&gt;" in breakdown and "16 bits per image" in breakdown          # escaped; 4 bits/dim · 4
    assert "1 KL term is exactly 0 (not drawn on the log axis)" in breakdown
    total, _ = totals_text(run, a_run([1.0, 1.0, 1.0, 2.5]), None)
    assert "(previous 5.5; −1.5)" in total
    live = ElboProgress(2, 3, np.array([1.0, np.nan, 0.5, 2.5]), 1.0)
    assert totals_text(run, None, live) == ("L<sub>VLB</sub> = … &nbsp;<span style='color:#555'>(3 of 4 terms so "
                                            "far: 4 bits/dim)</span>", None)            # the breakdown stays
    assert totals_text(None, None, None) == ("L<sub>VLB</sub> = – bits/dim", "")

    line, box = hover_text(run, 3, a_run([1.0, 1.0, 2.0]))
    assert line.startswith("t = 4: L<sub>T</sub> = KL(q(x<sub>T</sub> | x<sub>0</sub>) ‖ N(0, I)) = <b>2.5</b>")
    assert "(the prior), <b>62.5 %</b> of the total (previous: 2)" in line and "62.5 % of total" in box
    assert hover_text(run, 1, None)[0].startswith("t = 2: L<sub>1</sub> = KL(q(x<sub>1</sub> | x<sub>2</sub>, "
                                                  "x<sub>0</sub>) ‖ p<sub>θ</sub>(x<sub>1</sub> | x<sub>2</sub>))")
    assert [format_bits(v) for v in (0.0, 1e-14, 1234.5, float("nan"))] == ["0", "1.000e-14", "1234", "–"]

    assert progress_line(ElboProgress(0, 30, np.full(4, np.nan), 0.0)) == "Computing the bound: 30 terms…"
    assert progress_line(ElboProgress(10, 30, np.full(4, np.nan), 2.0)) == "10/30 terms · 5 terms/s · ETA 0:04"
    tied = a_run([1.0, 0.5, 0.0, 2.5], any_schedule=False)
    assert done_line(run, None, False) == "Done: m on s <1>, 1 image, 3 timesteps, seed 0 (1.2 s)"
    assert done_line(tied, tied, True).endswith("so a schedule edit does not move its bound.")
    assert not done_line(tied, tied, False).endswith("bound.")
    assert model_note(None, NoiseSchedule.preset("cosine", T=40), True).startswith(
        "Accepts any schedule: the bound uses the window's (cosine, T = 40).")
    assert model_note(Zero(), None, False).startswith("zero: 6×6, 1 channel. Tied to its training schedule "
                                                      "(linear, T = 12)")


def test_the_plot_range_shows_every_term_and_the_nearest_point_is_found_in_screen_pixels():
    terms = np.array([1e-2, 1e-6, 0.0, np.nan, 1.0])
    (x0, x1), (lo, hi), ticks = view_range([terms], log_x=True)
    assert (x0, x1, lo, hi) == (0.0, np.log10(5), -6.0, 0.0)
    assert ticks[0] == [(0.0, "1"), (1.0, "10")] and len(ticks[1]) == 8
    assert view_range([np.array([1.0, 1.0, 1.0])], log_x=False) == ((1.0, 3.0), (-1.0, 1.0), None)  # ≥ 2 decades
    assert view_range([], log_x=False)[:2] == ((1.0, 1001.0), (-6.0, 2.0))
    pixel = (0.01, 0.01)                                   # view units per screen pixel
    assert nearest_term(terms, 1.0, -6.0, pixel, log_x=False) is None      # 100 px from L_1 at (2, −6)
    assert nearest_term(terms, 2.05, -6.05, pixel, log_x=False) == 1       # 7 px
    assert nearest_term(terms, 3.0, 0.0, pixel, log_x=False) is None       # L_2 = 0 and L_3 = NaN are not drawn
    assert nearest_term(terms, np.log10(5), 0.0, pixel, log_x=True) == 4


def test_the_tabs_texts_and_what_the_plot_draws():
    from core.jobs.bound import (OPEN_FOLDER, SOURCES, TIPS, VARIANCES, hover_anchor, kl_line, point_xy,
                                 schedule_changed_line, term_points)
    assert [spec for _, spec, _ in SOURCES] == [PHOTO, "builtin:mnist", OPEN_FOLDER]
    assert [v for _, v in VARIANCES] == [None, "small", "large"]
    assert "eq. 9–14" in TIPS["elboPlot"] and "β̃_t = (1−ᾱ_{t−1})/(1−ᾱ_t)·β_t" in TIPS["elboVarianceCombo"]
    terms = np.array([0.5, 0.0, np.nan, 2.0, -1.0, 0.25])          # L_0 … L_5 (T = 5)
    t, y = kl_line(terms)
    assert np.array_equal(t, [2, 3, 4, 5]) and np.array_equal(y, [np.nan, np.nan, 2.0, np.nan], equal_nan=True)
    assert [a.tolist() for a in term_points(terms, [0])] == [[1.0], [0.5]]
    assert [a.tolist() for a in term_points(terms, [0, 5])] == [[1.0, 6.0], [0.5, 0.25]]
    assert [a.tolist() for a in term_points(terms, [1, 2, 4])] == [[], []]   # 0, NaN, < 0: not on a log axis
    assert point_xy(9, 100.0, log_x=True) == (1.0, 2.0) and point_xy(9, 100.0, log_x=False) == (10.0, 2.0)
    view = ((0.0, 3.0), (-4.0, 0.0))
    assert hover_anchor(2.5, -1.0, view) == (1.05, -0.1) and hover_anchor(0.5, -3.0, view) == (-0.05, 1.1)
    line = schedule_changed_line(NoiseSchedule.preset("cosine", T=50))
    assert line.startswith("The schedule changed (cosine, T = 50): Recompute")
    run = ElboRun(terms=np.zeros(6), per_image=np.zeros((3, 6)), model_name="m", source="s", schedule_name="linear",
                  T=5, variance="small", seed=0, clip_denoised=True, dims=4, any_schedule=True, seconds=1.0)
    assert run.evaluations == 15                                       # N·T: L_T needs no model
