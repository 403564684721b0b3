"""Generate in the window with a Stable Diffusion pipeline against the headless API: does watching the run (the
preview decoder on the worker every step, the ≤ 30 fps painting, the slider following t) slow it down?

The pipeline is a small random one, larger than the tests' (UNet channels (32, 64), 16×16 latents, a 3-level VAE
so 64×64 images, a 2-layer CLIP text encoder of width 32), saved as a diffusers folder and loaded by the panel like
any other. Pairs are interleaved (headless, window, headless, window, …) and the medians compared:

- **headless**: ``run_to_end(text_to_image(pipe, prompt, …))`` then ``pipe.decode`` (the full VAE), on the main
  thread — exactly what ``ddpm sample --prompt … -o x.npz`` runs;
- **window**: a Generate click → ``runFinished`` with the same settings and ``--preview`` (approx by default): the
  worker decodes x_t and x̂_0 of every step with it, records them, and the UI paints at most 30 times a second.
  The final images are checked equal. Goal (issue 16): ≤ 5% slower with the approx decoder. Process CPU time
  (all threads) is reported too: on a busy machine it is disturbed far less than wall time.

    QT_QPA_PLATFORM=offscreen python benchmarks/bench_generate_sd_stream.py [--repeats 7] [--preview approx]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PySide6.QtCore import QEventLoop, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402


def save_small_pipeline(folder: Path) -> Path:
    """A random SD pipeline a few times the tests' tiny one (see the module docstring)."""
    import diffusers
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
    from sd_tiny import write_tokenizer
    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(32, 64), norm_num_groups=8, cross_attention_dim=32,
                                attention_head_dim=8, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32, 32),
                        layers_per_block=1, norm_num_groups=8, sample_size=64,
                        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3)
    tokenizer = CLIPTokenizer.from_pretrained(str(write_tokenizer(folder.parent / "tok", max_length=32)))
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                                num_hidden_layers=2, num_attention_heads=2,
                                                max_position_embeddings=tokenizer.model_max_length,
                                                bos_token_id=tokenizer.bos_token_id,
                                                eos_token_id=tokenizer.eos_token_id, pad_token_id=1))
    scheduler = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                                        beta_end=0.012, clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(unet=unet.eval(), vae=vae.eval(), text_encoder=text_encoder.eval(),
                                   tokenizer=tokenizer, scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return folder


def wait(signal, timeout_ms=600_000):
    loop, got = QEventLoop(), []

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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7, help="headless/window pairs (interleaved)")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--preview", default="approx", choices=("approx", "vae"))
    ap.add_argument("--parts", action="store_true", help="also decode the unconditional and conditional x̂_0")
    ap.add_argument("--share", type=float, help="the panel's preview_share (default its own; 0: decode only the "
                    "first and last steps — the window's cost without previews)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for both runs")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from core.latent.decoders import make_decoder
    from core.latent.generate import text_to_image
    from core.samplers import run_to_end
    app = QApplication.instance() or QApplication([])
    from ddpm_gui.main_window import MainWindow
    folder = save_small_pipeline(Path(tempfile.mkdtemp(prefix="bench-sd-")) / "small-sd")
    w = MainWindow()
    w.resize(1440, 900)
    w.show()
    panel = w.generate_panel
    w.show_panel(panel)
    panel.select_model(str(folder))
    wait(panel.pipelineChanged, 120_000)
    pipe = panel.current_pipeline()
    n_params = sum(p.numel() for p in pipe.denoiser.net.parameters())
    if args.share is not None:
        panel.preview_share = args.share
    box = panel.prompts
    box.promptEdit.setPlainText("a red cat")
    box.set_guidance(args.guidance)
    box.previewDecoderCombo.setCurrentIndex(box.previewDecoderCombo.findData(args.preview))
    box.guidancePartsCheck.setChecked(args.parts)
    panel.samplerCombo.setCurrentIndex(panel.samplerCombo.findData("ddim"))
    panel.stepsSpin.setValue(args.steps)
    panel.batchSpin.setValue(args.batch)
    panel.seedSpin.setValue(0)
    side = pipe.default_size
    kw = dict(guidance=args.guidance, n=args.batch, seed=0, sampler="ddim", steps=args.steps, height=side,
              width=side)
    dec = make_decoder(pipe, args.preview)   # the approx fit happens once (cached), before any timing
    last = run_to_end(text_to_image(pipe, "a red cat", **kw))
    t0 = time.perf_counter()
    for _ in range(5):
        dec.decode_step(last.x_t, last.x0_pred)
    decode_ms = (time.perf_counter() - t0) / 5 * 1000
    head, win, head_cpu, win_cpu = [], [], [], []
    for r in range(args.repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        ref = pipe.decode(run_to_end(text_to_image(pipe, "a red cat", **kw)).x_t).clamp(-1, 1).numpy()
        head.append(time.perf_counter() - t0)
        head_cpu.append(time.process_time() - c0)
        c0, t0 = time.process_time(), time.perf_counter()
        panel.generate()
        t1, (final,) = wait(panel.runFinished)
        win.append(t1 - t0)
        win_cpu.append(time.process_time() - c0)
        if panel.running:
            wait(panel.runEnded)
        if not np.array_equal(final, ref):
            raise SystemExit("the window's images differ from the headless API's")
        print(f"  #{r + 1}: headless {head[-1]:.3f} s, window {win[-1]:.3f} s ({win[-1] / head[-1] - 1:+.1%}); "
              f"CPU {head_cpu[-1]:.3f} s vs {win_cpu[-1]:.3f} s ({win_cpu[-1] / head_cpu[-1] - 1:+.1%}); "
              f"{panel.frames_painted} frames painted so far", flush=True)
    h, wv = statistics.median(head), statistics.median(win)
    paired = statistics.median(b / a - 1 for a, b in zip(head, win))
    hc, wc = statistics.median(head_cpu), statistics.median(win_cpu)
    step_ms = h / args.steps * 1000
    res = dict(machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
                       f"{torch.__version__} ({torch.get_num_threads()} threads)",
               unet_params=n_params, image=side, steps=args.steps, batch=args.batch, guidance=args.guidance,
               preview=args.preview, parts=args.parts, preview_share=panel.preview_share, headless_s=h, window_s=wv, overhead=wv / h - 1,
               overhead_paired_median=paired, headless_cpu_s=hc, window_cpu_s=wc, cpu_overhead=wc / hc - 1,
               step_ms=step_ms, preview_decode_ms=decode_ms,
               headless_all=head, window_all=win)
    print(res["machine"])
    print(f"pipeline: UNet {n_params / 1e6:.2f} M parameters, {side}×{side} images, DDIM {args.steps} steps, "
          f"batch {args.batch}, w = {args.guidance}; preview {args.preview}{' + guidance parts' if args.parts else ''}"
          f": {decode_ms:.2f} ms per decode_step against {step_ms:.1f} ms per headless step")
    print(f"headless {h:.3f} s, window {wv:.3f} s → {wv / h - 1:+.1%} (median of paired ratios {paired:+.1%}); "
          f"process CPU time {hc:.3f} s vs {wc:.3f} s → {wc / hc - 1:+.1%}")
    app.processEvents()
    w.close()
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
