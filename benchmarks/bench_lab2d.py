"""The 2D laboratory's performance targets (issue 18), on this machine's CPU:

1. one exact-denoiser sampling step for 10,000 particles over 1,000 data points ≤ 10 ms (Exact2D.posterior_mean,
   and a whole DDIM step through core.samplers.sample);
2. the exact density heatmap on a 128×128 grid for 1,000 points ≤ 20 ms;
3. 10,000 particles repaint at ≥ 60 frames/s while dragging: the scatter item's update and paint, offscreen
   (setData + a full render of the plot into an image), and the whole tab's redraw at a new t;
4. the MLP learns two moons visibly right in ≤ 20 s (the default LearnConfig: wall and CPU time, the energy
   distance of its DDIM-50 samples beside the exact denoiser's; the picture goes to /tmp/bench_lab2d_moons.png).

Run: ``QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/bench_lab2d.py [--threads 1,2] [--skip-learn]``.
Each figure is the median of repeated runs (the machine is shared: the minimum is printed too).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def timed(fn, repeat: int = 20, warm: int = 3) -> tuple[float, float]:
    for _ in range(warm):
        fn()
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts), min(ts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--skip-learn", action="store_true")
    args = ap.parse_args()
    from core.lab2d.data import preset
    from core.lab2d.exact import Exact2D, density_grid, grid_axes
    from core.samplers import sample
    from core.schedule import NoiseSchedule
    S = NoiseSchedule.preset("linear")
    data = preset("moons", 1000, 0)
    den = Exact2D(data)
    x = torch.randn(10000, 2, generator=torch.Generator().manual_seed(0))
    g = grid_axes(3.5, 128)
    for nt in [int(v) for v in args.threads.split(",")]:
        torch.set_num_threads(nt)
        for t in (10, 300, 999):
            ab = float(S.alphas_cumprod[t])
            med, lo = timed(lambda: den.posterior_mean(x, ab))
            print(f"[{nt} thread(s)] exact E[x0|xt], 10,000 particles × 1,000 points, t={t}: {med:.2f} ms "
                  f"(min {lo:.2f})  target ≤ 10")

        def ddim_steps():
            for _ in sample(den, S, "ddim", 10, n=1, size=(1, 10000), clip_sample=False):
                pass
        med, lo = timed(ddim_steps, repeat=5, warm=1)
        print(f"[{nt} thread(s)] a whole DDIM step via core.samplers.sample (10 steps / 10): {med / 10:.2f} ms "
              f"(min {lo / 10:.2f})")
        med, lo = timed(lambda: density_grid(data, S, 300, g, min_sigma=3.5 / 128))
        print(f"[{nt} thread(s)] density 128×128, 1,000 points: {med:.2f} ms (min {lo:.2f})  target ≤ 20")
        big = preset("moons", 10000, 0)
        med, lo = timed(lambda: density_grid(big, S, 300, g, min_sigma=3.5 / 128), repeat=10)
        print(f"[{nt} thread(s)] density 128×128, 10,000 points: {med:.2f} ms (min {lo:.2f})")
    torch.set_num_threads(1)
    bench_paint()
    if not args.skip_learn:
        bench_learn(S, data, den)


def bench_paint() -> None:
    from PySide6.QtGui import QImage, QPainter
    from PySide6.QtWidgets import QApplication
    app = QApplication.instance() or QApplication(sys.argv)
    from ddpm_gui.lab2d_views import CloudPlot
    plot = CloudPlot("bench")
    plot.resize(600, 600)
    plot.show()
    app.processEvents()
    rng = np.random.default_rng(0)
    x0, eps = rng.normal(size=(10000, 2)).astype(np.float32), rng.normal(size=(10000, 2)).astype(np.float32)
    img = QImage(600, 600, QImage.Format.Format_RGB32)
    k = [0]

    def frame(render=True):
        k[0] += 1
        a = np.float32(np.cos(k[0] * 0.01))
        plot.set_cloud(a * x0 + np.sqrt(1 - a * a) * eps)
        if render:
            p = QPainter(img)
            plot.render(p)
            p.end()
    med, lo = timed(lambda: frame(False), repeat=50)
    print(f"scatter setData, 10,000 particles: {med:.2f} ms (min {lo:.2f})")
    med, lo = timed(frame, repeat=50)
    print(f"scatter setData + full offscreen render of the 600×600 plot: {med:.2f} ms (min {lo:.2f}) = "
          f"{1000 / med:.0f} frames/s  target ≥ 60")
    from ddpm_gui.main_window import MainWindow
    from ddpm_gui.lab2d_panel import Lab2DPanel
    w = MainWindow()
    w.resize(1440, 900)
    w.show()
    panel = Lab2DPanel.install(w)
    w.show_panel(panel)
    t = [100]

    def tab_frame(full):
        t[0] = (t[0] + 7) % 1000
        w.set_timestep(t[0])
        panel.redraw(fields_now=full)
        p = QPainter(img)
        panel.canvas.render(p)
        p.end()
    for points in (1000, 10000):
        panel.pointsSpin.setValue(points)
        panel.set_data("moons")
        app.processEvents()
        med, lo = timed(lambda: tab_frame(True), repeat=30)
        print(f"2D tab, full redraw at a new t, {points:,} points (x_t, density 128², exact arrows 21², render): "
              f"{med:.2f} ms (min {lo:.2f}) = {1000 / med:.0f} frames/s")
        med, lo = timed(lambda: tab_frame(False), repeat=30)
        print(f"2D tab, a slider-drag frame, {points:,} points (x_t and render; fields follow ≤ 20×/s): "
              f"{med:.2f} ms (min {lo:.2f}) = {1000 / med:.0f} frames/s  target ≥ 60")
    w.close()


def bench_learn(S, data, den) -> None:
    from core.images import save_image
    from core.lab2d.mlp import LearnConfig, Trainer2D
    from core.lab2d.quality import energy_distance
    from core.lab2d.render import scatter_image
    from core.lab2d.run import final_particles
    torch.set_num_threads(1)
    tr = Trainer2D(data, S, LearnConfig())
    c0, w0 = time.process_time(), time.perf_counter()
    for ev in tr.run():
        pass
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    p = final_particles(tr.denoiser(), S, "ddim", 50, 2000, 0)
    q = final_particles(den, S, "ddim", 50, 2000, 0)
    ref = preset_ref(data)
    print(f"MLP on two moons, {tr.cfg.steps} steps × {tr.cfg.batch_size} (1 thread): {wall:.1f} s wall, {cpu:.1f} s "
          f"CPU, loss {ev.loss_avg:.4f}  target ≤ 20 s")
    print(f"  energy distance of DDIM-50 samples (2,000): learned {energy_distance(p, data):.5f}, exact "
          f"{energy_distance(q, data):.5f}, a fresh draw of the preset {energy_distance(ref, data):.5f}")
    save_image("/tmp/bench_lab2d_moons.png", scatter_image(data, p, caption=f"learned, {wall:.1f} s"))


def preset_ref(data):
    from core.lab2d.data import preset
    return preset("moons", 2000, 99)


if __name__ == "__main__":
    main()
