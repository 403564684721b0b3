"""DDPM Studio's desktop app (PySide6 + pyqtgraph): thin views over the Qt-free ``core`` engine.

``MainWindow`` is imported lazily: ``import ddpm_gui`` alone loads no Qt. (What the window computes lives in
``core`` and runs without a display: the photo and its noise in :mod:`core.photo`, the readout in
:mod:`core.readout`, the Markov chain in :mod:`core.jobs.chain`.)
"""
__all__ = ["MainWindow"]


def __getattr__(name):
    if name == "MainWindow":
        from ddpm_gui.main_window import MainWindow
        return MainWindow
    raise AttributeError(f"module 'ddpm_gui' has no attribute {name!r}")
