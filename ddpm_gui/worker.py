"""Run a ``core`` generator on a worker thread and show what it yields without ever blocking the UI.

The engine side is always a plain generator (a sampler, the training loop, the bound, the Markov chain): each
``yield`` is a point where the run can be cancelled and a value can be shown. This module is the loop around it,
after superqt's ``GeneratorWorker`` and Orange's one-task-per-widget executor:

``GeneratorWorker`` (a ``QThread``)
    Each turn: if abort was requested, stop; else advance the generator one step and hand the value to the UI as a
    *copy* (:func:`copy_payload`: numpy arrays copied, torch tensors detached → CPU → numpy copies). When the run
    ends it emits exactly one of ``finished(return_value)``, ``cancelled(n_yielded)``, ``errored(exception)`` and
    then ``done()``. On cancel or error the generator is ``close()``-d in the worker thread, so its ``finally``
    blocks free memory (GPU memory too) before ``cancelled`` is emitted. A function that never yields can never
    be cancelled: keep model calls inside the loop, one per turn. A bare ``yield`` (None) is a cancel point
    with nothing to show: it is counted but not emitted.

``FrameMailbox``
    A one-slot, thread-safe "newest value" box. The worker ``put``-s every value (replacing the old one) and
    signals ``available`` only when the box goes from empty to full, so however fast the worker runs there is at
    most one notification queued in the UI's event loop.

``PaintThrottle``
    Takes the newest value from a mailbox and calls a paint function at most ``max_fps`` times a second (default
    30); a value that arrives too early is painted when its turn comes, and only the newest one is.

``WorkerRunner`` — the one class most panels need
    One per owner (a panel). ``start(fn, *args, on_frame=…, on_yield=…, on_finished=…, on_cancelled=…,
    on_error=…)`` cancels the owner's previous run and starts a new one; callbacks of a run that was replaced are
    never called, so a late frame of an old run can't land in the new one. ``on_frame`` goes through the mailbox
    and the throttle (for pictures), ``on_yield`` receives every value (for progress or recording; leave it out
    for fast generators). The last frame is always painted before ``on_finished``. Errors go to ``on_error`` or,
    when there is none, to the runner's ``error(str)`` signal as one line (the main window shows it).
    ``cancel()`` answers at once and the run stops at its next ``yield``.

Closing: :func:`shutdown_all` asks every live worker to stop and waits for it, so the app never hits "QThread:
Destroyed while thread is still running"; the main window calls it from ``closeEvent`` and ``ddpm-gui`` again
after the event loop ends. A worker object stays referenced until its thread has really ended.

Example::

    runner = window.create_runner("generate")          # or WorkerRunner(parent=self)
    runner.start(sampler.sample_progressive, x_T, steps=50,
                 on_frame=lambda f: view.set_frame(f.image),
                 on_finished=lambda result: status.showMessage("done"),
                 on_cancelled=lambda n: status.showMessage(f"cancelled at step {n}/50"))
    cancel_button.clicked.connect(runner.cancel)
"""
from __future__ import annotations

import dataclasses
import inspect
import logging
import threading
import time
from typing import Any, Callable

import numpy as np
from PySide6.QtCore import QCoreApplication, QObject, QThread, QTimer, Signal, Slot

log = logging.getLogger(__name__)

__all__ = ["GeneratorWorker", "WorkerSignals", "FrameMailbox", "PaintThrottle", "WorkerRunner", "copy_payload",
           "one_line", "shutdown_all", "live_workers"]


