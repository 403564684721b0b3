"""core.latent.decoders: the three latent → pixel decoders (full VAE, TAESD, the fitted linear map), the fit's
cache in the app's cache folder, and core.app_cache."""
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from core import app_cache  # noqa: E402
from core.latent import decoders as D  # noqa: E402
from core.latent.pipeline import load_pipeline  # noqa: E402
from core.models.checkpoint import ModelLoadError  # noqa: E402
from tests.sd_tiny import save_tiny_pipeline  # noqa: E402


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    torch.set_num_threads(1)
    return load_pipeline(save_tiny_pipeline(tmp_path_factory.mktemp("sd") / "tiny-sd"))


@pytest.fixture(autouse=True)
def _private_caches(tmp_path, monkeypatch, request):
    """Our cache and every Hugging Face cache root point into tmp_path: no test sees or writes the real ones; the
    module's pipeline starts each test without the decoders an earlier test made for it."""
    if "pipe" in request.fixturenames:
        request.getfixturevalue("pipe").__dict__.pop("_decoders", None)
    monkeypatch.setenv("DDPM_STUDIO_CACHE", str(tmp_path / "app-cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for k in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))


def latents(seed=0, n=2, h=8, w=6):
    return torch.randn(n, 4, h, w, generator=torch.Generator().manual_seed(seed))


def tree(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two images in [−1, 1] (peak-to-peak 2)."""
    mse = float(((a.double() - b.double()) ** 2).mean())
    return 10 * np.log10(4.0 / mse) if mse > 0 else float("inf")


def count_decodes(monkeypatch, pipe) -> list:
    calls = []
    real = type(pipe).decode

    def counting(z):
        calls.append(tuple(z.shape))
        return real(pipe, z)
    monkeypatch.setattr(pipe, "decode", counting)
    return calls


# ----- the full VAE ---------------------------------------------------------------------------------------------
def test_vae_decoder_is_the_pipelines_decode(pipe):
    z = latents()
    dec = D.make_decoder(pipe, "vae")
    assert isinstance(dec, D.VaeDecoder) and dec.name == "vae" and dec.exact
    x = dec.decode(z)
    assert x.shape == (2, 3, 16, 12) and x.dtype == torch.float32
    torch.testing.assert_close(x, pipe.decode(z).clamp(-1, 1), rtol=0, atol=0)


def test_unknown_preview_is_one_line(pipe):
    with pytest.raises(ValueError, match=r"--preview 'fast': choose one of vae, taesd, approx") as e:
        D.make_decoder(pipe, "fast")
    assert "\n" not in str(e.value)
    assert D.PREVIEWS == ("vae", "taesd", "approx")


# ----- TAESD ----------------------------------------------------------------------------------------------------
def tiny_taesd(latent_channels=4, seed=1):
    """A random AutoencoderTiny that upsamples 2× (the tiny pipeline's VAE factor)."""
    from diffusers import AutoencoderTiny
    torch.manual_seed(seed)
    return AutoencoderTiny(encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8),
                           num_encoder_blocks=(1, 1), num_decoder_blocks=(1, 1),
                           latent_channels=latent_channels).eval()


def saved_taesd(folder: Path, **kw) -> tuple[Path, torch.nn.Module]:
    net = tiny_taesd(**kw)
    net.save_pretrained(str(folder), safe_serialization=True)
    return folder, net


def test_taesd_folder_loads_and_decodes_as_autoencoder_tiny(pipe, tmp_path):
    folder, net = saved_taesd(tmp_path / "taesd")
    assert net.config.scaling_factor == 1.0  # TAESD takes UNet-space latents unscaled
    z = latents(3)
    dec = D.make_decoder(pipe, "taesd", taesd=folder)
    assert isinstance(dec, D.TaesdDecoder) and dec.name == "taesd" and not dec.exact
    x = dec.decode(z)
    with torch.inference_mode():
        want = net.decode(z).sample.clamp(-1, 1)
    assert x.shape == (2, 3, 16, 12)
    torch.testing.assert_close(x, want, rtol=0, atol=1e-6)
    assert x.min() >= -1 and x.max() <= 1


def test_taesd_from_the_hugging_face_cache(pipe, tmp_path):
    assert D.find_taesd() is None
    with pytest.raises(ModelLoadError) as e:
        D.make_decoder(pipe, "taesd")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("--preview taesd: no TAESD found")
    assert "madebyollin/taesd" in msg and str(tmp_path / "hub") in msg
    assert "give --taesd FOLDER or use --preview approx" in msg

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--madebyollin--taesd"
    snap, net = saved_taesd(repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    assert D.find_taesd() == snap
    z = latents(4, n=1)
    with torch.inference_mode():
        want = net.decode(z).sample.clamp(-1, 1)
    torch.testing.assert_close(D.make_decoder(pipe, "taesd").decode(z), want, rtol=0, atol=1e-6)
    # the repo id given explicitly resolves in the cache too
    assert D.find_taesd("madebyollin/taesd") == snap


def test_taesd_explicit_repo_missing_is_one_line(pipe):
    with pytest.raises(ModelLoadError, match=r"^--preview taesd: madebyollin/taesdxl is not in the Hugging Face"):
        D.make_decoder(pipe, "taesd", taesd="madebyollin/taesdxl")


def test_pickle_only_taesd_is_refused_unopened(pipe, tmp_path):
    folder, _ = saved_taesd(tmp_path / "taesd")
    (folder / "diffusion_pytorch_model.safetensors").unlink()
    (folder / "diffusion_pytorch_model.bin").write_bytes(b"not opened: a pickle could run code")
    with pytest.raises(ModelLoadError, match="refusing to open a pickle checkpoint") as e:
        D.make_decoder(pipe, "taesd", taesd=folder)
    assert "\n" not in str(e.value) and "diffusion_pytorch_model.bin" in str(e.value)


@pytest.mark.parametrize("damage, message", [
    ("missing", "no such TAESD folder"),
    ("no-config", "no config.json"),
    ("not-tiny", "not an AutoencoderTiny"),
    ("no-weights", "no diffusion_pytorch_model.safetensors"),
    ("corrupt", "safetensors"),
    ("channels", "decodes 16-channel latents; the pipeline's have 4"),
])
def test_bad_taesd_folders_are_one_line(pipe, tmp_path, damage, message):
    folder = tmp_path / "taesd"
    if damage != "missing":
        saved_taesd(folder, **({"latent_channels": 16} if damage == "channels" else {}))
    weights = folder / "diffusion_pytorch_model.safetensors"
    if damage == "no-config":
        (folder / "config.json").unlink()
    elif damage == "not-tiny":
        cfg = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**cfg, "_class_name": "AutoencoderKL"}))
    elif damage == "no-weights":
        weights.unlink()
    elif damage == "corrupt":
        weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(ModelLoadError, match=message) as e:
        D.make_decoder(pipe, "taesd", taesd=folder)
    assert "\n" not in str(e.value) and str(e.value).startswith("--preview taesd: ")


# ----- the linear map -------------------------------------------------------------------------------------------
class LinearVae:
    """A fake pipeline whose "VAE" is linear: decode(z) = (W·z + b) at each latent pixel, repeated over its
    factor×factor block; encode averages the block and maps RGB to 4 channels."""

    def __init__(self, factor=4):
        g = torch.Generator().manual_seed(7)
        self.W = torch.randn(3, 4, generator=g) * 0.2
        self.b = torch.tensor([0.1, -0.2, 0.05])
        self.M = torch.randn(4, 3, generator=g)
        self.vae_scale_factor = factor
        self.folder = None
        self.decodes = 0

    def encode_image(self, pixels, sample=True):
        return torch.einsum("ck,bkhw->bchw", self.M, F.avg_pool2d(pixels.float(), self.vae_scale_factor)) + 0.3

    def decode(self, z):
        self.decodes += 1
        rgb = torch.einsum("oc,bchw->bohw", self.W, z.float()) + self.b.view(1, 3, 1, 1)
        return F.interpolate(rgb, scale_factor=self.vae_scale_factor, mode="nearest")


def test_linear_fit_recovers_a_linear_vae_exactly():
    fake = LinearVae()
    dec = D.make_decoder(fake, "approx")
    assert isinstance(dec, D.LinearDecoder) and dec.name == "approx" and not dec.exact
    torch.testing.assert_close(dec.weight, fake.W, rtol=0, atol=1e-5)
    torch.testing.assert_close(dec.bias, fake.b, rtol=0, atol=1e-5)
    assert fake.decodes == 1 and not dec.cached  # no model folder: nothing to key a cache on
    # a constant latent decodes to its colour everywhere; any latent to the bilinear upsampling of W·z + b
    z = torch.full((1, 4, 5, 7), 0.5)
    torch.testing.assert_close(dec.decode(z), fake.decode(z).clamp(-1, 1), rtol=0, atol=1e-5)
    z = latents(5) * 0.5
    want = F.interpolate(fake.decode(z)[..., ::4, ::4], scale_factor=4, mode="bilinear", align_corners=False)
    x = dec.decode(z)
    assert x.shape == (2, 3, 32, 24)
    torch.testing.assert_close(x, want.clamp(-1, 1), rtol=0, atol=1e-5)


def test_approx_on_the_tiny_pipeline_is_fitted_once_and_cached(pipe, tmp_path, monkeypatch):
    before = tree(pipe.folder)
    calls = count_decodes(monkeypatch, pipe)
    first = D.make_decoder(pipe, "approx")
    assert len(calls) == 1 and not first.cached and first.fit_seconds is not None
    files = list((tmp_path / "app-cache" / "latent-rgb").glob("*.json"))
    assert len(files) == 1
    saved = json.loads(files[0].read_text())
    assert saved["key"] == D.fit_key(pipe) and saved["format"] == "ddpm-studio.latent-rgb"
    assert D.make_decoder(pipe, "approx") is first  # the same pipeline keeps its decoder
    second = D.LinearDecoder.for_pipeline(pipe)
    assert len(calls) == 1 and second.cached  # a new load reads the fit back, not refitted
    torch.testing.assert_close(second.weight, first.weight)
    torch.testing.assert_close(second.bias, first.bias)
    z = latents(6)
    torch.testing.assert_close(second.decode(z), first.decode(z))
    assert tree(pipe.folder) == before  # nothing written into the model folder


def test_the_cache_key_follows_the_vae_weights_file(pipe, monkeypatch):
    calls = count_decodes(monkeypatch, pipe)
    D.LinearDecoder.for_pipeline(pipe)
    weights = D.vae_weights_file(pipe)
    assert weights == pipe.folder / "vae" / "diffusion_pytorch_model.safetensors"
    key = D.fit_key(pipe)
    st = weights.stat()
    try:
        os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # the weights file "changed"
        assert D.fit_key(pipe) != key
        assert not D.LinearDecoder.for_pipeline(pipe).cached and len(calls) == 2
        assert D.LinearDecoder.for_pipeline(pipe).cached and len(calls) == 2
    finally:
        os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert D.fit_key(pipe) == key


@pytest.mark.parametrize("garbage", [b"{not json", b"\xff\xfe", b"[]", b'{"format": "ddpm-studio.latent-rgb"}',
                                     "nan", "shape"])
def test_a_corrupt_cache_file_is_refitted(pipe, monkeypatch, garbage):
    calls = count_decodes(monkeypatch, pipe)
    good = D.LinearDecoder.for_pipeline(pipe)
    path = next((Path(os.environ["DDPM_STUDIO_CACHE"]) / "latent-rgb").glob("*.json"))
    d = json.loads(path.read_text())
    if garbage == "nan":
        d["weight"][0][0] = float("nan")
        garbage = json.dumps(d).encode()
    elif garbage == "shape":
        d["weight"] = d["weight"][:2]
        garbage = json.dumps(d).encode()
    path.write_bytes(garbage)
    again = D.LinearDecoder.for_pipeline(pipe)
    assert not again.cached and len(calls) == 2
    torch.testing.assert_close(again.weight, good.weight)
    assert json.loads(path.read_text())["key"] == D.fit_key(pipe)  # and rewritten whole
    assert D.LinearDecoder.for_pipeline(pipe).cached


def test_a_cache_folder_inside_the_model_folder_is_not_used(pipe, monkeypatch):
    before = tree(pipe.folder)
    monkeypatch.setenv("DDPM_STUDIO_CACHE", str(pipe.folder / "cache"))
    calls = count_decodes(monkeypatch, pipe)
    assert not D.LinearDecoder.for_pipeline(pipe).cached
    assert not D.LinearDecoder.for_pipeline(pipe).cached and len(calls) == 2
    assert tree(pipe.folder) == before


def test_previews_against_the_full_vae(pipe, tmp_path):
    """PSNR of each preview vs the full VAE's decoding of the cat's latents (64×64 pixels). The tiny pipeline's
    VAE and this TAESD are random networks, so the numbers only show the plumbing, not real SD quality."""
    from core.images import load_image, resize_square, sample_path
    x = torch.from_numpy(resize_square(load_image(sample_path("chelsea")), 64).transpose(2, 0, 1).copy())[None]
    z = pipe.encode_image(x, sample=False)
    ref = D.make_decoder(pipe, "vae").decode(z)
    approx = D.make_decoder(pipe, "approx")
    nearest = D.LinearDecoder(approx.weight, approx.bias, 1).decode(z)
    nearest = F.interpolate(nearest, scale_factor=pipe.vae_scale_factor, mode="nearest")
    flat = ref.mean((2, 3), keepdim=True).expand_as(ref)  # the image's mean colour everywhere
    scores = {"approx (bilinear)": psnr(approx.decode(z), ref), "approx (nearest)": psnr(nearest, ref),
              "mean colour": psnr(flat, ref)}
    folder, _ = saved_taesd(tmp_path / "taesd")
    scores["taesd (random)"] = psnr(D.make_decoder(pipe, "taesd", taesd=folder).decode(z), ref)
    print("\nPSNR vs the full VAE (tiny random pipeline, dB): "
          + ", ".join(f"{k} {v:.2f}" for k, v in scores.items()))
    for v in scores.values():
        assert np.isfinite(v) and v > 5


# ----- the app's cache folder -----------------------------------------------------------------------------------
def test_cache_dir_location_and_creation(tmp_path, monkeypatch):
    monkeypatch.setenv("DDPM_STUDIO_CACHE", str(tmp_path / "own"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert not (tmp_path / "own").exists()
    assert app_cache.cache_dir("latent-rgb") == tmp_path / "own" / "latent-rgb"
    assert (tmp_path / "own" / "latent-rgb").is_dir()
    monkeypatch.delenv("DDPM_STUDIO_CACHE")
    assert app_cache.cache_dir() == tmp_path / "xdg" / "ddpm-studio"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")  # the XDG spec: only absolute paths count
    assert app_cache.cache_dir("a", "b") == tmp_path / "home" / ".cache" / "ddpm-studio" / "a" / "b"
    assert (tmp_path / "home" / ".cache" / "ddpm-studio" / "a" / "b").is_dir()
    for bad in ("..", "a/b", "", "/abs"):
        with pytest.raises(ValueError):
            app_cache.cache_dir(bad)


def test_fit_time_is_reported(pipe):
    start = time.perf_counter()
    dec = D.LinearDecoder.for_pipeline(pipe, cache=False)
    assert dec.fit_seconds is not None and dec.fit_seconds <= time.perf_counter() - start


def test_decode_step_is_both_images_and_taesd_decodes_x0_only(tmp_path, monkeypatch):
    """A preview frame: the VAE and the linear map decode x_t and x̂_0; TAESD decodes x̂_0, and x_t through the
    linear map it was given."""
    from core.latent.decoders import LinearDecoder, TaesdDecoder, VaeDecoder
    torch.manual_seed(0)
    z = torch.randn(2, 4, 3, 5)
    x0 = torch.randn(2, 4, 3, 5)
    lin = LinearDecoder(torch.randn(3, 4), torch.randn(3), 2)
    a, b = lin.decode_step(z, x0)
    assert torch.allclose(a, lin.decode(z), atol=1e-6) and torch.allclose(b, lin.decode(x0), atol=1e-6)

    class FakePipe:
        def decode(self, latents):
            return latents[:, :3] * 0.5
    vae = VaeDecoder(FakePipe())
    a, b = vae.decode_step(z, x0)
    assert torch.equal(a, vae.decode(z)) and torch.equal(b, vae.decode(x0))
    calls = []
    tiny = TaesdDecoder.__new__(TaesdDecoder)
    monkeypatch.setattr(TaesdDecoder, "decode", lambda self, latents: calls.append(latents) or latents[:, :3])
    tiny.noisy = lin
    a, b = tiny.decode_step(z, x0)
    assert len(calls) == 1 and calls[0] is x0 and torch.allclose(a, lin.decode(z), atol=1e-6)
