"""The Generate panel with a Stable Diffusion pipeline (the tiny random one): choosing it loads it on a worker and
shows the prompt widgets (hidden again for builtin:mnist); Generate equals `ddpm sample --prompt … -o x.npz` pixel
for pixel; Cancel mid-run re-enables Generate; a folder with a missing part keeps the previous model; a repo id in
a Hugging Face cache loads; "denoise from here" equals text_to_image(init_image, t_start); exports write files."""
import shutil

import numpy as np
import pytest

pytest.importorskip("pytestqt")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from core.cli import main as cli  # noqa: E402
from core.images import save_image  # noqa: E402
from core.jobs.generate import EXPORTS  # noqa: E402
from core.latent.forward import fit_photo  # noqa: E402
from core.latent.generate import text_to_image  # noqa: E402
from core.samplers import run_to_end  # noqa: E402
from ddpm_gui.main_window import MainWindow  # noqa: E402
from conftest import cache_as_repo  # noqa: E402
from sd_tiny import save_tiny_pipeline  # noqa: E402

TIMEOUT = 60_000
pytestmark = pytest.mark.usefixtures("one_torch_thread")
SD_WIDGETS = ("promptEdit", "negativePromptEdit", "guidanceSlider", "previewDecoderCombo")


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    return save_tiny_pipeline(tmp_path_factory.mktemp("sd") / "tiny-sd")


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    w = MainWindow()
    qtbot.addWidget(w)
    w.show()
    w.show_panel(w.generate_panel)
    yield w
    w.close()


def _choose(qtbot, panel, spec):
    with qtbot.waitSignal(panel.pipelineChanged, timeout=TIMEOUT):
        panel.select_model(str(spec))
    qtbot.waitUntil(lambda: panel.generateButton.isEnabled(), timeout=TIMEOUT)
    return panel.current_pipeline()


def _visible(panel, name):
    from PySide6.QtWidgets import QWidget
    w = panel.findChild(QWidget, name)
    assert w is not None, name
    return w.isVisible()


def _settings(panel, prompt="a red cat", negative="dog", steps=4, seed=3, n=2, w=3.0, size=(12, 20)):
    panel.prompts.promptEdit.setPlainText(prompt)
    panel.prompts.negativePromptEdit.setPlainText(negative)
    panel.samplerCombo.setCurrentIndex(panel.samplerCombo.findData("ddim"))
    panel.stepsSpin.setValue(steps)
    panel.seedSpin.setValue(seed)
    panel.batchSpin.setValue(n)
    panel.prompts.set_guidance(w)
    panel.prompts.set_image_size(*size)


def _run(qtbot, panel):
    with qtbot.waitSignal(panel.runFinished, timeout=TIMEOUT) as got:
        assert panel.generate()
    qtbot.waitUntil(lambda: not panel.running, timeout=TIMEOUT)
    return got.args[0]


def test_a_pipeline_shows_the_prompt_widgets_and_mnist_hides_them(qtbot, window, sd):
    panel = window.generate_panel
    pipe = _choose(qtbot, panel, sd)
    assert pipe is not None and pipe.name == "tiny-sd"
    assert all(_visible(panel, n) for n in SD_WIDGETS)
    assert not panel.classCombo.isVisible()
    assert panel.prompts.image_size() == (16, 16)   # the native size
    assert panel.prompts.guidanceSlider.value() == 75 and panel.prompts.guidance() == 7.5
    with qtbot.waitSignal(panel.pipelineChanged, timeout=TIMEOUT) as got:
        panel.select_model("builtin:mnist")
    assert got.args == [None] and panel.current_pipeline() is None
    assert not any(_visible(panel, n) for n in SD_WIDGETS)


def test_generate_equals_ddpm_sample_pixel_for_pixel(qtbot, window, sd, tmp_path):
    panel = window.generate_panel
    _choose(qtbot, panel, sd)
    _settings(panel)
    frames = []
    panel.framePainted.connect(frames.append)
    final = _run(qtbot, panel)
    out = tmp_path / "x.npz"
    assert cli(["sample", "--model", str(sd), "--prompt", "a red cat", "--negative-prompt", "dog", "--steps", "4",
                "--seed", "3", "--n", "2", "--guidance", "3", "--height", "12", "--width", "20", "-o", str(out)]) == 0
    ref = np.load(out)["images"]
    assert final.shape == ref.shape == (2, 3, 12, 20) and np.array_equal(final, ref)
    assert np.array_equal(panel.recording.final, ref)
    assert frames and frames[-1].dtype == np.uint8 and frames[-1].ndim == 3 and frames[-1].shape[2] == 3
    assert "a red cat" in panel.prompts.recent_prompts() or panel._settings is None
    for kind in ("gif", "apng", "grid", "final"):
        path = tmp_path / f"run{EXPORTS[kind][1]}"
        assert panel.export(kind, path) and path.stat().st_size > 0
    assert panel.export("frames", tmp_path / "frames") and (tmp_path / "frames" / "final.png").is_file()


