"""Point sets: every preset, the photo's dark pixels, limits, CSV/NPZ round trips and one-line refusals; the MLP
trainer is deterministic and resumes exactly."""
import numpy as np
import pytest

from core.lab2d import data as pts
from core.lab2d.mlp import LearnConfig, Trainer2D
from core.schedule import NoiseSchedule

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("name", pts.PRESETS)
def test_presets(name):
    p = pts.preset(name, 500, seed=1)
    assert p.shape == (500, 2) and np.isfinite(p).all()
    assert np.abs(p).max() < 3.5
    assert np.array_equal(p, pts.preset(name, 500, seed=1))
    assert not np.array_equal(p, pts.preset(name, 500, seed=2))


def test_gaussian_preset_moments():
    p = pts.preset("gaussian", 10000, seed=0)
    assert np.allclose(p.mean(0), pts.GAUSSIAN_MEAN, atol=0.03)
    assert np.allclose(np.cov(p.T), pts.GAUSSIAN_COV, atol=0.03)
    with pytest.raises(pts.PointsError):
        pts.preset("gaussian", 10, cov=[[1, 2], [2, 1]])


def test_limits_and_unknown():
    with pytest.raises(pts.PointsError, match="10,000"):
        pts.preset("moons", 10001)
    with pytest.raises(pts.PointsError, match="unknown data preset"):
        pts.preset("spiral")
    with pytest.raises(pts.PointsError):
        pts.check_points(np.full((3, 2), np.nan))


def test_from_photo_takes_dark_pixels():
    img = np.ones((40, 60, 3), np.float32)          # white
    img[10:20, 5:15] = -1.0                           # one black square, top left
    p = pts.from_photo(img, 400, seed=0)
    scale = 4.0 / 60
    assert np.all((p[:, 0] >= (5 - 30) * scale) & (p[:, 0] <= (15 - 30) * scale))
    assert np.all((p[:, 1] <= (20 - 10) * scale) & (p[:, 1] >= (20 - 20) * scale))
    with pytest.raises(pts.PointsError, match="no dark"):
        pts.from_photo(np.ones((8, 8, 3)), 10)


@pytest.mark.parametrize("suffix", [".csv", ".npz"])
def test_save_load_round_trip(tmp_path, suffix):
    p = pts.preset("swiss", 321, seed=4)
    path = pts.save_points(tmp_path / f"p{suffix}", p)
    assert np.array_equal(pts.load_points(path), p)


def test_load_refusals(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y\n1,2\nfoo,bar\n")
    with pytest.raises(pts.PointsError, match="bad.csv"):
        pts.load_points(bad)
    big = tmp_path / "big.csv"
    np.savetxt(big, np.zeros((pts.MAX_POINTS + 1, 2)), delimiter=",")
    with pytest.raises(pts.PointsError, match="at most"):
        pts.load_points(big)
    with pytest.raises(pts.PointsError, match="no such file"):
        pts.load_points(tmp_path / "none.npz")
    headerless = tmp_path / "h.csv"
    headerless.write_text("1,2\n3,4\n")
    assert pts.load_points(headerless).tolist() == [[1, 2], [3, 4]]


def test_trainer_is_deterministic_and_resumes_exactly():
    s = NoiseSchedule.preset("linear", T=100)
    p = pts.preset("moons", 200, seed=0)
    cfg = dict(steps=30, batch_size=64, hidden=16, layers=2, report_every=10)
    a = Trainer2D(p, s, LearnConfig(**cfg))
    losses_a = [ev.loss for ev in a.run()]
    b = Trainer2D(p, s, LearnConfig(**cfg))
    gen = b.run()
    first = [next(gen).loss for _ in range(12)]
    gen.close()                                        # Stop at a yield …
    rest = [ev.loss for ev in b.run()]                 # … and Resume
    assert losses_a == first + rest
    wa, wb = a.weights(), b.weights()
    assert all(np.array_equal(wa[k], wb[k]) for k in wa)
    assert len(losses_a) == 30 and np.isfinite(losses_a).all()
