"""Generate in the window against the headless sampler: streaming overhead, UI stalls, click → first frame.

The model is the built-in MNIST model when it is installed, else a random-weight UNet of the same architecture
(``unet_config_for("small", 28, 1, 10)``, the built-in's config) saved as a model folder and loaded by the panel
like any other. Every case is run interleaved (headless, window, headless, window, …) and the medians compared:

- **overhead**: wall time of ``run_to_end(sample(model, sampler, steps, seed, n))`` on the main thread against
  a Generate click in the window → its ``runFinished`` signal (the same model object, steps and seed; the final
  images are checked equal). The window run includes the worker thread, the per-step grids and recording, the
  ≤ 30 fps painting of x_t and x̂_0 and the slider following t. Goal (issue 5): ≤ 5% slower.
- **CPU time**: the same pairs measured in process CPU time (all threads: the sampler, the UI's painting and
  polling), which a busy machine disturbs far less than wall time: the extra work streaming costs.
- **stall**: a 5 ms precise QTimer runs during a second window run of each repeat (not during the timed one: the
  probe's own 200 ticks a second compete for the GIL); the longest gap between two ticks, minus 5 ms, is the
  longest time the UI event loop was blocked. Goal: ≤ 50 ms.
- **first frame**: with the model loaded, a click on ``generateButton`` → the first frame handed to the views
  (``stepPainted``) and → the end of the x_t view's next repaint. Goal: ≤ 200 ms.

Both runs use ``--threads`` torch threads (default 1, see the option's help).

    QT_QPA_PLATFORM=offscreen python benchmarks/bench_generate_stream.py [--repeats 5] [--json OUT.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PySide6.QtCore import QEventLoop, Qt, QTimer  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from core.models.load import builtin_models, load_model  # noqa: E402
from core.samplers import run_to_end, sample  # noqa: E402

CASES = {  # name: (sampler, steps, batch): many cheap steps (per-step overhead shows most), few batched ones
    "ddpm-250x1": ("ddpm", 250, 1),
    "ddim-50x16": ("ddim", 50, 16),
}


def model_folder(tmp: Path) -> tuple[str, str]:
    if "builtin:mnist" in builtin_models():
        return "builtin:mnist", "the built-in MNIST model (builtin:mnist)"
    from core.models.checkpoint import save_checkpoint
    from core.models.unet import UNet
    from core.schedule import NoiseSchedule
    from core.train import unet_config_for
    torch.manual_seed(0)
    cfg = unet_config_for("small", 28, 1, 10)
    folder = tmp / "small-random"
    save_checkpoint(folder, UNet(cfg), NoiseSchedule.preset("linear", T=1000), name="small-random")
    n_params = sum(p.numel() for p in UNet(cfg).parameters())
    return str(folder), (f"a random-weight UNet with the built-in's architecture (unet_config_for('small', 28, 1, "
                         f"10): base 32, mults (1, 2, 2), {n_params / 1e6:.2f} M parameters); the built-in was not "
                         "installed yet")


def wait(signal, timeout_ms=600_000):
    loop = QEventLoop()
    got = []

    def on(*args):
        if not got:
            got.append((time.perf_counter(), args))
            loop.quit()
    signal.connect(on)
    QTimer.singleShot(timeout_ms, loop.quit)
    loop.exec()
    signal.disconnect(on)
    if not got:
        raise TimeoutError(f"no {signal} within {timeout_ms} ms")
    return got[0]


class StallProbe:
    """A 5 ms precise timer; ``max_gap_ms`` is the longest gap between two ticks minus the interval."""

    def __init__(self, interval_ms: int = 5):
        self.interval = interval_ms
        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self._tick)
        self.gaps: list[float] = []
        self._last = None

    def start(self):
        self.gaps, self._last = [], time.perf_counter()
        self.timer.start()

    def stop(self):
        self.timer.stop()

    def _tick(self):
        now = time.perf_counter()
        self.gaps.append((now - self._last) * 1000 - self.interval)
        self._last = now

    @property
    def max_gap_ms(self) -> float:
        return max(self.gaps) if self.gaps else float("nan")

    def pct(self, q) -> float:
        return float(np.percentile(self.gaps, q)) if self.gaps else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7, help="headless/window pairs per case (interleaved)")
    ap.add_argument("--cases", default=",".join(CASES), help="comma list of " + ", ".join(CASES))
    ap.add_argument("--first-frame", type=int, default=10, help="click → first frame samples")
    ap.add_argument("--no-follow", action="store_true", help="do not move the window's slider with t")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for both runs (default 1: on a shared "
                    "2-core machine two OpenMP threads that wait for each other made one UNet call 16× slower)")
    ap.add_argument("--steps", type=int, help="override every case's number of steps (quick checks)")
    ap.add_argument("--budget", type=float, help="the panel's paint_budget: its UI CPU time as a share of the "
                    "sampler's (default: the panel's own)")
    ap.add_argument("--switch-interval", type=float, help="sys.setswitchinterval(S) for the GIL (default: "
                    "Python's 0.005 s)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.switch_interval:
        import sys
        sys.setswitchinterval(args.switch_interval)

    app = QApplication.instance() or QApplication([])
    from ddpm_gui.main_window import MainWindow
    tmp = Path(tempfile.mkdtemp(prefix="bench-generate-"))
    spec, model_desc = model_folder(tmp)
    w = MainWindow()
    w.resize(1440, 900)
    w.show()
    panel = w.generate_panel
    w.show_panel(panel)
    panel.followCheck.setChecked(not args.no_follow)
    if args.budget is not None:
        panel.paint_budget = args.budget
    panel.select_model(spec)
    wait(panel.modelReady, 120_000)
    den = load_model(spec, device="cpu")          # the headless run's own copy (same weights)
    probe = StallProbe()
    # the machine's own noise: the same probe with nothing running
    probe.start()
    loop = QEventLoop()
    QTimer.singleShot(5000, loop.quit)
    loop.exec()
    probe.stop()
    idle = dict(max_ms=probe.max_gap_ms, p99_ms=probe.pct(99))
    results = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
                          f"{torch.__version__} ({torch.get_num_threads()} threads), Qt platform "
                          f"{QApplication.platformName()}",
               "model": model_desc, "idle_stall": idle, "follow_slider": not args.no_follow, "paint_budget": panel.paint_budget,
               "paint_duty": panel.paint_duty,
               "cases": {}}
    print(results["machine"])
    print("model:", model_desc)
    print(f"idle UI (no run, 5 s): longest stall {idle['max_ms']:.1f} ms, p99 gap {idle['p99_ms']:.1f} ms")

    for name in args.cases.split(","):
        sampler, steps, n = CASES[name]
        steps = args.steps or steps
        panel.samplerCombo.setCurrentIndex(panel.samplerCombo.findData(sampler))
        panel.stepsSpin.setValue(steps)
        panel.batchSpin.setValue(n)
        panel.seedSpin.setValue(0)
        head, win, stalls, p99, head_cpu, win_cpu = [], [], [], [], [], []
        for r in range(args.repeats):
            c0, t0 = time.process_time(), time.perf_counter()
            ref = run_to_end(sample(den, sampler=sampler, steps=steps, seed=0, n=n)).x_t.numpy()
            head.append(time.perf_counter() - t0)
            head_cpu.append(time.process_time() - c0)
            c0, t0 = time.process_time(), time.perf_counter()
            QTest.mouseClick(panel.generateButton, Qt.MouseButton.LeftButton)
            t1, (final,) = wait(panel.runFinished)
            win.append(t1 - t0)
            win_cpu.append(time.process_time() - c0)
            if not np.array_equal(final, ref):
                raise SystemExit(f"{name}: the window's images differ from the headless sampler's")
            wait(panel.runEnded) if panel.running else None
            # the stall probe is a timer in the UI thread, which itself competes for the GIL: its own run
            probe.start()
            QTest.mouseClick(panel.generateButton, Qt.MouseButton.LeftButton)
            wait(panel.runEnded)
            probe.stop()
            stalls.append(probe.max_gap_ms)
            p99.append(probe.pct(99))
            print(f"  {name} #{r + 1}: headless {head[-1]:.3f} s, window {win[-1]:.3f} s "
                  f"({win[-1] / head[-1] - 1:+.1%}); CPU time {head_cpu[-1]:.3f} s vs {win_cpu[-1]:.3f} s "
                  f"({win_cpu[-1] / head_cpu[-1] - 1:+.1%}), longest UI stall {stalls[-1]:.1f} ms, painted "
                  f"{panel.frames_painted} frames so far", flush=True)
        h, wv = statistics.median(head), statistics.median(win)
        paired = statistics.median(b / a - 1 for a, b in zip(head, win))
        hc, wc = statistics.median(head_cpu), statistics.median(win_cpu)
        results["cases"][name] = dict(sampler=sampler, steps=steps, batch=n, headless_s=h, window_s=wv,
                                      overhead=wv / h - 1, overhead_paired_median=paired,
                                      headless_cpu_s=hc, window_cpu_s=wc, cpu_overhead=wc / hc - 1,
                                      headless_all=head, window_all=win,
                                      stall_max_ms=max(stalls), stall_median_of_max_ms=statistics.median(stalls),
                                      stall_p99_ms=statistics.median(p99))
        print(f"{name}: headless {h:.3f} s, window {wv:.3f} s → {wv / h - 1:+.1%} (median of paired ratios "
              f"{paired:+.1%}); process CPU time {hc:.3f} s vs {wc:.3f} s → {wc / hc - 1:+.1%}; longest stall "
              f"{max(stalls):.1f} ms (median of runs {statistics.median(stalls):.1f} ms, p99 gap "
              f"{statistics.median(p99):.1f} ms)")

    # click → first frame, model loaded (DDIM, 20 steps, one image, as a user's first click would be)
    panel.samplerCombo.setCurrentIndex(panel.samplerCombo.findData("ddim"))
    panel.stepsSpin.setValue(20)
    panel.batchSpin.setValue(1)
    to_frame, to_paint = [], []
    view = panel.xtPane.view
    for _ in range(args.first_frame):
        painted = []
        first = []

        def on_frame(i):
            if not first:
                first.append(time.perf_counter())

        def on_paint(t):
            if first and not painted:
                painted.append(t)
        panel.stepPainted.connect(on_frame)
        view.painted.connect(on_paint)
        t0 = time.perf_counter()
        QTest.mouseClick(panel.generateButton, Qt.MouseButton.LeftButton)
        wait(panel.runEnded)
        panel.stepPainted.disconnect(on_frame)
        view.painted.disconnect(on_paint)
        to_frame.append((first[0] - t0) * 1000)
        if painted:
            to_paint.append((painted[0] - t0) * 1000)
    results["first_frame_ms"] = dict(median=statistics.median(to_frame), max=max(to_frame), all=to_frame)
    results["first_paint_ms"] = dict(median=statistics.median(to_paint) if to_paint else None,
                                     max=max(to_paint) if to_paint else None, all=to_paint)
    print(f"click → first frame: median {statistics.median(to_frame):.1f} ms (max {max(to_frame):.1f}); "
          f"→ painted: median {statistics.median(to_paint) if to_paint else float('nan'):.1f} ms")
    w.close()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
