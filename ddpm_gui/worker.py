"""Run a ``core`` generator on a worker thread and show what it yields without ever blocking the UI.

The engine side is a plain generator (a sampler, the training loop, the bound, the Markov chain): each ``yield`` is
a point where the run can be cancelled and a value shown. This module is the loop around it, after superqt's
``GeneratorWorker`` and Orange's one-task-per-widget executor:

- :class:`GeneratorWorker` (a daemon ``threading.Thread``): each turn, stop if abort was requested, else advance the
  generator once and hand the value to the UI as a copy (:func:`core.jobs.threads.copy_payload`). It ends with one of
  ``finished(value)``, ``cancelled(n_yielded)``, ``errored(exc)``, then ``done()``; on cancel or error the generator
  is closed in the worker thread, so its ``finally`` frees memory first. A bare ``yield`` is a cancel point with
  nothing to show; a function that never yields can never be cancelled. A Python warning raised in the run is
  emitted once per run as one line through ``warned(str)`` (:class:`core.messages.WarningRouter`), not printed.
- :class:`FrameMailbox` keeps only the newest value; :class:`PaintThrottle` paints it at most ``max_fps`` times a
  second.
- :class:`WorkerRunner`, what a panel needs: one run at a time per owner; a replaced run's callbacks never fire.

Closing: :func:`shutdown_all` asks every worker to stop and waits about a second in all (:data:`CLOSE_WAIT_S`); a
run inside one call that cannot be interrupted (a model load from a slow disk) is abandoned, and since its thread
is a daemon, the process exits without it (:func:`exit_now_if_abandoned`). A worker stays referenced until its
thread has ended and is dropped on the UI thread only.

Example::

    runner = window.create_runner("generate")          # or WorkerRunner(parent=self)
    runner.start(sampler.sample_progressive, x_T, steps=50,
                 on_frame=lambda f: view.set_frame(f.image),
                 on_finished=lambda result: status.showMessage("done"),
                 on_cancelled=lambda n: status.showMessage(f"cancelled at step {n}/50"))
    cancel_button.clicked.connect(runner.cancel)
"""
from __future__ import annotations

import atexit
import inspect
import logging
import os
import sys
import threading
import time
from typing import Any, Callable

from PySide6.QtCore import QCoreApplication, QObject, QThread, QTimer, Signal, Slot

from core.jobs.threads import copy_payload
from core.messages import one_line, warning_router

log = logging.getLogger(__name__)

__all__ = ["GeneratorWorker", "WorkerSignals", "FrameMailbox", "PaintThrottle", "WorkerRunner", "copy_payload",
           "one_line", "shutdown_all", "live_workers", "CLOSE_WAIT_S", "exit_now_if_abandoned"]

CLOSE_WAIT_S = 1.0   # closing waits at most this long, in all, for the workers to stop
EXIT_WAIT_S = 10.0   # a script that ends with workers running waits at most this long for them (atexit)


# Workers whose thread may still be running, kept from start() until their thread has ended and dropped on the UI
# thread only: a Qt object (a worker's WorkerSignals) destroyed on a worker thread can deadlock PySide6.
_live: set["GeneratorWorker"] = set()
_live_lock = threading.Lock()


def live_workers() -> list["GeneratorWorker"]:
    """Workers whose thread may still be running (abandoned ones included)."""
    with _live_lock:
        return list(_live)


def _forget(worker: "GeneratorWorker") -> None:
    with _live_lock:
        _live.discard(worker)


def _join(worker: "GeneratorWorker", timeout_s: float) -> bool:
    """Wait up to ``timeout_s`` for ``worker``'s thread and forget the worker if it has ended (UI thread)."""
    ended = worker.wait(max(0, int(timeout_s * 1000)))
    if ended:
        _forget(worker)
    return ended


def shutdown_all(timeout_s: float = CLOSE_WAIT_S) -> bool:
    """Ask every live worker to stop and wait for them, ``timeout_s`` in all; True if all ended. The window's
    ``closeEvent`` and ``ddpm-gui`` call it, and a script that ends with workers running does at exit.

    A worker still inside one long call at the deadline is abandoned (logged, not an error), never destroyed while
    running: it stays referenced, and its daemon thread lets the process exit without it."""
    workers = live_workers()
    for w in workers:
        w.abort()
    deadline = time.monotonic() + max(0.0, timeout_s)
    stuck = [w for w in workers if not _join(w, deadline - time.monotonic())]
    for w in stuck:
        log.info("worker %s is inside a call that cannot be interrupted; left to end on its own", w.name)
    return not stuck


