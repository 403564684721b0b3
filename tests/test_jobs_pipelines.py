"""The shared pipeline job: stages then the pipeline; a second ask for the same SPEC loads nothing."""
import pytest

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from core.jobs.pipelines import PIPELINES, load_pipeline_job, loaded_pipeline  # noqa: E402
from core.latent.pipeline import LOAD_STAGES, LatentPipeline  # noqa: E402
from core.models.checkpoint import ModelLoadError  # noqa: E402
from sd_tiny import save_tiny_pipeline  # noqa: E402


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    return save_tiny_pipeline(tmp_path_factory.mktemp("sd") / "tiny-sd")


def test_stages_then_the_pipeline_then_cached(sd, one_torch_thread):
    PIPELINES.clear()
    assert loaded_pipeline(str(sd), "cpu") is None
    first = list(load_pipeline_job(str(sd), "cpu"))
    assert first[:-1] == list(LOAD_STAGES) and isinstance(first[-1], LatentPipeline)
    assert loaded_pipeline(str(sd), "cpu") is first[-1]
    again = list(load_pipeline_job(str(sd), "cpu"))
    assert again == [first[-1]]  # no stage: nothing loaded a second time
    PIPELINES.clear()


def test_a_cancelled_load_keeps_nothing(sd):
    PIPELINES.clear()
    job = load_pipeline_job(str(sd), "cpu")
    assert next(job) == LOAD_STAGES[0]
    job.close()
    assert loaded_pipeline(str(sd), "cpu") is None


def test_a_missing_spec_is_one_line(tmp_path):
    with pytest.raises(ModelLoadError) as e:
        list(load_pipeline_job(str(tmp_path / "nope"), "cpu"))
    assert "\n" not in str(e.value)


def test_a_bad_folder_keeps_the_pipeline_held(sd, tmp_path):
    import shutil
    PIPELINES.clear()
    held = list(load_pipeline_job(str(sd), "cpu"))[-1]
    broken = tmp_path / "broken"
    shutil.copytree(sd, broken)
    shutil.rmtree(broken / "unet")
    with pytest.raises(ModelLoadError):
        list(load_pipeline_job(str(broken), "cpu"))
    assert loaded_pipeline(str(sd), "cpu") is held
    PIPELINES.clear()
