"""The ELBO panel with a Stable Diffusion pipeline (the tiny random one): choosing it shows the prompt field and the
latent-space note; Compute loads it through the shared cache and shows the bound of core.vlb.latent — the same
per-timestep plot, the parts in bits/latent-dim, what it bounds, the VAE's PSNR and the estimate; Cancel gives
Compute back at once."""
import time

import numpy as np
import pytest

pytest.importorskip("pytestqt")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from core.images import save_image  # noqa: E402
from core.jobs.bound import load_latent_images  # noqa: E402
from core.jobs.pipelines import PIPELINES, load_pipeline_job, loaded_pipeline  # noqa: E402
from core.schedule import NoiseSchedule  # noqa: E402
from core.vlb.latent import latent_bound  # noqa: E402
from ddpm_gui.main_window import MainWindow  # noqa: E402
from sd_tiny import save_tiny_pipeline  # noqa: E402
from test_gui_elbo import compute, original  # noqa: E402

TIMEOUT = 60_000
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    return save_tiny_pipeline(tmp_path_factory.mktemp("sd") / "tiny-sd")


@pytest.fixture(scope="module")
def small_photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("photos") / "photo.png"
    save_image(path, np.random.default_rng(5).integers(0, 256, (16, 16, 3), dtype=np.uint8))
    return path


@pytest.fixture
def window(qtbot, small_photo):
    PIPELINES.clear()
    w = MainWindow(small_photo)
    qtbot.addWidget(w)
    w.show()
    w.show_panel(w.elbo_panel)
    w.schedule_panel.set_schedule(NoiseSchedule.preset("linear", T=40))
    yield w
    w.close()
    PIPELINES.clear()


def assert_plot_shows(panel, terms, decoder):
    """The same plot as a pixel bound's: L_{t−1} at t = 2…T, L_0 (here its magnitude) at 1, L_T at T + 1."""
    T = len(terms) - 1
    x, y = original(panel.klCurve)
    np.testing.assert_array_equal(x, np.arange(2, T + 1))
    np.testing.assert_array_equal(y, np.where(terms[1:T] > 0, terms[1:T], np.nan))
    assert original(decoder)[0].tolist() == [1] and original(decoder)[1].tolist() == [terms[0]]
    assert original(panel.priorPoint)[0].tolist() == [T + 1] and original(panel.priorPoint)[1].tolist() == [terms[T]]


def test_a_pipeline_shows_the_prompt_and_its_latent_bound_equals_core(qtbot, window, sd, small_photo):
    panel = window.elbo_panel
    assert not panel.promptEdit.isVisible()
    panel.select_model(str(sd))
    assert panel.current_model() == ("pipeline", str(sd))
    assert panel.promptEdit.isVisible() and panel.promptEdit.objectName() == "elboPromptEdit"
    assert panel.latentNote.isVisible() and "not pixels" in panel.latentNote.text()
    assert "may be negative" in panel.latentNote.text()
    panel.select_source("photo")
    panel.set_prompt("a red cat")
    panel.seedSpin.setValue(2)
    stages = []
    panel.progressed.connect(lambda done, total: stages.append(panel.status_text))
    run = compute(qtbot, panel)

    pipe = loaded_pipeline(str(sd), panel._device())                 # loaded once, in the shared cache
    assert pipe is not None
    ref = latent_bound(pipe, load_latent_images(pipe, image=str(small_photo))[0], "a red cat", seed=2)
    assert run.latent and run.T == 1000 and run.prompt == "a red cat" and not run.any_schedule
    np.testing.assert_allclose(run.per_image, ref.result.per_image, rtol=1e-12, atol=1e-15)
    assert run.vae_psnr_db == pytest.approx(ref.vae_psnr_db)
    assert run.terms[0] < 0                                          # a density: L_0 < 0 here, drawn as −L_0
    assert_plot_shows(panel, np.concatenate([[-run.terms[0]], run.terms[1:]]), panel.negativeDecoderPoint)
    assert original(panel.decoderPoint)[0].size == 0
    assert f"<b>{ref.result.bits_per_dim:.4g}</b> bits/latent-dim" in panel.totalLabel.text()
    text = panel.breakdownLabel.text()
    for part in ("L<sub>0</sub> (continuous)", "bounds −log p(latents), not pixels", "PSNR", "a red cat",
                 "negative here: the hollow square"):
        assert part in text
    assert panel.estimate_note.startswith("estimate ≈")                # shown before the first batch
    assert any("estimate ≈" in s for s in stages)
    assert "estimated" in panel.status_text and "latent space" in panel.status_text
    assert "tied to its own schedule (scaled_linear, T = 1000)" in panel.modelNote.text()
    assert not panel.autoCheck.isEnabled()

    panel.select_model("photo")                                      # back to a pixel model: no prompt
    assert not panel.promptEdit.isVisible() and not panel.latentNote.isVisible()


def test_the_panel_reuses_a_pipeline_already_loaded(qtbot, window, sd):
    pipe = list(load_pipeline_job(str(sd), window.elbo_panel._device()))[-1]   # as the Generate panel would
    panel = window.elbo_panel
    panel.select_model(str(sd))
    assert "latents 4×h×w" in panel.modelNote.text()
    panel.select_source("photo")
    seen = []
    panel.progressed.connect(lambda *a: seen.append(panel.status_text))
    compute(qtbot, panel)
    assert loaded_pipeline(str(sd), panel._device()) is pipe
    assert not any("Loading the pipeline" in s for s in seen)


def test_cancel_stops_a_pipeline_bound_and_gives_compute_back_at_once(qtbot, window, sd):
    pipe = list(load_pipeline_job(str(sd), window.elbo_panel._device()))[-1]
    net = pipe.denoiser.net
    hook = net.register_forward_hook(lambda *a: time.sleep(0.05))    # a slow UNet
    try:
        panel = window.elbo_panel
        panel.select_model(str(sd))
        panel.select_source("photo")
        assert panel.compute()
        qtbot.waitUntil(lambda: panel.partial is not None and panel.partial.done > 0, timeout=TIMEOUT)
        with qtbot.waitSignal(panel.runCancelled, timeout=TIMEOUT):
            assert panel.cancel()
            assert panel.computeButton.isEnabled() and not panel.cancelButton.isEnabled()
            assert panel.status_text.startswith("Cancelled at")
        assert panel.result is None
    finally:
        hook.remove()


def test_a_bad_prompt_is_one_line_and_keeps_the_panel(qtbot, window, sd):
    panel = window.elbo_panel
    panel.select_model(str(sd))
    panel.select_source("photo")
    panel.set_prompt("x" * 20_000)
    with qtbot.waitSignal(panel.runFailed, timeout=TIMEOUT) as blocker:
        panel.compute()
    assert "prompt" in blocker.args[0] and "\n" not in blocker.args[0]
    assert panel.computeButton.isEnabled()
