"""Slider latency: ``timestepSlider.setValue(t)`` → x_t's pixels painted in the window, offscreen.

For photos of 512², 1024² and 2048² pixels, each sample is the wall time from the value change to the end of the
window's repaint that first shows the frame for that t: the x_t view's ``paintEvent`` after the frame was handed
to pyqtgraph, then a zero-timeout timer, which runs only after the rest of that repaint (histogram, readout, the
schedule plot's t marker) is done. So it includes the coalescing timer, ForwardPreview's render, the histogram and
readout update, pyqtgraph's array → QImage conversion and the scaled draw into the widget. The event loop runs
normally (a QEventLoop waits; nothing spins processEvents). Goal (issue 3): median ≤ 8 ms at 1024².

The window is 1440×900 and the photo fitted to the x_t view, as a user first sees it; there the view renders at
its level of detail (``MainWindow.display_stride``). ``--full-res`` zooms in so every photo pixel is rendered.

    QT_QPA_PLATFORM=offscreen python benchmarks/bench_slider_paint.py [--n 60] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from PySide6.QtCore import QEventLoop, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from core.forward import ForwardPreview  # noqa: E402
from core.images import from_uint8, load_image, sample_path, to_uint8  # noqa: E402


def photo(size: int) -> np.ndarray:
    x = load_image(sample_path("astronaut"))          # 512×512
    img = Image.fromarray(to_uint8(x)).resize((size, size), Image.Resampling.BICUBIC)
    return from_uint8(np.asarray(img))


def wait_for(signal, predicate=lambda *a: True, timeout_ms=10_000, then_idle=False):
    """Run the event loop until ``signal`` fires with ``predicate`` true (and, with ``then_idle``, until a
    zero-timeout timer after it has run: the end of that repaint). Returns the time of that moment."""
    loop = QEventLoop()
    got = []

    def done():
        got.append(time.perf_counter())
        loop.quit()

    def on(*args):
        if predicate(*args) and not got:
            if then_idle:
                QTimer.singleShot(0, done)
            else:
                done()
    signal.connect(on)
    QTimer.singleShot(timeout_ms, loop.quit)
    loop.exec()
    signal.disconnect(on)
    if not got:
        raise TimeoutError("no signal")
    return got[0]


def measure(window, n: int, rng) -> dict:
    view = window.xtPane.view
    T = window.schedule.T
    lat, render, cpu = [], [], []
    state = {}
    window.frameShown.connect(lambda t: state.__setitem__("shown", time.perf_counter()))
    for i in range(n + 5):
        t = int(rng.integers(0, T))
        if t == window.timestep:
            t = (t + 1) % T
        state.clear()
        c0 = time.thread_time()
        t0 = time.perf_counter()
        window.timestepSlider.setValue(t)
        t_paint = wait_for(view.painted, lambda _tp: "shown" in state, then_idle=True)
        c1 = time.thread_time()
        if i >= 5:                                       # a few warm-up frames
            lat.append((t_paint - t0) * 1000)
            cpu.append((c1 - c0) * 1000)
            render.append((state["shown"] - t0) * 1000)
    return {"median_ms": statistics.median(lat), "p90_ms": float(np.percentile(lat, 90)),
            "ui_thread_cpu_median_ms": statistics.median(cpu),
            "min_ms": min(lat), "to_frame_handed_over_median_ms": statistics.median(render)}


def bare_render(size: int, n: int) -> float:
    x0 = photo(size)
    fp = ForwardPreview(x0, torch.randn(x0.shape).numpy())
    from core.schedule import NoiseSchedule
    s = NoiseSchedule.preset("linear")
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        fp.render((i * 37) % 1000, s)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def bench_chain(strides: dict[int, int]) -> dict:
    """The Markov-chain mode's worker as the window runs it: on every s-th pixel of the photo (s = the view's
    level of detail, see MainWindow.chain_stride), walking eq. 2 from x_0 to t = 999 (T = 1000), then re-walking
    to a t between two checkpoints."""
    from core.schedule import NoiseSchedule
    from core.jobs.chain import ChainCache, chain_frames
    out = {}
    for size, stride in strides.items():
        x0 = np.ascontiguousarray(photo(size)[::stride, ::stride])
        cache = ChainCache(x0, NoiseSchedule.preset("linear"), seed=0)
        t0 = time.perf_counter()
        for _ in chain_frames(cache, 999):
            pass
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in chain_frames(cache, 999 - cache.stride // 2 - 1):
            pass
        again = time.perf_counter() - t0
        out[f"{size}x{size}"] = {"pixel_stride": stride, "walk_0_to_999_s": first, "checkpoint_every": cache.stride,
                                 "rewalk_between_checkpoints_s": again}
    return out


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=60, help="frames per size (default 60)")
    ap.add_argument("--sizes", default="512,1024,2048")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--full-res", action="store_true", help="zoom in so that every photo pixel is rendered")
    ap.add_argument("--chain", action="store_true", help="also time the Markov-chain mode's walk (no Qt)")
    args = ap.parse_args()
    app = QApplication.instance() or QApplication([])
    from ddpm_gui import MainWindow
    window = MainWindow()
    window.resize(1440, 900)
    window.show()
    rng = np.random.default_rng(0)
    results = {}
    for size in map(int, args.sizes.split(",")):
        window.set_image_array(photo(size), f"{size}²")
        wait_for(window.xtPane.view.painted)
        if args.full_res:
            vb = window.xtPane.viewbox
            vw = window.xtPane.view.viewport()
            vb.setRange(xRange=(0, vw.width() * 0.9), yRange=(0, vw.height() * 0.9), padding=0)
            wait_for(window.xtPane.view.painted)
        r = measure(window, args.n, rng)
        r["ForwardPreview.render_median_ms"] = bare_render(size, 30)
        vw = window.xtPane.view.viewport()
        r["view_px"] = f"{vw.width()}×{vw.height()}"
        r["display_stride"] = window.display_stride
        results[f"{size}x{size}"] = r
    window.close()
    meta = {"machine": f"{_cpu_name()}, {os.cpu_count()} CPUs", "load_average_1min": os.getloadavg()[0],
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "qt_platform": os.environ.get("QT_QPA_PLATFORM"), "frames_per_size": args.n}
    chain = bench_chain({int(k.split("x")[0]): max(1, r["display_stride"]) for k, r in results.items()}
                        ) if args.chain else {}
    if args.json:
        print(json.dumps({"meta": meta, "results": results, "chain": chain}, indent=1))
        return
    print(f"slider value change → pixels painted (offscreen, {meta['machine']}, torch {meta['torch']}, "
          f"{args.n} frames each, 1-min load average {meta['load_average_1min']:.1f})")
    print(f"{'photo':>10} {'median':>8} {'p90':>8} {'min':>8} {'UI CPU':>8} {'frame ready':>12} "
          f"{'bare render':>12}  view, stride")
    for k, r in results.items():
        print(f"{k:>10} {r['median_ms']:6.1f}ms {r['p90_ms']:6.1f}ms {r['min_ms']:6.1f}ms "
              f"{r['ui_thread_cpu_median_ms']:6.1f}ms {r['to_frame_handed_over_median_ms']:10.1f}ms "
              f"{r['ForwardPreview.render_median_ms']:10.1f}ms  {r['view_px']}, {r['display_stride']}")
    print("median/p90/min: wall time to pixels painted; UI CPU: the UI thread's CPU time for that frame (what a "
          "frame costs without other load); frame ready: wall time until x_t was handed to the view; bare render: "
          "ForwardPreview.render of the whole photo alone, torch's default threads")
    for k, r in chain.items():
        every = "every pixel" if r["pixel_stride"] == 1 else f"every {r['pixel_stride']}-th pixel"
        print(f"Markov chain {k} ({every}, as the fitted view walks it): 0 → 999 in "
              f"{r['walk_0_to_999_s']:.1f} s; checkpoints every {r['checkpoint_every']} steps, so a re-walk between "
              f"two takes {r['rewalk_between_checkpoints_s']:.2f} s")


if __name__ == "__main__":
    main()
