"""``ddpm-gui [IMAGE]`` opens DDPM Studio; ``ddpm-gui --screenshot OUT.png [--t N] [IMAGE]`` renders the window
offscreen to a PNG and exits (for the README and headless checks)."""
from __future__ import annotations

import argparse
import gc
import os
import sys

EXIT_OK, EXIT_BAD_INPUT = 0, 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ddpm-gui", description="DDPM Studio: see denoising diffusion happen.")
    p.add_argument("image", nargs="?", help="a photo to open (default: the last one, or the built-in cat)")
    p.add_argument("--screenshot", metavar="OUT.png", help="render the window offscreen to a PNG and exit")
    p.add_argument("--t", type=int, help="timestep to show (clamped to 0…T−1)")
    p.add_argument("--size", default="1440x900", help="window size for --screenshot, WxH (default 1440x900)")
    p.add_argument("--schedule", help="a preset name or a schedule .json for --screenshot")
    p.add_argument("--show", default="", help="for --screenshot: comma list of extra panes to show: x0, eps")
    return p


def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size must look like 1440x900, got {text!r}") from None
    if not (320 <= w <= 8000 and 240 <= h <= 8000):
        raise ValueError(f"--size {text} is out of range (320×240 … 8000×8000)")
    return w, h


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.screenshot:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        return _screenshot(args)

    from PySide6.QtWidgets import QApplication

    from ddpm_gui.main_window import MainWindow
    from ddpm_gui.settings import APPLICATION, ORGANIZATION, open_settings
    from ddpm_gui.worker import exit_now_if_abandoned, shutdown_all

    app = QApplication.instance() or QApplication([sys.argv[0]])
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APPLICATION)
    window = MainWindow(args.image, settings=open_settings())
    if args.t is not None:
        window.set_timestep(args.t)
    window.show()
    # Python's full garbage collections run on the UI thread (worker.collect_garbage_on_ui_thread) and would walk
    # the ~220,000 objects of torch, pyqtgraph and the window each time: a ~200 ms stall. They live as long as the
    # process, so leave them out of every later collection.
    gc.collect()
    gc.freeze()
    rc = app.exec()
    shutdown_all()   # ≤ 1 s (the window's closeEvent did the same)
    exit_now_if_abandoned(rc)   # a worker stuck in one call (a slow model load) never holds up or aborts the exit
    return rc


def _screenshot(args) -> int:
    from pathlib import Path

    from PySide6.QtWidgets import QApplication

    from core.messages import one_line
    from core.photo import load_photo
    from core.schedule import parse_schedule_spec
    from ddpm_gui.main_window import MainWindow
    from ddpm_gui.worker import exit_now_if_abandoned, shutdown_all

    out = Path(args.screenshot)
    try:
        size = _parse_size(args.size)
        if out.suffix.lower() != ".png":
            raise ValueError(f"--screenshot {out}: write a .png")
        if str(out.parent) and not out.parent.is_dir():
            raise ValueError(f"--screenshot {out}: folder {out.parent} does not exist")
        if args.image:
            load_photo(args.image)  # a bad file is a one-line error here, not a message box nobody sees
        schedule = parse_schedule_spec(args.schedule) if args.schedule else None
    except Exception as e:  # noqa: BLE001 - ValueError, ImageLoadError, ScheduleError, or what a crafted file raises
        print(f"ddpm-gui: error: {one_line(e)}", file=sys.stderr)
        return EXIT_BAD_INPUT

    app = QApplication.instance() or QApplication([sys.argv[0]])
    window = MainWindow(args.image)
    if schedule is not None:
        window.schedule_panel.set_schedule(schedule)
    window.resize(*size)
    shows = {s.strip() for s in args.show.split(",") if s.strip()}
    window.showX0Check.setChecked("x0" in shows)
    window.showNoiseCheck.setChecked("eps" in shows or "noise" in shows)
    window.show()
    if window.photo_loading:   # a large photo is decoded on a worker: wait for it (or its failure)
        _run_events(app, 120_000, window.photoLoaded, window.photoFailed)
    window.set_timestep(window.schedule.T // 2 if args.t is None else args.t)
    _run_events(app, 600)   # let layout, the first frame and the strip settle, then grab
    window.fit_view()
    _run_events(app, 150)
    try:
        window.save_screenshot(out)
    except OSError as e:
        print(f"ddpm-gui: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"wrote {out} ({window.width()}×{window.height()}, t = {window.timestep})")
    window.close()
    shutdown_all()
    exit_now_if_abandoned(EXIT_OK)
    return EXIT_OK


def _run_events(app, ms: int, *until) -> None:
    """Run the event loop for ``ms`` milliseconds, or until one of the signals ``until`` fires."""
    from PySide6.QtCore import QEventLoop, QTimer
    loop = QEventLoop(app)
    for signal in until:
        signal.connect(loop.quit)
    QTimer.singleShot(ms, loop.quit)
    loop.exec()


if __name__ == "__main__":
    sys.exit(main())
