"""core.photo: a photo within the working size reads exactly as core.images.load_image reads it; a larger one is
downscaled while decoding (JPEG through DCT scaling) to the 2048×2048-pixel budget, keeps its orientation and its
16-bit or transparent pixels' meaning, and any decoder failure is one line naming the file."""
import struct

import numpy as np
import pytest
from PIL import Image

from core.images import ImageLoadError, load_image
from core.photo import WORK_MAX_PIXELS, load_photo, load_steps, peek_size, work_size


def gradient(h, w):
    img = np.empty((h, w, 3), np.uint8)
    img[..., 0] = np.linspace(0, 255, w).astype(np.uint8)[None, :]
    img[..., 1] = np.linspace(0, 255, h).astype(np.uint8)[:, None]
    img[..., 2] = 90
    return img


def test_the_working_size_is_a_pixel_budget_of_2048_squared():
    assert WORK_MAX_PIXELS == 2048 * 2048
    assert work_size(8000, 8000) == (2048, 2048)
    assert work_size(2048, 2048) == (2048, 2048) and work_size(300, 200) == (300, 200)
    w, h = work_size(6000, 3000)
    assert w * h <= WORK_MAX_PIXELS and abs(w / h - 2) < 0.01


def test_a_photo_within_the_budget_reads_exactly_as_load_image(tmp_path):
    path = tmp_path / "small.png"
    Image.fromarray(gradient(120, 200)).save(path)
    photo = load_photo(path)
    assert np.array_equal(photo.x0, load_image(path))
    assert photo.file_size == (200, 120) and not photo.downscaled and photo.note == ""


def test_a_large_jpeg_is_decoded_small_by_dct_scaling_then_resized(tmp_path, monkeypatch):
    path = tmp_path / "big.jpg"
    Image.fromarray(gradient(1600, 2000)).save(path, quality=90)
    from PIL.JpegImagePlugin import JpegImageFile
    drafts = []
    real = JpegImageFile.draft

    def draft(self, mode, size):
        out = real(self, mode, size)
        drafts.append((mode, size, self.size))       # the size it will decode at
        return out
    monkeypatch.setattr(JpegImageFile, "draft", draft)
    stages = []
    steps = load_steps(path, max_pixels=250 * 200)
    while True:
        try:
            stages.append(next(steps))
        except StopIteration as stop:
            photo = stop.value
            break
    assert stages == ["reading the header", "decoding", "downscaling", "converting"]
    assert drafts == [("RGB", (250, 200), (250, 200))]   # libjpeg decoded it at 1/8 scale, not at 2000×1600
    assert photo.x0.shape == (200, 250, 3) and photo.x0.dtype == np.float32
    assert photo.file_size == (2000, 1600) and photo.note == "photo 2000×1600 shown at 250×200"
    expected = np.asarray(Image.fromarray(gradient(1600, 2000)).resize((250, 200), Image.Resampling.LANCZOS))
    shown = np.round((photo.x0 + 1) * 127.5)
    assert np.abs(shown - expected).mean() < 2.0     # the same picture, smaller


def test_exif_orientation_is_applied_before_the_size_is_reported(tmp_path):
    path = tmp_path / "turned.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6                                  # rotate 90° when shown
    Image.fromarray(gradient(300, 600)).save(path, exif=exif)
    photo = load_photo(path, max_pixels=150 * 75)
    assert photo.file_size == (300, 600)              # shown upright: 300 wide, 600 high
    assert photo.x0.shape[0] > photo.x0.shape[1]


def test_16_bit_and_transparent_photos_keep_their_meaning_when_downscaled(tmp_path):
    deep = tmp_path / "deep.png"
    Image.fromarray(np.full((400, 400), 40000, np.uint16)).save(deep)   # 16-bit grey, 61% of full scale
    photo = load_photo(deep, max_pixels=100 * 100)
    assert photo.x0.shape == (100, 100, 3)
    assert np.allclose(photo.x0, 40000 / 65535 * 2 - 1, atol=2e-3)
    clear = tmp_path / "clear.png"
    rgba = np.zeros((400, 400, 4), np.uint8)
    rgba[..., 0] = 255                                 # red, fully transparent: composited over white
    Image.fromarray(rgba).save(clear)
    photo = load_photo(clear, max_pixels=100 * 100)
    assert np.allclose(photo.x0, 1.0, atol=1e-6)
    assert np.array_equal(load_photo(clear).x0, load_image(clear))


def crafted_dds(path):
    """A file Pillow takes for a DDS texture with an unknown pixel format: Image.open raises NotImplementedError."""
    header = struct.pack("<3I", 0x1007, 4, 4) + bytes(56) + struct.pack("<4I", 32, 0, 0, 0) + bytes(36)
    path.write_bytes(b"DDS " + struct.pack("<I", 124) + header)
    return path


