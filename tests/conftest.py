"""Shared test set-up."""
import gc

import pytest


@pytest.fixture(autouse=True)
def _qt_garbage_dies_on_the_main_thread(request):
    """After a Qt test, collect its dropped windows here, on the main thread: with automatic GC off
    (ddpm_gui.worker.collect_garbage_on_ui_thread) they would otherwise wait for the UI timer."""
    yield
    if {"qtbot", "qapp"} & set(request.fixturenames):
        gc.collect()
