"""A small stderr progress bar with rate and ETA (the CLI's; the GUI shows the same numbers in its own widgets)."""
from __future__ import annotations

import sys
import time

from core.messages import format_eta


def drive(steps, label: str, unit: str = "step", each=None):
    """Run a sampler generator under a :class:`Progress` bar; ``each(step)`` sees every step first. Returns the
    last step (the sample) and the seconds taken."""
    last = None
    start = time.perf_counter()
    with Progress(0, label, unit=unit) as bar:
        for step in steps:
            bar.total = step.total
            if each is not None:
                each(step)
            bar.update(step.index, t=step.t)
            last = step
    return last, time.perf_counter() - start


class Progress:
    """``with Progress(total, "sampling") as bar: bar.update(k, loss=…)`` — redraws at most 10×/s on a TTY,
    every 10% otherwise (so logs stay short)."""

    def __init__(self, total: int, label: str = "", unit: str = "it", stream=None):
        self.total, self.label, self.unit = int(total), label, unit
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.perf_counter()
        self._last_draw = 0.0
        self._last_decile = -1
        self.done = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def rate(self) -> float:
        elapsed = time.perf_counter() - self.start
        return self.done / elapsed if elapsed > 0 else 0.0

    def update(self, done: int, **extra) -> None:
        self.done = int(done)
        now = time.perf_counter()
        decile = self.done * 10 // max(self.total, 1)
        if self.tty and now - self._last_draw < 0.1 and self.done < self.total:
            return
        if not self.tty and decile == self._last_decile and self.done < self.total:
            return
        self._last_draw, self._last_decile = now, decile
        rate = self.rate()
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        width = 24
        filled = width * self.done // max(self.total, 1)
        extras = "".join(f" {k}={v:.4g}" if isinstance(v, float) else f" {k}={v}" for k, v in extra.items())
        line = (f"{self.label} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
                f"{rate:.2f} {self.unit}/s ETA {format_eta(eta)}{extras}")
        self.stream.write(("\r" + line) if self.tty else (line + "\n"))
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
