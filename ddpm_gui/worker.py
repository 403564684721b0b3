"""Run a ``core`` generator on a worker thread and show what it yields without ever blocking the UI.

The engine side is always a plain generator (a sampler, the training loop, the bound, the Markov chain): each
``yield`` is a point where the run can be cancelled and a value can be shown. This module is the loop around it,
after superqt's ``GeneratorWorker`` and Orange's one-task-per-widget executor:

``GeneratorWorker`` (a daemon ``threading.Thread``, not a ``QThread``)
    Each turn: if abort was requested, stop; else advance the generator one step and hand the value to the UI as a
    *copy* (:func:`copy_payload`: numpy arrays copied, torch tensors detached → CPU → numpy copies). When the run
    ends it emits exactly one of ``finished(return_value)``, ``cancelled(n_yielded)``, ``errored(exception)`` and
    then ``done()``. On cancel or error the generator is ``close()``-d in the worker thread, so its ``finally``
    blocks free memory (GPU memory too) before ``cancelled`` is emitted. A function that never yields can never
    be cancelled: keep model calls inside the loop, one per turn. A bare ``yield`` (None) is a cancel point
    with nothing to show: it is counted but not emitted. A Python warning raised in the run (a ``UserWarning`` of
    torch, a ``RuntimeWarning`` of numpy) is emitted once per run as one line through ``warned(str)`` instead of
    being printed to stderr (:func:`core.messages.warning_line`).

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

Closing: :func:`shutdown_all` asks every live worker to stop and waits for them, but only about a second in all
(:data:`CLOSE_WAIT_S`): a run that yields stops at its next ``yield`` (its ``finally`` blocks run); a run inside
one call that cannot be interrupted (a model load from a slow disk, a blocking call) is *abandoned*: its signals
are detached, it stays referenced, and because its thread is a daemon Python thread (no Qt object owns a running
thread) the process exits without waiting for it and without "QThread: Destroyed while thread is still running".
The main window calls it from ``closeEvent`` and ``ddpm-gui`` again after the event loop ends, then ends the
process at once if a worker is still stuck (:func:`exit_now_if_abandoned`: a daemon thread that comes back from
torch's C++ code while Python finalizes would abort the process). A script that ends with workers running waits
for them a few seconds at exit (an ``atexit`` hook). A worker object stays referenced until its thread has really
ended, and is dropped on the UI thread only.

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
import dataclasses
import inspect
import logging
import os
import sys
import threading
import time
import warnings
from typing import Any, Callable

import numpy as np
from PySide6.QtCore import QCoreApplication, QObject, QThread, QTimer, Signal, Slot

from core.jobs.threads import background_priority  # noqa: F401 - part of this module's API
from core.messages import one_line, warning_line

log = logging.getLogger(__name__)

__all__ = ["GeneratorWorker", "WorkerSignals", "FrameMailbox", "PaintThrottle", "WorkerRunner", "copy_payload",
           "one_line", "shutdown_all", "live_workers", "abandoned_workers", "background_priority", "CLOSE_WAIT_S",
           "exit_now_if_abandoned"]

CLOSE_WAIT_S = 1.0   # closing waits at most this long, in all, for the workers to stop
EXIT_WAIT_S = 10.0   # a script that ends with a worker still running waits at most this long for it (see below)


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


# Workers whose thread may still be running, kept from start() until their thread has ended. They are dropped on
# the UI thread only: the last reference to a worker must never die on its own thread (its WorkerSignals is a
# QObject, and a Qt object destroyed on a worker thread can deadlock PySide6; see collect_garbage_on_ui_thread).
_live: set["GeneratorWorker"] = set()
_abandoned: set["GeneratorWorker"] = set()   # left running at close, inside one long call
_live_lock = threading.Lock()


def live_workers() -> list["GeneratorWorker"]:
    """Workers whose thread may still be running (abandoned ones included)."""
    with _live_lock:
        return list(_live)


def abandoned_workers() -> list["GeneratorWorker"]:
    """Workers that :func:`shutdown_all` left running because they were inside one call that cannot be
    interrupted; they end on their own (their results go nowhere) or with the process."""
    with _live_lock:
        return [w for w in _abandoned if w.isRunning()]


def shutdown_all(timeout_s: float = CLOSE_WAIT_S) -> bool:
    """Ask every live worker to stop and wait for them, ``timeout_s`` in all. True if all ended.

    A worker still inside one long call at the deadline is abandoned, never destroyed while running: it stays
    referenced, its thread is a daemon thread, so the process can exit without it. It is logged (not an error)."""
    workers = live_workers()
    for w in workers:
        w.abort()
    deadline = time.monotonic() + max(0.0, timeout_s)
    ok = True
    for w in workers:
        if w.wait(max(0, int((deadline - time.monotonic()) * 1000))):
            _forget(w)
        else:
            ok = False
            with _live_lock:
                _abandoned.add(w)
            log.info("worker %s is inside a call that cannot be interrupted; left to end on its own", w.name)
    return ok


def exit_now_if_abandoned(code: int) -> None:
    """End the process at once with ``code`` when a worker is still inside a call that cannot be interrupted.

    A daemon thread that comes back from native code (torch, safetensors) while Python is finalizing is ended by
    ``pthread_exit``, and unwinding it through C++ frames aborts the process ("terminate called without an active
    exception"). ``ddpm-gui`` calls this after its event loop (settings are saved by then): with nothing stuck it
    returns, and Python exits normally."""
    if abandoned_workers() or any(w.isRunning() for w in live_workers()):
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        os._exit(code)


@atexit.register
def _wait_at_exit() -> None:
    """A script that did not go through ``ddpm-gui`` and ends with workers running: ask them to stop and wait (at
    most :data:`EXIT_WAIT_S`) before Python finalizes, for the reason given in :func:`exit_now_if_abandoned`."""
    workers = [w for w in live_workers() if w.isRunning()]
    for w in workers:
        w.abort()
    deadline = time.monotonic() + EXIT_WAIT_S
    for w in workers:
        w.wait(max(0, int((deadline - time.monotonic()) * 1000)))


def _forget(worker: "GeneratorWorker") -> None:
    with _live_lock:
        _live.discard(worker)
        _abandoned.discard(worker)


class _WarningRelay:
    """Python warnings raised on a worker's thread go to that worker's report function as one line (each distinct
    line once per run); warnings on any other thread go where they went before.

    ``warnings.catch_warnings`` (what :func:`core.messages.relay_warnings` uses) swaps process-wide state and is not
    safe when several threads enter and leave it in any order (Python < 3.14): two overlapping runs would restore
    each other's state and leave ``showwarning`` replaced for good. Here one router is installed while any run is
    relaying (counted under a lock) and picks the report function of the current thread; the warning filters are
    left as they are (so, as everywhere in Python, one warning from one place is shown once per process, and
    deprecation warnings stay hidden)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._users = 0
        self._fallback = None
        self._local = threading.local()
        self._hook = self._show   # one bound-method object, so ``warnings.showwarning is self._hook`` holds

    def _show(self, message, category, filename, lineno, file=None, line=None):
        target = getattr(self._local, "target", None)
        if target is None:
            fallback = self._fallback or warnings._showwarning_orig
            return fallback(message, category, filename, lineno, file, line)
        report, seen = target
        text = warning_line(message)
        if text not in seen:
            seen.add(text)
            try:
                report(text)
            except Exception:  # noqa: BLE001 - a warning must never end a run
                log.debug("could not relay a warning", exc_info=True)

    def _install(self) -> None:
        if warnings.showwarning is not self._hook:
            self._fallback = warnings.showwarning
            warnings.showwarning = self._hook

    def enter(self, report: Callable[[str], None]) -> None:
        self._local.target = (report, set())
        with self._lock:
            self._users += 1
            self._install()

    def check(self) -> None:
        """Re-install the router if someone replaced ``showwarning`` meanwhile (a ``catch_warnings`` block that
        began before this run and ended during it)."""
        if warnings.showwarning is not self._hook:
            with self._lock:
                if self._users:
                    self._install()

    def leave(self) -> None:
        self._local.target = None
        with self._lock:
            self._users -= 1
            if self._users == 0 and warnings.showwarning is self._hook:
                warnings.showwarning = self._fallback or warnings._showwarning_orig
                self._fallback = None


_relay = _WarningRelay()


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


class GeneratorWorker:
    """Runs ``fn(*args, **kwargs)`` — a generator function (or a plain function) — on its own daemon thread.

    See the module docstring for the protocol. ``mailbox`` receives every value (newest wins); ``emit_yielded``
    also emits each value through ``signals.yielded``. The thread is a plain Python daemon thread, so a run that
    is stuck in one call when the app quits can never abort the process the way a running ``QThread`` does when
    it is destroyed; its signals reach the UI thread as queued signals all the same. ``start``, ``wait(ms)``,
    ``isRunning`` and ``isFinished`` behave as ``QThread``'s.
    """

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

    @property
    def abort_requested(self) -> bool:
        return self._abort.is_set()

    def isRunning(self) -> bool:  # noqa: N802 - QThread's name
        return self._thread is not None and self._thread.is_alive()

    def isFinished(self) -> bool:  # noqa: N802 - QThread's name
        return self._thread is not None and not self._thread.is_alive()

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
        _relay.enter(sig.warned.emit)
        try:
            outcome, payload = self._loop(sig)
        finally:
            _relay.leave()
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
                    _relay.check()
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
        s = worker.signals
        # Bound methods of this QObject (which lives in the UI thread) → queued connections from the worker.
        s.yielded.connect(self._on_yielded)
        s.finished.connect(self._on_finished)
        s.cancelled.connect(self._on_cancelled)
        s.errored.connect(self._on_errored)
        s.done.connect(self._on_done)
        s.warned.connect(self._on_warned)
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
        if worker is None:
            return True
        ok = worker.wait(int(max(0.0, timeout_s) * 1000))
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
                          (s.done, self._on_done), (s.warned, self._on_warned)):
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
