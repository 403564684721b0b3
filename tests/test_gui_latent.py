"""The main view in latent space (issue 16, "The slider on latents") with a tiny random Stable Diffusion pipeline:
the toggle is off without a pipeline; the frame at rest is core's encode → q_sample → decode for that t and seed;
the schedule panel shows the pipeline's schedule and gives ours back; the readout's numbers; the latent strip;
and a pipeline's live frames taking over the image area."""
import math

import numpy as np
import pytest
import torch

pytest.importorskip("pytestqt")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")
from PySide6.QtCore import QSettings  # noqa: E402
from sd_tiny import save_tiny_pipeline  # noqa: E402

from core.forward import draw_noise, q_sample  # noqa: E402
from core.images import load_image, to_uint8  # noqa: E402
from core.jobs.pipelines import PIPELINES, load_pipeline_job  # noqa: E402
from core.latent.forward import fit_photo  # noqa: E402
from core.latent.pipeline import pixels_to_vae_input  # noqa: E402
from core.readout import readout_values  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DDPM_STUDIO_CACHE", str(tmp_path / "app-cache"))


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    folder = save_tiny_pipeline(tmp_path_factory.mktemp("sd-gui") / "tiny-sd")
    *_stages, loaded = list(load_pipeline_job(str(folder), "cpu"))
    yield loaded
    PIPELINES.clear()


def reference_frame(pipe, x0, t, seed):
    """core, independently of the window: fit → encode (posterior mean) → eq. 5 → full VAE → display pixels."""
    x = pixels_to_vae_input(fit_photo(x0, pipe.default_size), pipe.vae_scale_factor)
    z0 = pipe.encode_image(x, sample=False)[0].cpu().numpy()
    eps = draw_noise(z0.shape, seed).numpy()
    zt = q_sample(z0, t, eps, pipe.denoiser.schedule)
    return to_uint8(pipe.decode(torch.from_numpy(zt[None])).clamp(-1, 1)[0].numpy().transpose(1, 2, 0)), z0, eps


def latent_on(qtbot, window, pipe):
    window.set_pipeline(pipe)
    with qtbot.waitSignal(window.latent.encoded, timeout=20000):
        window.set_latent_space(True)


def show_vae(qtbot, window, t):
    with qtbot.waitSignal(window.latent.frameShown, timeout=20000, check_params_cb=lambda tt, d: (tt, d) == (t, "vae")):
        window.set_timestep(t)


def test_the_toggle_is_off_and_says_why_without_a_pipeline(window, pipe):
    check = window.latentSpaceCheck
    assert not check.isEnabled() and not check.isChecked()
    assert "needs a Stable Diffusion pipeline" in check.toolTip() and "Generate" in check.toolTip()
    window.set_latent_space(True)
    assert not check.isChecked() and not window.latent.active
    window.set_pipeline(pipe)
    assert check.isEnabled() and "z_t = √ᾱ_t·z_0 + √(1−ᾱ_t)·ε" in check.toolTip()
    window.set_pipeline(None)
    assert not check.isEnabled() and "needs a Stable Diffusion pipeline" in check.toolTip()


def test_the_frame_at_rest_is_cores_encode_noise_decode_for_that_t_and_seed(window, qtbot, pipe):
    window.set_seed(5)
    latent_on(qtbot, window, pipe)
    for t in (300, 999, 0):
        show_vae(qtbot, window, t)
        ref, _z0, _eps = reference_frame(pipe, window.x0, t, 5)
        assert np.array_equal(window.displayed_image(), ref), t
        assert "full VAE" in window.xtPane.title.text()
    # a new seed: a new ε on the same latents (no re-encode), the same rule
    window.set_seed(11)
    show_vae(qtbot, window, 420)
    assert np.array_equal(window.displayed_image(), reference_frame(pipe, window.x0, 420, 11)[0])
    # dragging shows the linear map first; the channel tiles and the histogram follow z_t
    with qtbot.waitSignal(window.latent.frameShown, timeout=5000, check_params_cb=lambda tt, d: d == "approx"):
        window.set_timestep(421)
    assert "linear" in window.xtPane.title.text()
    z = window.latent.photo.at(421, window.schedule)
    assert window.channelsPane.isVisible() and window.channelsPane.image.shape == (2 * 5 + 1, 2 * 8 + 1, 3)
    qtbot.waitUntil(lambda: window.histogram_t == 421, timeout=5000)
    counts, _ = np.histogram(z.reshape(-1), bins=window.histogram.edges)
    assert np.allclose(window.histogram.counts, counts / (z.size * (window.histogram.edges[1] -
                                                                    window.histogram.edges[0])))
    assert "latents z_t" in window.histogram.toolTip()


def test_the_schedule_panel_shows_the_pipelines_schedule_and_gives_ours_back(window, qtbot, pipe):
    panel = window.schedule_panel
    panel.apply_notes_example()                      # ours: linear, T = 100
    ours = window.schedule
    assert ours.T == 100
    latent_on(qtbot, window, pipe)
    s = window.schedule
    assert s is pipe.denoiser.schedule and s.name == "scaled_linear" and s.T == 1000
    assert np.allclose(s.betas, np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000) ** 2)
    assert window.timestepSlider.maximum() == 999
    assert np.allclose(panel.mainCurve.getData()[1], np.log10(s.betas))    # the plot draws it (log y)
    assert not panel.presetCombo.isEnabled() and "read-only" in panel.info.text()
    assert panel.apply_preset("cosine") is False and window.schedule is s       # refused, with a status line
    window.set_timestep(640)
    qtbot.waitUntil(lambda: panel.marker.value() == 640, timeout=5000)          # the marker follows t
    window.set_latent_space(False)
    assert window.schedule is ours and window.timestepSlider.maximum() == 99 and panel.presetCombo.isEnabled()
    assert "= √ᾱ<sub>t</sub>·x<sub>0</sub> + √(1−ᾱ<sub>t</sub>)·ε" in window.xtPane.title.text()
    assert not window.channelsPane.isVisible()


