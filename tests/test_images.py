"""Image loading: every Pillow mode to RGB in [−1, 1], EXIF orientation, and one-line refusals."""
import numpy as np
import pytest
from PIL import Image

from core.images import (ImageLoadError, from_uint8, load_image, make_grid, sample_path, save_animation,
                         save_image, to_uint8)


def test_samples_ship_and_load():
    x = load_image(sample_path("chelsea"))
    assert x.shape == (300, 451, 3) and x.dtype == np.float32
    assert -1.0 <= x.min() and x.max() <= 1.0
    assert np.array_equal(to_uint8(x), np.asarray(Image.open(sample_path("chelsea")).convert("RGB")))


@pytest.mark.parametrize("mode,value,expect", [
    ("L", 255, (255, 255, 255)), ("L", 0, (0, 0, 0)), ("RGB", (10, 20, 30), (10, 20, 30)),
    ("RGBA", (0, 0, 0, 0), (255, 255, 255)),   # fully transparent → the white background
    ("RGBA", (10, 20, 30, 255), (10, 20, 30)), ("LA", (0, 255), (0, 0, 0)),
    ("CMYK", (0, 0, 0, 0), (255, 255, 255)), ("I;16", 65535, (255, 255, 255)), ("I;16", 0, (0, 0, 0)),
    ("F", 0.5, (128, 128, 128)), ("1", 1, (255, 255, 255)),
])
def test_modes_convert_to_rgb(tmp_path, mode, value, expect):
    path = tmp_path / ("img.tiff" if mode in ("F", "CMYK", "I;16") else "img.png")
    Image.new(mode, (5, 4), value).save(path)
    x = load_image(path)
    assert x.shape == (4, 5, 3)
    np.testing.assert_array_equal(to_uint8(x)[0, 0], expect)


def test_palette_with_transparency(tmp_path):
    img = Image.new("P", (4, 4), 1)
    img.putpalette([0, 0, 0, 200, 0, 0] + [0] * 762)
    img.info["transparency"] = 1
    img.save(tmp_path / "p.png", transparency=1)
    np.testing.assert_array_equal(to_uint8(load_image(tmp_path / "p.png"))[0, 0], (255, 255, 255))


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (6, 2), (0, 0, 0))
    img.putpixel((0, 0), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    img.save(tmp_path / "rot.jpg", exif=exif, quality=100)
    x = load_image(tmp_path / "rot.jpg")
    assert x.shape == (6, 2, 3)


def test_refusals_are_one_line(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("hello, not an image")
    full = tmp_path / "full.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(full)
    (tmp_path / "trunc.png").write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    Image.new("1", (9000, 8000)).save(tmp_path / "bomb.png")  # 72 MP, a few kB on disk
    cases = {"missing.png": "no such file", "": "is a folder", "empty.png": "empty file",
             "text.png": "not an image", "trunc.png": "truncated", "bomb.png": "64-megapixel limit"}
    for name, msg in cases.items():
        with pytest.raises(ImageLoadError) as e:
            load_image(tmp_path / name)
        assert msg in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_uint8_round_trip_is_exact():
    u = np.arange(256, dtype=np.uint8)
    assert np.array_equal(to_uint8(from_uint8(u)), u)


def test_save_is_atomic_and_grid_and_animation(tmp_path):
    frames = [np.full((4, 4, 3), v, np.float32) for v in (-1.0, 0.0, 1.0)]
    save_image(tmp_path / "a.png", frames[1])
    assert np.asarray(Image.open(tmp_path / "a.png"))[0, 0].tolist() == [128] * 3
    grid = make_grid(frames, ncols=3, pad=1)
    assert grid.shape == (4, 14, 3) and grid[0, 4].tolist() == [255] * 3
    save_animation(tmp_path / "a.gif", frames)
    assert Image.open(tmp_path / "a.gif").n_frames == 3
    with pytest.raises(ValueError):
        save_image(tmp_path / "bad.xyz", frames[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gif", "a.png"]  # no temp files left behind
