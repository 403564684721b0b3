"""DDPM Studio's desktop app (PySide6 + pyqtgraph): thin views over the Qt-free ``core`` engine.

``MainWindow`` is imported lazily, so the Qt-free helper :mod:`ddpm_gui.chain`
can be used without a display.
"""
__all__ = ["MainWindow"]


def __getattr__(name):
    if name == "MainWindow":
        from ddpm_gui.main_window import MainWindow
        return MainWindow
    raise AttributeError(f"module 'ddpm_gui' has no attribute {name!r}")
