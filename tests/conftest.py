"""Shared test set-up."""
import gc

import pytest
import torch


@pytest.fixture(autouse=True)
def _qt_garbage_dies_on_the_main_thread(request):
    """After a Qt test, collect its dropped windows here, on the main thread: with automatic GC off
    (ddpm_gui.worker.collect_garbage_on_ui_thread) they would otherwise wait for the UI timer."""
    yield
    if {"qtbot", "qapp"} & set(request.fixturenames):
        gc.collect()


@pytest.fixture
def one_torch_thread():
    """This machine's 2 cores are shared with other jobs: tiny tensors on one thread keep a test fast."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


@pytest.fixture
def window(qtbot):
    """The main window on its defaults (the built-in cat), shown and painted; test files may override it."""
    from ddpm_gui import MainWindow
    w = MainWindow()
    qtbot.addWidget(w)
    w.show()
    qtbot.waitUntil(lambda: w.displayed_image() is not None, timeout=5000)
    return w