@pytest.mark.parametrize("max_pixels", [WORK_MAX_PIXELS, 4])
def test_any_decoder_failure_is_one_line_naming_the_file(tmp_path, max_pixels):
    bad = crafted_dds(tmp_path / "crafted.png")
    with pytest.raises(NotImplementedError):
        Image.open(bad)                                # what Pillow itself does with it
    with pytest.raises(ImageLoadError) as e:
        load_photo(bad, max_pixels=max_pixels)
    msg = str(e.value)
    assert "crafted.png" in msg and "\n" not in msg and "NotImplementedError" in msg
    truncated = tmp_path / "cut.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:2000])
    with pytest.raises(ImageLoadError, match="cut.png"):
        load_photo(truncated, max_pixels=max_pixels)
    with pytest.raises(ImageLoadError, match="no such file"):
        peek_size(tmp_path / "missing.png")


def drive(job):
    """Run a worker job (a generator) to its end here, headless: (what it yielded, what it returned)."""
    stages = []
    while True:
        try:
            stages.append(next(job))
        except StopIteration as stop:
            return stages, stop.value


def test_a_prepared_photo_holds_its_noise_preview_histogram_sample_and_moments():
    import torch
    from core.forward import ForwardPreview, draw_noise
    from core.images import to_uint8
    from core.photo import prepare_photo
    from core.readout import histogram_index, moments
    from core.schedule import NoiseSchedule
    x0 = np.random.default_rng(2).uniform(-1, 1, (30, 40, 3)).astype(np.float64)   # any float dtype
    p = prepare_photo(x0, 77)
    assert p.x0.dtype == np.float32 and p.x0.flags.c_contiguous and p.seed == 77
    eps = draw_noise(x0.shape, 77).numpy()
    assert torch.equal(torch.from_numpy(p.noise), torch.from_numpy(eps))
    s = NoiseSchedule.preset("linear")
    assert np.array_equal(p.preview.render(400, s), ForwardPreview(p.x0, eps).render(400, s))
    assert np.array_equal(p.hist_index, histogram_index(x0.size))
    assert np.array_equal(p.hist_x0, p.x0.ravel()[p.hist_index].astype(np.float64))
    assert np.array_equal(p.hist_eps, eps.ravel()[p.hist_index].astype(np.float64))
    assert p.moments == moments(p.x0, eps)
    assert np.array_equal(p.x0_u8, to_uint8(p.x0)) and np.array_equal(p.noise_u8, to_uint8(eps))


def test_the_photo_and_noise_jobs_run_headless_with_their_stages(tmp_path):
    from core.photo import LoadedPhoto, noise_job, photo_job
    path = tmp_path / "big.png"
    Image.fromarray(gradient(300, 400)).save(path)
    stages, loaded = drive(photo_job(path, 5, max_pixels=200 * 150))
    assert stages == ["reading the header", "decoding", "downscaling", "converting", "preparing the noise"]
    assert isinstance(loaded, LoadedPhoto)
    assert loaded.photo.x0.shape == (150, 200, 3) and loaded.photo.file_size == (400, 300)
    assert loaded.prepared.seed == 5 and np.array_equal(loaded.prepared.x0, loaded.photo.x0)
    stages, prepared = drive(noise_job(loaded.photo.x0, 6))
    assert stages == [None] and prepared.seed == 6
    assert not np.array_equal(prepared.noise, loaded.prepared.noise)


def test_an_array_becomes_a_photo_downscaled_to_the_pixel_budget():
    from core.images import from_uint8, to_uint8
    from core.photo import photo_from_array
    small = np.random.default_rng(3).uniform(-1, 1, (20, 30, 3)).astype(np.float32)
    p = photo_from_array(small, "pasted image")
    assert np.array_equal(p.x0, small) and p.file_size == (30, 20) and str(p.path) == "pasted image"
    big = np.random.default_rng(4).uniform(-1, 1, (300, 400, 3)).astype(np.float32)
    p = photo_from_array(big, "big", max_pixels=100 * 75)
    assert p.x0.shape == (75, 100, 3) and p.file_size == (400, 300) and p.note == "photo 400×300 shown at 100×75"
    expected = from_uint8(np.asarray(Image.fromarray(to_uint8(big)).resize((100, 75), Image.Resampling.LANCZOS)))
    assert np.array_equal(p.x0, expected)
    for bad in (np.zeros((4, 4)), np.zeros((4, 4, 4)), np.zeros((0, 4, 3))):
        with pytest.raises(ValueError, match="H×W×3"):
            photo_from_array(bad)