atexit.register(shutdown_all, EXIT_WAIT_S)   # before Python finalizes: see exit_now_if_abandoned


def exit_now_if_abandoned(code: int) -> None:
    """End the process at once with ``code`` when a worker is still inside a call that cannot be interrupted.

    A daemon thread that comes back from native code (torch, safetensors) while Python is finalizing is ended by
    ``pthread_exit``, and unwinding it through C++ frames aborts the process ("terminate called without an active
    exception"). ``ddpm-gui`` calls this after its event loop (settings are saved by then): with nothing stuck it
    returns, and Python exits normally."""
    if any(w.isRunning() for w in live_workers()):
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        os._exit(code)


_gc_guard = None


def collect_garbage_on_ui_thread() -> None:
    """Make Python's cyclic garbage collection run on the UI thread only (call from the UI thread; idempotent),
    with pyqtgraph's ``GarbageCollector`` (a UI-thread timer). A collection on a worker that destroys a dropped
    window deadlocks PySide6: the worker holds a Qt mutex and waits for the GIL, the UI thread the other way round
    (a full test run hung)."""
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
    warned = Signal(str)         # a Python warning raised in the run, as one line (each line once per run)

    def __init__(self, worker: "GeneratorWorker | None" = None):
        super().__init__()
        self._worker = worker
        self.done.connect(self._ended)   # a bound slot of a UI-thread object: queued, runs on the UI thread

    @Slot()
    def _ended(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            _forget_when_joined(worker)


def _forget_when_joined(worker: "GeneratorWorker") -> None:
    """Drop ``worker`` once its thread is gone (it drops its own reference to the worker on the way out), from a
    later event: never inside one of its own slots, never on its thread."""
    if worker.isRunning():
        QTimer.singleShot(5, lambda w=worker: _forget_when_joined(w))
    else:
        QTimer.singleShot(0, lambda w=worker: _forget(w))


class FrameMailbox(QObject):
    """One slot holding the newest value. ``put`` is thread-safe and signals ``available`` only on empty → full."""

    available = Signal()

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._lock = threading.Lock()
        self._value: Any = None
        self._full = False
        self.dropped = 0   # how many were replaced before anyone took them

    def put(self, value: Any) -> None:
        with self._lock:
            was_full = self._full
            self._value, self._full = value, True
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
            self._paint(value)

    def stop(self) -> None:
        self._timer.stop()
        try:
            self._mailbox.available.disconnect(self._on_available)
        except (RuntimeError, TypeError):
            pass


class GeneratorWorker:
    """Runs ``fn(*args, **kwargs)`` — a generator function (or a plain function) — on its own daemon thread (see
    the module docstring). ``mailbox`` receives every value (newest wins); ``emit_yielded`` also emits each through
    ``signals.yielded``. Unlike a ``QThread``, a thread stuck in one call when the app quits never aborts the
    process; ``start``, ``wait(ms)`` and ``isRunning`` behave as ``QThread``'s."""

    def __init__(self, fn: Callable, *args, mailbox: FrameMailbox | None = None, emit_yielded: bool = True,
                 name: str = "", **kwargs):
        collect_garbage_on_ui_thread()
        self.signals = WorkerSignals(self)
        self.name = name or getattr(fn, "__name__", "worker")
        self._fn, self._args, self._kwargs = fn, args, kwargs
        self._mailbox = mailbox
        self._emit_yielded = emit_yielded
        self._abort = threading.Event()
        self._thread: threading.Thread | None = None
        self.n_yielded = 0
        self.outcome: str | None = None   # "finished" | "cancelled" | "errored", set when the run ends

    def __repr__(self) -> str:
        state = "running" if self.isRunning() else (self.outcome or "not started")
        return f"<GeneratorWorker {self.name} {state}>"

    # ----- control (UI thread) -----------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("a worker runs once")
        with _live_lock:
            _live.add(self)
        self._thread = threading.Thread(target=self.run, name=f"worker:{self.name}", daemon=True)
        self._thread.start()

    def abort(self) -> None:
        """Ask the run to stop at its next ``yield`` (returns at once)."""
        self._abort.set()

    def isRunning(self) -> bool:  # noqa: N802 - QThread's name
        return self._thread is not None and self._thread.is_alive()

    def wait(self, ms: int | None = None) -> bool:
        """Wait up to ``ms`` milliseconds (forever when None) for the thread to end; True when it has (or never
        started)."""
        t = self._thread
        if t is None or t is threading.current_thread():
            return t is None
        t.join(None if ms is None else max(0.0, ms / 1000.0))
        return not t.is_alive()

    # ----- the loop (worker thread) ------------------------------------------------------------------------
    def run(self) -> None:
        sig = self.signals
        with warning_router.relay(sig.warned.emit):
            outcome, payload = self._loop(sig)
        self.outcome = outcome
        if outcome == "finished":
            sig.finished.emit(payload)
        elif outcome == "cancelled":
            sig.cancelled.emit(int(payload))
        else:
            sig.errored.emit(payload)
        del payload
        sig.done.emit()

    def _loop(self, sig: WorkerSignals) -> tuple[str, Any]:
        sig.started.emit()
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
                    warning_router.check()
                    try:
                        value = next(gen)
                    except StopIteration as stop:
                        payload = copy_payload(stop.value)
                        break
                    self.n_yielded += 1
                    if value is None or not forward:  # a bare ``yield``, or no one to hand a copy to
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
        return outcome, payload


class WorkerRunner(QObject):
    """One run at a time for one owner; see the module docstring."""

    error = Signal(str)         # one-line message of a failed run that has no on_error callback
    warned = Signal(str)        # a Python warning raised in the current run, as one line
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
        for sig, slot in self._wiring(worker.signals):   # slots of this UI-thread QObject: queued connections
            sig.connect(slot)
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

    def discard(self) -> bool:
        """Ask the current run to stop and forget it at once: none of its callbacks will fire (a newer request
        made its result useless). False if nothing was running."""
        if self._current is None:
            return False
        self._detach_current()
        return True

    def shutdown(self, timeout_s: float = CLOSE_WAIT_S) -> bool:
        """Stop the current run without calling its callbacks, and wait up to ``timeout_s`` for its thread
        (0: do not wait; :func:`shutdown_all` then waits for every runner's at once). No run can start after it.
        True when the thread has ended; a run still inside one long call is left to end on its own."""
        self._closed = True
        worker = self._current
        self._detach_current()
        return worker is None or _join(worker, timeout_s)

    # ----- internals ---------------------------------------------------------------------------------------
    def _detach_current(self) -> None:
        worker = self._current
        if worker is None:
            return
        worker.abort()
        for sig, slot in self._wiring(worker.signals):
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

    def _wiring(self, s: WorkerSignals) -> tuple:
        return ((s.yielded, self._on_yielded), (s.finished, self._on_finished), (s.cancelled, self._on_cancelled),
                (s.errored, self._on_errored), (s.done, self._on_done), (s.warned, self._on_warned))

    def _is_current(self) -> bool:
        return self._current is not None and self.sender() is self._current.signals

    def _call(self, key: str, *args) -> None:
        cb = self._callbacks.get(key)
        if cb is not None:
            cb(*args)

    def _end(self, key: str, value) -> None:
        """The run's outcome, after its last frame is painted; an error without ``on_error`` goes to ``error``."""
        if not self._is_current():   # sender() still names the signal's emitter here, inside its slot
            return
        if self._throttle is not None:
            self._throttle.flush()
        if key == "errored" and self._callbacks.get(key) is None:
            self.error.emit(one_line(value))
        else:
            self._call(key, value)

    @Slot(object)
    def _on_yielded(self, value) -> None:
        if self._is_current():
            self._call("yielded", value)

    @Slot(object)
    def _on_finished(self, result) -> None:
        self._end("finished", result)

    @Slot(int)
    def _on_cancelled(self, n: int) -> None:
        self._end("cancelled", n)

    @Slot(object)
    def _on_errored(self, exc) -> None:
        self._end("errored", exc)

    @Slot(str)
    def _on_warned(self, line: str) -> None:
        if self._is_current():
            self.warned.emit(line)

    @Slot()
    def _on_done(self) -> None:
        if not self._is_current():
            return
        cb = self._callbacks.get("done")
        self._detach_current()
        if cb is not None:
            cb()
