"""Queued signals from a worker thread to the UI thread, in bulk (issue 2).

PySide6-Essentials 6.12.0 aborts the interpreter ("Fatal Python error: bool_dealloc") when a worker QThread emits
many queued signals to the main thread: 20,000 under an event loop, or 300 while the main thread spins
processEvents(). pyproject.toml pins PySide6 below 6.12; this test checks whatever is installed, in a subprocess
so that such a crash is a failing test, not a dead pytest.
"""
import os
import subprocess
import sys
import textwrap

STRESS = textwrap.dedent("""
    import sys, time
    from PySide6.QtCore import QObject, QThread, QTimer, Signal, Slot
    from PySide6.QtWidgets import QApplication

    app = QApplication([])

    class Emitter(QThread):
        value = Signal(int)
        def __init__(self, n):
            super().__init__()
            self.n = n
        def run(self):
            for i in range(self.n):
                self.value.emit(i)

    class Receiver(QObject):
        def __init__(self, n, quit_when_done):
            super().__init__()
            self.n, self.count, self.total, self.quit = n, 0, 0, quit_when_done
        @Slot(int)
        def on_value(self, v):
            self.count += 1
            self.total += v
            if self.quit and self.count == self.n:
                app.quit()

    def check(label, r, n):
        ok = r.count == n and r.total == n * (n - 1) // 2
        print(f"{label}: {r.count}/{n} {'OK' if ok else 'MISSING'}", flush=True)
        return ok

    # 1) 20,000 emissions to a main-thread receiver under the event loop
    N1 = 20_000
    r1 = Receiver(N1, True)
    e1 = Emitter(N1)
    e1.value.connect(r1.on_value)
    QTimer.singleShot(60_000, app.quit)   # a watchdog, not a wait
    e1.start()
    app.exec()
    e1.wait()
    ok1 = check("event loop", r1, N1)

    # 2) 2,000 emissions (well over the 300 that crashed 6.12.0) while the main thread spins processEvents()
    N2 = 2_000
    r2 = Receiver(N2, False)
    e2 = Emitter(N2)
    e2.value.connect(r2.on_value)
    e2.start()
    deadline = time.monotonic() + 60
    while r2.count < N2 and time.monotonic() < deadline:
        app.processEvents()
    e2.wait()
    app.processEvents()
    ok2 = check("processEvents loop", r2, N2)

    # 3) the app's own GeneratorWorker/WorkerRunner: 20,000 yields, every one delivered, in order
    from ddpm_gui.worker import WorkerRunner
    got, done = [], []
    runner = WorkerRunner(name="stress")
    def count(n):
        for i in range(n):
            yield i
        return n
    def finished(n):
        done.append(n)
        app.quit()
    runner.start(count, 20_000, on_yield=got.append, on_finished=finished)
    QTimer.singleShot(60_000, app.quit)
    app.exec()
    ok3 = got == list(range(20_000)) and done == [20_000]
    print(f"generator worker: {len(got)}/20000 {'OK' if ok3 else 'MISSING'}", flush=True)
    runner.shutdown()
    import PySide6
    print("PySide6", PySide6.__version__)
    sys.exit(0 if ok1 and ok2 and ok3 else 3)
""")


def test_worker_thread_signals_in_bulk_all_arrive_and_the_process_survives():
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    proc = subprocess.run([sys.executable, "-c", STRESS], capture_output=True, text=True, timeout=240, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"exit {proc.returncode} (a negative code is a crash, e.g. -6 = abort):\n{out[-3000:]}"
    assert "event loop: 20000/20000 OK" in proc.stdout
    assert "processEvents loop: 2000/2000 OK" in proc.stdout
    assert "generator worker: 20000/20000 OK" in proc.stdout