def test_guidance_parts_show_beside_each_other(qtbot, window, sd):
    panel = window.generate_panel
    _choose(qtbot, panel, sd)
    _settings(panel, n=1, size=(8, 8))
    panel.prompts.guidancePartsCheck.setChecked(True)
    assert panel.partsRow.isVisible()
    _run(qtbot, panel)
    frame = panel.recording.frames[0]
    assert frame.parts is not None and panel.uncondPane.image is not None
    panel.show_frame(0)


def test_cancel_mid_run_re_enables_generate(qtbot, window, sd):
    panel = window.generate_panel
    _choose(qtbot, panel, sd)
    _settings(panel, steps=400, n=1, size=(8, 8))
    with qtbot.waitSignal(panel.stepPainted, timeout=TIMEOUT, check_params_cb=lambda i: i >= 2):
        assert panel.generate()
    assert not panel.generateButton.isEnabled()
    with qtbot.waitSignal(panel.runCancelled, timeout=TIMEOUT):
        panel.cancel()
    qtbot.waitUntil(lambda: panel.generateButton.isEnabled(), timeout=TIMEOUT)
    assert "cancelled at step" in panel.status_text and not panel.cancelButton.isEnabled()
    assert panel.recording is not None and len(panel.recording) >= 1


def test_a_folder_with_a_missing_part_keeps_the_previous_model(qtbot, window, sd, tmp_path):
    panel = window.generate_panel
    pipe = _choose(qtbot, panel, sd)
    broken = tmp_path / "broken-sd"
    shutil.copytree(sd, broken)
    shutil.rmtree(broken / "unet")
    with qtbot.waitSignal(panel.runFailed, timeout=TIMEOUT) as got:
        panel.select_model(str(broken))
    reason = got.args[0]
    assert "unet" in reason and "\n" not in reason
    qtbot.waitUntil(lambda: not panel.loading, timeout=TIMEOUT)
    assert panel.current_pipeline() is pipe and panel.modelCombo.spec() == str(sd)
    assert panel.generateButton.isEnabled() and all(_visible(panel, n) for n in SD_WIDGETS)
    from core.jobs.pipelines import loaded_pipeline
    assert loaded_pipeline(str(sd), "cpu") is pipe, "the shared cache keeps it too"


def test_a_repo_id_from_the_hf_cache(qtbot, sd, tmp_path, monkeypatch):
    root = tmp_path / "hub"
    cache_as_repo(sd, root)
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    w = MainWindow()
    qtbot.addWidget(w)
    try:
        panel = w.generate_panel
        i = panel.modelCombo.find("tester/tiny-sd")
        assert i >= 0 and "tester/tiny-sd" in panel.modelCombo.itemText(i)   # listed, offline
        pipe = _choose(qtbot, panel, "tester/tiny-sd")
        assert pipe.name == "tester/tiny-sd" and panel.modelCombo.currentIndex() == i
    finally:
        w.close()


def test_denoise_from_here_equals_text_to_image_with_init_image(qtbot, window, sd, tmp_path):
    rng = np.random.default_rng(1)
    photo = tmp_path / "photo.png"
    save_image(photo, rng.integers(0, 256, (20, 28, 3), dtype=np.uint8))
    window.open_image(str(photo))
    qtbot.waitUntil(lambda: window.photo_path is not None and window.photo_path.name == "photo.png",
                    timeout=TIMEOUT)
    panel = window.generate_panel
    pipe = _choose(qtbot, panel, sd)
    window.set_timestep(300)
    panel.set_start("here")
    _settings(panel, prompt="a cat", negative="", steps=5, seed=2, n=1, w=4.0, size=(16, 16))
    final = _run(qtbot, panel)
    from core.images import load_image
    init = fit_photo(load_image(photo), 16)
    last = run_to_end(text_to_image(pipe, "a cat", guidance=4.0, seed=2, steps=5, init_image=init, t_start=300))
    ref = pipe.decode(last.x_t).clamp(-1, 1).numpy()
    assert final.shape == ref.shape == (1, 3, 10, 16) and np.array_equal(final, ref)