def test_the_readout_is_cores_formulas_with_the_latent_psnr(window, qtbot, pipe):
    latent_on(qtbot, window, pipe)
    show_vae(qtbot, window, 250)
    _ref, z0, eps = reference_frame(pipe, window.x0, 250, window.seed)
    s = pipe.denoiser.schedule
    zt = q_sample(z0, 250, eps, s).astype(np.float64)
    psnr = 10 * math.log10(6.0 ** 2 / np.mean((zt - z0) ** 2))
    v = window.readout_values
    assert v == readout_values(s, 250, v["psnr_db"])
    assert v["psnr_db"] == pytest.approx(psnr, rel=1e-6)
    ab = float(np.prod(1 - s.betas[:251]))
    assert v["alpha_bar"] == pytest.approx(ab) and v["snr_db"] == pytest.approx(10 * math.log10(ab / (1 - ab)))
    text = window.readout.text()
    assert "PSNR(z<sub>t</sub>, z<sub>0</sub>)" in text and "peak 6" in text and f"{psnr:.2f} dB" in text


def test_the_strip_decodes_z_t_at_its_timesteps_and_exports_as_the_cli(window, qtbot, pipe, tmp_path):
    latent_on(qtbot, window, pipe)
    with qtbot.waitSignal(window.latent.stripShown, timeout=20000):
        window.stripEdit.setText("100, 800")
        window.stripEdit.editingFinished.emit()
    assert window.stripView._captions[0][1] == "D(z₀)" and window.stripView._captions[2][1] == "t = 800"
    out = tmp_path / "latent_strip.png"
    with qtbot.waitSignal(window.latent.stripExported, timeout=20000):
        assert window.export_strip(out)
    from core.latent.forward import latent_noise_strip
    from core.latent.view import strip_grid
    st = latent_noise_strip(pipe, fit_photo(window.x0, pipe.default_size), [100, 800], seed=window.seed)
    got = to_uint8(load_image(out)).astype(int)
    assert np.abs(got - strip_grid(st.decoded, st.z0, st.zt).astype(int)).max() <= 1


def test_generated_frames_take_over_the_image_area_zoomably_and_give_it_back(window, qtbot, tmp_path):
    tk = window.takeover
    assert tk.action.isChecked()                      # on by default
    names = [a.objectName() for m in window.menuBar().actions() for a in m.menu().actions()]
    assert "takeoverAction" in names
    frame = np.random.default_rng(0).integers(0, 256, (64, 128, 3), dtype=np.uint8)
    tk.show_frame(frame)
    assert window.takeoverPane.isVisible() and not window.xtPane.isVisible()
    assert np.array_equal(window.takeoverPane.image, frame)
    vb = window.takeoverPane.viewbox
    vb.scaleBy((0.5, 0.5))                           # zoom like the photo
    tk._on_run_ended()
    assert window.takeoverBackButton.isVisible()
    window.takeoverBackButton.click()
    assert not window.takeoverPane.isVisible() and window.xtPane.isVisible()
    # off: frames never take over; the choice is remembered
    settings = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    from ddpm_gui.latent_view import TAKEOVER_KEY, Takeover
    Takeover(window, settings).action.setChecked(False)
    assert settings.value(TAKEOVER_KEY) in (False, "false")
    assert Takeover(window, settings).action.isChecked() is False
    tk.action.setChecked(False)
    tk.show_frame(frame)
    assert not window.takeoverPane.isVisible()


def test_choosing_a_pipeline_in_generate_enables_latent_space_and_its_run_takes_over(window, qtbot, pipe):
    panel = window.generate_panel
    if not hasattr(panel, "pipelineChanged"):
        pytest.skip("the Generate panel has no pipelineChanged yet")
    with qtbot.waitSignal(panel.pipelineChanged, timeout=60000):
        panel.select_model(str(pipe.folder))
    qtbot.waitUntil(lambda: panel.generateButton.isEnabled(), timeout=60000)
    assert window.pipeline is panel.current_pipeline() and window.latentSpaceCheck.isEnabled()
    panel.stepsSpin.setValue(3)
    with qtbot.waitSignal(panel.runFinished, timeout=60000):
        assert panel.generate()
    qtbot.waitUntil(lambda: not panel.running, timeout=60000)
    assert window.takeover.showing and window.takeoverPane.isVisible() and not window.xtPane.isVisible()
    assert window.takeoverPane.image.dtype == np.uint8 and window.takeoverBackButton.isVisible()
    window.set_timestep(window.timestep + 1 if window.timestep < 999 else 0)   # moving t gives the photo back
    assert not window.takeoverPane.isVisible() and window.xtPane.isVisible()
    with qtbot.waitSignal(panel.pipelineChanged, timeout=60000):
        panel.select_model("photo")
    assert not window.latentSpaceCheck.isEnabled()


def test_settings_remember_our_schedule_not_the_pipelines(qtbot, pipe, tmp_path):
    from ddpm_gui import MainWindow
    settings = QSettings(str(tmp_path / "w.ini"), QSettings.Format.IniFormat)
    w = MainWindow(settings=settings)
    qtbot.addWidget(w)
    w.show()
    w.schedule_panel.apply_notes_example()
    latent_on(qtbot, w, pipe)
    w.save_settings()
    from core.schedule import NoiseSchedule
    assert NoiseSchedule.from_json(settings.value("schedule/json")).T == 100
    w.close()
