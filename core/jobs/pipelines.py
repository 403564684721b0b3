"""The one Stable Diffusion pipeline loaded in this process, shared by every panel (Generate, ELBO, the main view's
latent slider): a second copy of an SD model would double its gigabytes. :func:`load_pipeline_job` is the loading
job a worker drives — it yields each stage's name (:data:`core.latent.pipeline.LOAD_STAGES`) so the window shows
progress and Cancel stops between parts, then the :class:`~core.latent.pipeline.LatentPipeline`. A pipeline
already loaded for the same SPEC, device and precision is yielded at once."""
from __future__ import annotations

import threading
from typing import Iterator

from core.model_spec import ModelCache, cache_key

PIPELINES = ModelCache()
_loading = threading.Lock()  # one load at a time: two panels asking together get one copy


def pipeline_key(spec: str, device, precision: str | None = None) -> tuple:
    """The cache key of a pipeline SPEC (a folder or a cached repo id, resolved) on ``device``."""
    from core.models.load import model_folder
    return cache_key(str(model_folder(spec)), device, precision=precision)


def loaded_pipeline(spec: str, device, precision: str | None = None):
    """The pipeline for SPEC if it is loaded now, else None (never waits, never loads)."""
    try:
        return PIPELINES.peek(pipeline_key(spec, device, precision))
    except ValueError:
        return None


def load_pipeline_job(spec: str, device, precision: str | None = None) -> Iterator:
    """Yield the loading stages of SPEC's pipeline, then the pipeline (from :data:`PIPELINES` when it is there).
    Once the new folder has passed its checks, the pipeline held is dropped (its memory freed) before the new one
    loads; a folder that fails its checks leaves it in place. Errors are one-line ``ModelLoadError``\\ s."""
    from core.latent.pipeline import loading
    from core.models.load import model_folder
    key = pipeline_key(spec, device, precision)
    with _loading:
        pipe = PIPELINES.peek(key)
        if pipe is None:
            from core.latent.pipeline import LOAD_STAGES
            for item in loading(model_folder(spec), device=device, precision=precision):
                if isinstance(item, str):
                    if item == LOAD_STAGES[1]:  # the folder checked out: free the old pipeline before the new
                        PIPELINES.clear()
                    yield item
                else:
                    pipe = item
            PIPELINES.get(key, lambda: pipe)
    yield pipe