def one_line(exc: BaseException) -> str:
    """A one-line, human message for an exception: the message itself for our ``ValueError`` family (whose
    messages are written for users), ``message (TypeName)`` for anything else."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    if isinstance(exc, OSError) and getattr(exc, "filename", None) and exc.strerror:
        first = f"{exc.filename}: {exc.strerror}"
    if not first:
        return type(exc).__name__
    if isinstance(exc, (ValueError, OSError)):
        return first
    return f"{first} ({type(exc).__name__})"


def copy_payload(value: Any) -> Any:
    """A copy of ``value`` that shares no memory with the worker: numpy arrays are copied, torch tensors become
    numpy copies, tuples/lists/dicts/dataclasses are copied recursively, everything else is passed as is."""
    if isinstance(value, np.ndarray):
        return value.copy()
    if hasattr(value, "detach") and hasattr(value, "cpu") and hasattr(value, "numpy"):  # a torch tensor
        return value.detach().cpu().numpy().copy()
    if isinstance(value, tuple):
        if hasattr(value, "_fields"):  # a namedtuple
            return type(value)(*(copy_payload(v) for v in value))
        return tuple(copy_payload(v) for v in value)
    if isinstance(value, list):
        return [copy_payload(v) for v in value]
    if isinstance(value, dict):
        return {k: copy_payload(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: copy_payload(getattr(value, f.name))
                                             for f in dataclasses.fields(value) if f.init})
    return value


# Workers whose thread may still be running. A QThread whose Python wrapper is collected while it runs aborts the
# process, so every worker is kept here from start() until its thread has ended and been joined.
_live: set["GeneratorWorker"] = set()
_live_lock = threading.Lock()


def live_workers() -> list["GeneratorWorker"]:
    with _live_lock:
        return list(_live)


def shutdown_all(timeout_s: float = 10.0) -> bool:
    """Ask every live worker to stop and wait for their threads (up to ``timeout_s`` in all). True if all ended.

    A worker still inside one long call after the timeout is left referenced (never destroyed while running) and
    logged; it ends at its next ``yield``."""
    workers = live_workers()
    for w in workers:
        w.abort()
    deadline = time.monotonic() + timeout_s
    ok = True
    for w in workers:
        left_ms = max(0, int((deadline - time.monotonic()) * 1000))
        if not w.wait(left_ms):
            log.warning("worker %s did not stop within %.1f s", w.name, timeout_s)
            ok = False
        else:
            _forget(w)
    return ok


def _forget(worker: "GeneratorWorker") -> None:
    with _live_lock:
        _live.discard(worker)


_gc_guard = None


def collect_garbage_on_ui_thread() -> None:
    """Make Python's cyclic garbage collection run on the UI thread only (call from the UI thread; idempotent).

    Automatic collection runs in whichever thread happens to allocate when a threshold is crossed. If that is a
    worker and the garbage holds a Qt object (a window or dialog a test or the user dropped), its destructor runs
    on the worker: PySide6 then deadlocks — the worker holds a Qt mutex and waits for the GIL while the UI thread
    holds the GIL and waits for that mutex (seen here, a full test run hung). pyqtgraph's ``GarbageCollector``
    turns automatic collection off and collects on a UI-thread timer instead.
    """
    global _gc_guard
    app = QCoreApplication.instance()
    if _gc_guard is not None or app is None or QThread.currentThread() is not app.thread():
        return
    from pyqtgraph.util.garbage_collector import GarbageCollector
    _gc_guard = GarbageCollector(interval=0.5)


class WorkerSignals(QObject):
    """The worker's signals live on a separate object created in the UI thread (as in superqt), so receivers in
    the UI thread always get them through queued connections."""

    started = Signal()
    yielded = Signal(object)     # every value, copied (only when the worker was made with emit_yielded=True)
    finished = Signal(object)    # the generator's return value
    cancelled = Signal(int)      # how many values were yielded before the stop
    errored = Signal(object)     # the exception; format it with one_line()
    done = Signal()              # after any of the three above


class FrameMailbox(QObject):
    """One slot holding the newest value. ``put`` is thread-safe and signals ``available`` only on empty → full."""

    available = Signal()

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._lock = threading.Lock()
        self._value: Any = None
        self._full = False
        self.puts = 0      # how many values were offered (for tests and statistics)
        self.dropped = 0   # how many were replaced before anyone took them

    def put(self, value: Any) -> None:
        with self._lock:
            was_full = self._full
            self._value, self._full = value, True
            self.puts += 1
            if was_full:
                self.dropped += 1
        if not was_full:
            self.available.emit()

    def take(self) -> tuple[bool, Any]:
        """(True, newest value) and empty the box, or (False, None) when it is empty."""
        with self._lock:
            if not self._full:
                return False, None
            value, self._value, self._full = self._value, None, False
            return True, value

    def clear(self) -> None:
        self.take()


class PaintThrottle(QObject):
    """Calls ``paint(value)`` with the newest value of ``mailbox`` at most ``max_fps`` times a second."""

    def __init__(self, mailbox: FrameMailbox, paint: Callable[[Any], None], max_fps: float = 30.0,
                 parent: QObject | None = None):
        super().__init__(parent)
        self._mailbox = mailbox
        self._paint = paint
        self._interval = 1.0 / max_fps
        self._last = -1e9
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.flush)
        self.paints = 0
        mailbox.available.connect(self._on_available)

    @Slot()
    def _on_available(self) -> None:
        wait = self._last + self._interval - time.perf_counter()
        if wait <= 0:
            self.flush()
        elif not self._timer.isActive():
            self._timer.start(max(1, int(wait * 1000 + 0.5)))

    @Slot()
    def flush(self) -> None:
        """Paint the newest value now, if there is one."""
        self._timer.stop()
        ok, value = self._mailbox.take()
        if ok:
            self._last = time.perf_counter()
            self.paints += 1
            self._paint(value)

    def stop(self) -> None:
        self._timer.stop()
        try:
            self._mailbox.available.disconnect(self._on_available)
        except (RuntimeError, TypeError):
            pass


class GeneratorWorker(QThread):
    """Runs ``fn(*args, **kwargs)`` — a generator function (or a plain function) — on its own thread.

    See the module docstring for the protocol. ``mailbox`` receives every value (newest wins); ``emit_yielded``
    also emits each value through ``signals.yielded``.
    """

    def __init__(self, fn: Callable, *args, mailbox: FrameMailbox | None = None, emit_yielded: bool = True,
                 name: str = "", **kwargs):
        super().__init__()
        collect_garbage_on_ui_thread()
        self.signals = WorkerSignals()
        self.name = name or getattr(fn, "__name__", "worker")
        self.setObjectName(f"worker:{self.name}")
        self._fn, self._args, self._kwargs = fn, args, kwargs
        self._mailbox = mailbox
        self._emit_yielded = emit_yielded
        self._abort = threading.Event()
        self.n_yielded = 0
        self.outcome: str | None = None   # "finished" | "cancelled" | "errored", set when the run ends
        self.finished.connect(self._joined)  # QThread.finished: the thread is about to end

    # ----- control (UI thread) -----------------------------------------------------------------------------
    def start(self, *args) -> None:  # noqa: D401 - QThread.start
        with _live_lock:
            _live.add(self)
        super().start(*args)

    def abort(self) -> None:
        """Ask the run to stop at its next ``yield`` (returns at once)."""
        self._abort.set()

    @property
    def abort_requested(self) -> bool:
        return self._abort.is_set()

    @Slot()
    def _joined(self) -> None:
        self.wait()  # returns at once: run() has returned; makes sure the OS thread is gone before we drop it
        # Drop our reference from a later event, never from inside this object's own slot.
        QTimer.singleShot(0, lambda w=self: _forget(w))

    # ----- the loop (worker thread) ------------------------------------------------------------------------
    def run(self) -> None:
        sig = self.signals
        sig.started.emit()
        # With neither a mailbox nor the yielded signal, values cross no thread: no copy (a Generate run records
        # its frames itself, and a copy per step is pure overhead for a small model)
        forward = self._mailbox is not None or self._emit_yielded
        gen = None
        outcome, payload = "finished", None
        try:
            result = self._fn(*self._args, **self._kwargs)
            if inspect.isgenerator(result):
                gen = result
                while True:
                    if self._abort.is_set():
                        outcome, payload = "cancelled", self.n_yielded
                        break
                    try:
                        value = next(gen)
                    except StopIteration as stop:
                        payload = copy_payload(stop.value)
                        break
                    self.n_yielded += 1
                    if value is None or not forward:  # a bare ``yield``, or nobody to hand values to
                        continue
                    value = copy_payload(value)
                    if self._mailbox is not None:
                        self._mailbox.put(value)
                    if self._emit_yielded:
                        sig.yielded.emit(value)
                    del value
            else:
                payload = copy_payload(result)
                if self._abort.is_set():
                    outcome, payload = "cancelled", 0
        except BaseException as exc:  # noqa: BLE001 - everything is reported to the UI thread
            log.debug("worker %s raised", self.name, exc_info=True)
            outcome, payload = "errored", exc
        finally:
            if gen is not None:
                try:
                    gen.close()  # runs the generator's finally blocks here, in this thread: memory is freed now
                except BaseException as exc:  # noqa: BLE001
                    if outcome != "errored":
                        outcome, payload = "errored", exc
                gen = None
            self._fn = self._args = self._kwargs = None
        self.outcome = outcome
        if outcome == "finished":
            sig.finished.emit(payload)
        elif outcome == "cancelled":
            sig.cancelled.emit(int(payload))
        else:
            sig.errored.emit(payload)
        sig.done.emit()


class WorkerRunner(QObject):
    """One run at a time for one owner; see the module docstring."""

    error = Signal(str)         # one-line message of a failed run that has no on_error callback
    running_changed = Signal(bool)

    def __init__(self, parent: QObject | None = None, *, name: str = "", max_fps: float = 30.0):
        super().__init__(parent)
        self.name = name
        self.max_fps = max_fps
        self._current: GeneratorWorker | None = None
        self._callbacks: dict[str, Callable | None] = {}
        self._throttle: PaintThrottle | None = None
        self._closed = False
        self.runs_started = 0

    @property
    def current(self) -> GeneratorWorker | None:
        return self._current

    def is_running(self) -> bool:
        return self._current is not None

    def start(self, fn: Callable, *args, on_frame: Callable | None = None, on_yield: Callable | None = None,
              on_finished: Callable | None = None, on_cancelled: Callable | None = None,
              on_error: Callable | None = None, on_done: Callable | None = None, **kwargs) -> GeneratorWorker:
        """Cancel this owner's previous run (its callbacks will never fire) and start ``fn(*args, **kwargs)``."""
        if self._closed:
            raise RuntimeError("this runner was shut down")
        self._detach_current()
        mailbox = None
        if on_frame is not None:
            mailbox = FrameMailbox(self)
            self._throttle = PaintThrottle(mailbox, on_frame, self.max_fps, self)
        worker = GeneratorWorker(fn, *args, mailbox=mailbox, emit_yielded=on_yield is not None,
                                 name=self.name or getattr(fn, "__name__", ""), **kwargs)
        self._current = worker
        self._callbacks = dict(frame=on_frame, yielded=on_yield, finished=on_finished, cancelled=on_cancelled,
                               errored=on_error, done=on_done)
        s = worker.signals
        # Bound methods of this QObject (which lives in the UI thread) → queued connections from the worker.
        s.yielded.connect(self._on_yielded)
        s.finished.connect(self._on_finished)
        s.cancelled.connect(self._on_cancelled)
        s.errored.connect(self._on_errored)
        s.done.connect(self._on_done)
        self.runs_started += 1
        worker.start()
        self.running_changed.emit(True)
        return worker

    def cancel(self) -> bool:
        """Ask the current run to stop (its ``on_cancelled`` fires when it has). False if nothing is running."""
        if self._current is None:
            return False
        self._current.abort()
        return True

    def shutdown(self, timeout_s: float = 10.0) -> bool:
        """Stop the current run without calling its callbacks and wait for the thread. Used when closing."""
        self._closed = True
        worker = self._current
        self._detach_current()
        if worker is None:
            return True
        ok = worker.wait(int(timeout_s * 1000))
        if ok:
            _forget(worker)
        return ok

    # ----- internals ---------------------------------------------------------------------------------------
    def _detach_current(self) -> None:
        worker = self._current
        if worker is None:
            return
        worker.abort()
        s = worker.signals
        for sig, slot in ((s.yielded, self._on_yielded), (s.finished, self._on_finished),
                          (s.cancelled, self._on_cancelled), (s.errored, self._on_errored),
                          (s.done, self._on_done)):
            try:
                sig.disconnect(slot)
            except (RuntimeError, TypeError):
                pass
        if self._throttle is not None:
            self._throttle.stop()
            self._throttle.deleteLater()
            self._throttle = None
        self._current = None
        self._callbacks = {}
        self.running_changed.emit(False)

    def _is_current(self) -> bool:
        return self._current is not None and self.sender() is self._current.signals

    def _call(self, key: str, *args) -> None:
        cb = self._callbacks.get(key)
        if cb is not None:
            cb(*args)

    def _flush_frames(self) -> None:
        if self._throttle is not None:
            self._throttle.flush()

    @Slot(object)
    def _on_yielded(self, value) -> None:
        if self._is_current():
            self._call("yielded", value)

    @Slot(object)
    def _on_finished(self, result) -> None:
        if self._is_current():
            self._flush_frames()
            self._call("finished", result)

    @Slot(int)
    def _on_cancelled(self, n: int) -> None:
        if self._is_current():
            self._flush_frames()
            self._call("cancelled", n)

    @Slot(object)
    def _on_errored(self, exc) -> None:
        if not self._is_current():
            return
        self._flush_frames()
        if self._callbacks.get("errored") is not None:
            self._call("errored", exc)
        else:
            self.error.emit(one_line(exc))

    @Slot()
    def _on_done(self) -> None:
        if not self._is_current():
            return
        cb = self._callbacks.get("done")
        self._detach_current()
        if cb is not None:
            cb()
