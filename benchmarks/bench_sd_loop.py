"""Our Stable Diffusion loop vs diffusers' StableDiffusionPipeline on one tiny random pipeline folder, side by side.

    .venv/bin/python benchmarks/bench_sd_loop.py [--steps 20] [--repeats 7] [--threads 2] [--profile] [--gpu]

(Results and their reading: README, "Stable Diffusion loop (tiny random pipeline, CPU)".)

The folder is built offline in a temp dir (nothing is downloaded): a 3-level UNet2DConditionModel (32/64/64
channels, cross-attention at the two upper levels) on 16×16 latents, a 4-level AutoencoderKL (factor 8, so
128×128 images), a 2-layer CLIP text encoder with SD's 77-token prompts, SD 1.x's DDIM scheduler config, and a
TAESD (diffusers' AutoencoderTiny, TAESD's own layout: 4 levels, 3/3/3/1 blocks) saved as its own folder. Both
sides load the same folder and run the same scheduler (DDIM, diffusers' ``DDIMScheduler.from_config``), steps,
prompt, seed and guidance (7.5, so every step is a doubled batch); images are compared at the end.

Variants, run interleaved in one process (the order reverses every repeat: A B C D, D C B A, …) after a warm-up:

- ``diffusers``: ``pipe(prompt, …, output_type="np")`` with the progress bar disabled — the baseline;
- ``ours``: ``text_to_image`` drained, then ``pipe.decode`` of the result (clamped, to an H×W×3 array in [0, 1]);
- ``ours+approx`` / ``ours+taesd``: the same with a preview frame decoded at every step, as ``ddpm sample … -o
  OUT.gif`` builds it (``decode_step``: approx decodes x_t and x̂_0 in one call; TAESD decodes x̂_0 and shows x_t
  through the linear map), each made into a uint8 grid and put side by side;
- ``ours+taesd, both by TAESD``: two TAESD decodes a step; ``ours+taesd, one call on [x_t; x̂_0]``: the same frame from one batched decode; ``ours+taesd, x̂_0 only``:
  one decode per step, x̂_0 alone (what ComfyUI's live preview shows); ``ours+taesd x̂_0, approx x_t``: the GIF
  frame with x̂_0 through TAESD and x_t through the linear map.

Goals (issue 15): ours ≤ 1.0×, ours+approx ≤ 1.05×, ours+taesd ≤ 1.15× the pipeline's time.

The TAESD is sized so that one decode costs, relative to one guided UNet step, what the real ones cost: on SD 1.5
at 512² (latents 64×64) a real TAESD decode is ≈ 8.8 % of a guided (batch-2) UNet step in FLOPs (141 GFLOP vs
1.61 TFLOP, counted below on the meta device); ComfyUI quotes ≈ 15 % of a step in time (TAESD's full-resolution
layers are memory-bound). ``--taesd-channels`` (default 4; the real TAESD has 64) gives the tiny TAESD the FLOP
ratio of the real pair; the script prints both FLOP ratios and the measured time ratio. A GIF frame decodes x_t
and x̂_0, so a TAESD preview costs two decodes per step: ≈ 18 % of a step in FLOPs, ≈ 30 % by ComfyUI's figure.

Timing: the CPU time this process used (``time.process_time``) and wall time; median and best of ``--repeats``
each, ratio = ours / diffusers. Other processes share the cores, so medians drift: the best-of ratio is the least
disturbed, and the spread (max/min) of each variant is printed. ``--profile`` adds a cProfile of one run of each
side (the top functions by own time) and the cost of reading the UNet's ``.dtype``.

``--gpu`` (only when ``torch.cuda.is_available()``; skipped with one line otherwise): an SD-1.5-sized
UNet2DConditionModel (diffusers' defaults with cross_attention_dim=768, sample_size=64: 860 M parameters, the
real one's compute; random init, fp16) with a tiny VAE (factor 8) and a 2-layer 768-wide text encoder, 30 DDIM
steps at 512² with guidance 7.5: it/s of ours and of the pipeline, peak VRAM of each, and the VRAM allocated after
cancelling our generator at step 15 (closed, references dropped, ``torch.cuda.empty_cache``) against before.
``--gpu-dry-run`` runs that section's code on the CPU with a small UNet (a check of the script, not a benchmark).
"""
from __future__ import annotations

import argparse
import cProfile
import gc
import io
import os
import platform
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PROMPT = "a red cat"
SEED = 1
LATENT = 16  # latent side (image side 128)


# ----- the tiny pipeline ------------------------------------------------------------------------------------
def bench_components(latent: int = LATENT, text_width: int = 32, tmp: Path | None = None, seed: int = 0):
    """(unet, vae, text_encoder, tokenizer, scheduler): bigger than tests/sd_tiny.py's (whose UNet step is
    ≈ 1 ms, too small to time) but laid out as SD's: UNet levels CrossAttn/CrossAttn/plain, VAE factor 8."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(sample_size=latent, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(32, 64, 64), norm_num_groups=8, cross_attention_dim=text_width,
                                attention_head_dim=8,
                                down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"))
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32, 32, 32),
                        layers_per_block=1, norm_num_groups=8, sample_size=latent * 8,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    text_encoder, tokenizer = text_parts(text_width, tmp)
    return unet.eval(), vae.eval(), text_encoder, tokenizer, ddim_scheduler()


def text_parts(width: int, tmp: Path | None = None, layers: int = 2):
    """A random CLIPTextModel ``width`` wide and the tests' CLIP tokenizer, padding prompts to SD's 77 tokens."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from tests.sd_tiny import write_tokenizer
    tok_dir = write_tokenizer(Path(tmp or tempfile.mkdtemp()) / "tok", max_length=77)
    tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir))
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=width,
                                                intermediate_size=2 * width, num_hidden_layers=layers,
                                                num_attention_heads=2, max_position_embeddings=77,
                                                bos_token_id=tokenizer.bos_token_id,
                                                eos_token_id=tokenizer.eos_token_id, pad_token_id=1))
    return text_encoder.eval(), tokenizer


def ddim_scheduler():
    """SD 1.x's scheduler config as a DDIMScheduler."""
    from diffusers import DDIMScheduler
    return DDIMScheduler.from_config(dict(num_train_timesteps=1000, beta_schedule="scaled_linear",
                                          beta_start=0.00085, beta_end=0.012, clip_sample=False,
                                          set_alpha_to_one=False, steps_offset=1))


def save_pipeline(folder: Path, components) -> Path:
    from diffusers import StableDiffusionPipeline
    unet, vae, text_encoder, tokenizer, scheduler = components
    StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler,
                            safety_checker=None, feature_extractor=None, requires_safety_checker=False
                            ).save_pretrained(str(folder), safe_serialization=True)
    return folder


def taesd_model(channels: int, seed: int = 0):
    """A random AutoencoderTiny in TAESD's layout (4 levels, 3/3/3/1 decoder blocks, 2× upsampling: factor 8)."""
    from diffusers import AutoencoderTiny
    torch.manual_seed(seed)
    return AutoencoderTiny(encoder_block_out_channels=(channels,) * 4, decoder_block_out_channels=(channels,) * 4,
                           num_encoder_blocks=(1, 3, 3, 3), num_decoder_blocks=(3, 3, 3, 1),
                           latent_channels=4, upsampling_scaling_factor=2).eval()


def flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as m, torch.inference_mode():
        fn()
    return float(m.get_total_flops())


def real_sd15_ratio() -> tuple[float, float]:
    """FLOPs of a guided SD 1.5 UNet step (batch 2, 64×64 latents, 77×768 text) and of a real TAESD decode of one
    64×64 latent, on the meta device (nothing allocated)."""
    from diffusers import AutoencoderTiny, UNet2DConditionModel
    with torch.device("meta"):
        unet = UNet2DConditionModel(cross_attention_dim=768, sample_size=64)
        taesd = AutoencoderTiny()
        x, t, c = torch.empty(2, 4, 64, 64), torch.tensor([500, 500]), torch.empty(2, 77, 768)
        z = torch.empty(1, 4, 64, 64)
        return (flops(lambda: unet(x, t, encoder_hidden_states=c)), flops(lambda: taesd.decode(z)))


# ----- the variants -----------------------------------------------------------------------------------------
def to_np(images: torch.Tensor) -> np.ndarray:
    """B×3×H×W in [−1, 1] → B×H×W×3 float32 in [0, 1] (what diffusers' output_type="np" gives)."""
    return (images.clamp(-1, 1) / 2 + 0.5).permute(0, 2, 3, 1).cpu().numpy()


def side_by_side(x_t: torch.Tensor, x0: torch.Tensor) -> np.ndarray:
    """Decoded x_t beside decoded x̂_0 as one uint8 frame (core.cli.sample_latent's ``_frame``)."""
    from core.images import batch_grid
    a, b = batch_grid(x_t), batch_grid(x0)
    return np.concatenate([a, np.full((a.shape[0], 4, 3), 255, np.uint8), b], axis=1)


def gif_frame(preview, step) -> np.ndarray:
    """One GIF frame as ``ddpm sample … -o OUT.gif`` builds it: ``decode_step`` (approx: x_t and x̂_0 in one call;
    TAESD: x̂_0 by TAESD, x_t by the linear map)."""
    return side_by_side(*preview.decode_step(step.x_t, step.x0_pred))


def gif_frame_two_decodes(preview, step) -> np.ndarray:
    """The frame with both images decoded by ``preview`` itself (two TAESD calls a step)."""
    return side_by_side(preview.decode(step.x_t), preview.decode(step.x0_pred))


def gif_frame_batched(preview, step) -> np.ndarray:
    """The same frame from one decode of [x_t; x̂_0] (half the calls, the same arithmetic)."""
    both = preview.decode(torch.cat([step.x_t, step.x0_pred]))
    return side_by_side(*both.chunk(2))


def mixed_frame(previews, step) -> np.ndarray:
    """The GIF frame with x̂_0 through TAESD and x_t through the linear map (x_t is mostly noise: the cheap map
    shows it as well)."""
    taesd, approx = previews
    return side_by_side(approx.decode(step.x_t), taesd.decode(step.x0_pred))


def x0_frame(preview, step) -> np.ndarray:
    """ComfyUI's live preview: x̂_0 alone, one decode per step."""
    from core.images import batch_grid
    return batch_grid(preview.decode(step.x0_pred))


def make_runs(ours, theirs, steps: int, guidance: float, decoders: dict):
    from core.latent.generate import text_to_image
    from core.samplers import run_to_end

    def run_theirs():
        return theirs(PROMPT, num_inference_steps=steps, guidance_scale=guidance,
                      generator=torch.Generator().manual_seed(SEED), output_type="np").images

    def run_ours():
        last = run_to_end(text_to_image(ours, PROMPT, guidance=guidance, seed=SEED, sampler="ddim", steps=steps))
        return to_np(ours.decode(last.x_t))

    def with_preview(preview, frame=gif_frame):
        def run():
            frames, last = [], None
            for last in text_to_image(ours, PROMPT, guidance=guidance, seed=SEED, sampler="ddim", steps=steps):
                frames.append(frame(preview, last))
            assert len(frames) == steps
            return to_np(ours.decode(last.x_t))
        return run

    runs = {"diffusers": run_theirs, "ours": run_ours}
    for name, dec in decoders.items():
        runs[f"ours+{name}"] = with_preview(dec)
    if "taesd" in decoders:
        runs["ours+taesd, both by TAESD"] = with_preview(decoders["taesd"], gif_frame_two_decodes)
        runs["ours+taesd, one call on [x_t; x̂_0]"] = with_preview(decoders["taesd"], gif_frame_batched)
        runs["ours+taesd, x̂_0 only"] = with_preview(decoders["taesd"], x0_frame)
        runs["ours+taesd x̂_0, approx x_t"] = with_preview((decoders["taesd"], decoders["approx"]), mixed_frame)
    return runs


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.process_time() - cpu, time.perf_counter() - wall


def component_times(ours, decoders: dict, repeats: int = 20) -> dict:
    """Median/best wall ms of one guided UNet call (batch 2) and of one decode by each preview decoder."""
    den = ours.denoiser
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, LATENT, LATENT, generator=g)
    t = torch.tensor([500, 500])
    c = torch.randn(2, 77, int(den.net.config.cross_attention_dim), generator=g)
    z = torch.randn(1, 4, LATENT, LATENT, generator=g)
    fns = {"UNet step (batch 2)": lambda: den.model_output(x, t, c)}
    for name, dec in decoders.items():
        fns[f"{name} decode"] = lambda dec=dec: dec.decode(z)
        fns[f"{name} decode of [x_t; x̂_0] (batch 2)"] = lambda dec=dec: dec.decode(torch.cat([z, z]))
    img = torch.zeros(1, 3, LATENT * 8, LATENT * 8)
    fns["GIF frame from two decoded images (batch_grid ×2, concat)"] = lambda: side_by_side(img, img)
    fns["full VAE decode"] = lambda: ours.decode(z)
    times = {k: [] for k in fns}
    with torch.inference_mode():
        for fn in fns.values():
            fn()
        for _ in range(repeats):
            for k, fn in fns.items():
                a = time.perf_counter()
                fn()
                times[k].append((time.perf_counter() - a) * 1e3)
    return {k: (statistics.median(v), min(v)) for k, v in times.items()}


def profile(runs: dict, steps: int, top: int = 14) -> None:
    for name in ("ours", "diffusers"):
        prof = cProfile.Profile()
        prof.enable()
        runs[name]()
        prof.disable()
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(top)
        print(f"\n## cProfile: {name}, {steps} steps (top {top} by own time)\n```")
        print("\n".join(line for line in s.getvalue().splitlines()[4:] if line.strip()))
        print("```")


def cpu_bench(args, tmp: Path) -> None:
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from core.latent.pipeline import load_pipeline

    folder = save_pipeline(tmp / "pipe", bench_components(tmp=tmp))
    ours = load_pipeline(folder, device="cpu")
    theirs = StableDiffusionPipeline.from_pretrained(str(folder), safety_checker=None, requires_safety_checker=False,
                                                     local_files_only=True)
    theirs.scheduler = DDIMScheduler.from_config(theirs.scheduler.config)
    theirs.set_progress_bar_config(disable=True)
    decoders = preview_decoders(ours, tmp, args.taesd_channels)

    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}), "
          f"load average {os.getloadavg()[0]:.1f}, {time.strftime('%Y-%m-%d %H:%M')}")
    unet_p = sum(p.numel() for p in ours.denoiser.net.parameters())
    print(f"# tiny random SD pipeline: UNet {unet_p / 1e6:.2f} M parameters on {LATENT}×{LATENT}×4 latents "
          f"({LATENT * 8}² images), {args.steps} DDIM steps, guidance {args.guidance}, prompt {PROMPT!r}, "
          f"seed {SEED}, {args.repeats} repeats")

    den = ours.denoiser.net
    x, t = torch.zeros(2, 4, LATENT, LATENT), torch.tensor([500, 500])
    c = torch.zeros(2, 77, int(den.config.cross_attention_dim))
    f_unet = flops(lambda: den(x, t, encoder_hidden_states=c))
    if "taesd" in decoders:
        f_taesd = flops(lambda: decoders["taesd"].decode(torch.zeros(1, 4, LATENT, LATENT)))
        r_unet, r_taesd = real_sd15_ratio()
        print(f"# TAESD sizing (FLOPs, one decode / one guided UNet step): real SD 1.5 at 512²: "
              f"{r_taesd / 1e9:.0f} G / {r_unet / 1e9:.0f} G = {r_taesd / r_unet:.1%}; this tiny pair "
              f"({args.taesd_channels}-channel TAESD): {f_taesd / 1e6:.0f} M / {f_unet / 1e6:.0f} M = "
              f"{f_taesd / f_unet:.1%}")
    comp = component_times(ours, decoders)
    step_ms = comp["UNet step (batch 2)"]
    print("\n| component (wall ms, median / best) | ms | × UNet step (best) |\n|---|---|---|")
    for k, (med, best) in comp.items():
        print(f"| {k} | {med:.2f} / {best:.2f} | {best / step_ms[1]:.2f} |")

    runs = make_runs(ours, theirs, args.steps, args.guidance, decoders)
    names = list(runs)
    outs = {k: fn() for k, fn in runs.items()}  # warm-up (and the images to compare)
    times = {k: [] for k in names}
    for r in range(args.repeats):
        for k in (names if r % 2 == 0 else names[::-1]):
            _, cpu, wall = timed(runs[k])
            times[k].append((cpu, wall))
    ref = outs["diffusers"]
    base = times["diffusers"]
    goals = {"ours": 1.0, "ours+approx": 1.05, "ours+taesd": 1.15}
    print(f"\n| variant | CPU s median | CPU s best | wall s median | wall s best | ms/step (wall best) | spread wall "
          f"(max/min) | ratio CPU median | ratio CPU best | ratio wall median | ratio wall best | goal | "
          f"max abs diff |\n|{'---|' * 13}")
    for k in names:
        cpu, wall = zip(*times[k])
        bc, bw = zip(*base)
        diff = float(np.abs(outs[k] - ref).max())
        ratios = (statistics.median(cpu) / statistics.median(bc), min(cpu) / min(bc),
                  statistics.median(wall) / statistics.median(bw), min(wall) / min(bw))
        goal = goals.get(k, goals["ours+taesd"] if k.startswith("ours+taesd") else None)
        goal = f"≤ {goal:.2f}×" if goal else "—"
        print(f"| {k} | {statistics.median(cpu):.3f} | {min(cpu):.3f} | {statistics.median(wall):.3f} | "
              f"{min(wall):.3f} | {min(wall) / args.steps * 1e3:.1f} | {max(wall) / min(wall):.2f} | "
              + " | ".join(f"{v:.3f}×" for v in ratios) + f" | {goal} | {diff:.1e} |", flush=True)
    paired = {k: statistics.median(w / bw for (_, w), (_, bw) in zip(times[k], base)) for k in names[1:]}
    print("\n# median of the per-repeat wall ratios (each run against the diffusers run beside it): "
          + ", ".join(f"{k} {v:.3f}×" for k, v in paired.items()))
    if args.profile:
        profile(runs, args.steps)
        net = ours.denoiser.net
        n = 200
        a = time.perf_counter()
        for _ in range(n):
            net.dtype  # noqa: B018 - what TextDenoiser.model_output reads once per step
        slow = (time.perf_counter() - a) / n * 1e6
        a = time.perf_counter()
        for _ in range(n):
            next(net.parameters()).dtype  # noqa: B018
        fast = (time.perf_counter() - a) / n * 1e6
        print(f"# one read of the UNet's .dtype (diffusers' ModelMixin.dtype walks every module): {slow:.0f} µs; "
              f"next(unet.parameters()).dtype: {fast:.1f} µs")


def preview_decoders(ours, tmp: Path, taesd_channels: int) -> dict:
    """{"approx": …, "taesd": …} from core.latent.decoders (the linear map fitted now, not cached; the TAESD
    saved as a folder and loaded through make_decoder). Missing ones are left out with a line."""
    try:
        from core.latent.decoders import LinearDecoder, make_decoder
    except ImportError as e:
        print(f"# previews skipped: core.latent.decoders is not importable ({e})")
        return {}
    folder = tmp / "taesd"
    taesd_model(taesd_channels).save_pretrained(str(folder), safe_serialization=True)
    return {"approx": LinearDecoder.for_pipeline(ours, cache=False),
            "taesd": make_decoder(ours, "taesd", taesd=str(folder))}


# ----- GPU: an SD-1.5-sized UNet ----------------------------------------------------------------------------
SD15_UNET = dict(cross_attention_dim=768, sample_size=64)  # diffusers' UNet2DConditionModel defaults otherwise
DRY_UNET = dict(cross_attention_dim=768, sample_size=8, block_out_channels=(32, 64), layers_per_block=1,
                norm_num_groups=8, attention_head_dim=8, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))


class _Memory:
    """torch.cuda's allocator counters, or zeros on the CPU (the dry run)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def allocated(self) -> int:
        return torch.cuda.memory_allocated() if self.cuda else 0

    def reserved(self) -> int:
        return torch.cuda.memory_reserved() if self.cuda else 0

    def peak(self) -> int:
        return torch.cuda.max_memory_allocated() if self.cuda else 0

    def reset_peak(self):
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()

    def release(self):
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()


def gpu_bench(args, tmp: Path, dry_run: bool = False) -> None:
    """The SD-1.5-sized comparison on CUDA; ``dry_run``: the same code on the CPU with a small UNet, 4 steps at
    64² (it checks the script; its numbers mean nothing)."""
    if not dry_run and not torch.cuda.is_available():
        print("\n# --gpu: skipped (torch.cuda.is_available() is False)")
        return
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    from core.latent.generate import text_to_image
    from core.latent.pipeline import load_pipeline
    from core.samplers import run_to_end

    device = torch.device("cpu" if dry_run else "cuda")
    dtype, precision = (torch.float32, "fp32") if dry_run else (torch.float16, "fp16")
    config = DRY_UNET if dry_run else SD15_UNET
    steps = 4 if dry_run else 30
    cut = steps // 2
    side = config["sample_size"] * 8
    mem = _Memory(device)
    tmp = tmp / "gpu"
    text_encoder, tokenizer = text_parts(768, tmp)
    torch.manual_seed(0)
    with torch.device(device):  # random init on the GPU: seconds, not a minute
        unet = UNet2DConditionModel(**config).to(dtype).eval()
    params = sum(p.numel() for p in unet.parameters())
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32, 32, 32),
                        layers_per_block=1, norm_num_groups=8, sample_size=side,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    folder = save_pipeline(tmp / "pipe", (unet.cpu(), vae, text_encoder, tokenizer, ddim_scheduler()))
    del unet
    mem.release()
    name = "dry run on the CPU (numbers meaningless)" if dry_run else torch.cuda.get_device_name()
    print(f"\n## GPU: {name}; UNet2DConditionModel {params / 1e6:.0f} M parameters (random, {precision}), "
          f"{side}², {steps} DDIM steps, guidance {args.guidance}, tiny VAE and text encoder")

    theirs = StableDiffusionPipeline.from_pretrained(str(folder), safety_checker=None, requires_safety_checker=False,
                                                     dtype=dtype, local_files_only=True).to(device)
    theirs.scheduler = DDIMScheduler.from_config(theirs.scheduler.config)
    theirs.set_progress_bar_config(disable=True)

    def run_theirs():
        return theirs(PROMPT, num_inference_steps=steps, guidance_scale=args.guidance,
                      generator=torch.Generator().manual_seed(SEED), output_type="latent").images

    def measure(fn, repeats: int = 3):
        fn()  # warm-up (cuDNN autotuning, allocator)
        mem.sync()
        mem.release()
        base = mem.allocated()
        mem.reset_peak()
        ts = []
        for _ in range(repeats):
            a = time.perf_counter()
            fn()
            mem.sync()
            ts.append(time.perf_counter() - a)
        return steps / min(ts), steps / statistics.median(ts), mem.peak() - base, base

    rows = {"diffusers": measure(run_theirs)}
    theirs = None  # the closure's reference too: its memory goes back before ours loads
    mem.release()
    ours = load_pipeline(folder, device=device, precision=precision)

    def run_ours():
        return run_to_end(text_to_image(ours, PROMPT, guidance=args.guidance, seed=SEED, sampler="ddim",
                                        steps=steps)).x_t

    rows["ours"] = measure(run_ours)
    print("\n| loop | it/s (best; whole call, no VAE decode) | it/s (median) | peak VRAM above the loaded model "
          "(MiB) | loaded model (MiB) |\n|---|---|---|---|---|")
    for k, (best, med, peak, base) in rows.items():
        print(f"| {k} | {best:.2f} | {med:.2f} | {peak / 2**20:.0f} | {base / 2**20:.0f} |")

    # Cancel mid-run: stop iterating at step `cut`, close the generator, drop every reference, empty the cache
    mem.release()
    before, before_reserved = mem.allocated(), mem.reserved()
    gen = text_to_image(ours, PROMPT, guidance=args.guidance, seed=SEED, sampler="ddim", steps=steps)
    for step in gen:
        if step.index >= cut:
            break
    during = mem.allocated()
    gen.close()
    del gen, step
    mem.release()
    after, after_reserved = mem.allocated(), mem.reserved()
    print(f"\n# cancel at step {cut}/{steps}: allocated before {before / 2**20:.1f} MiB, at the cancel "
          f"{during / 2**20:.1f} MiB, after close + empty_cache {after / 2**20:.1f} MiB "
          f"({(after - before) / 2**20:+.1f} MiB against before); reserved {before_reserved / 2**20:.0f} → "
          f"{after_reserved / 2**20:.0f} MiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=7, help="timed runs of each variant (at least 5)")
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("--taesd-channels", type=int, default=4, help="the tiny TAESD's width (the real one's is 64)")
    ap.add_argument("--profile", action="store_true", help="cProfile one run of each side")
    ap.add_argument("--gpu", action="store_true", help="also the SD-1.5-sized UNet on CUDA, if there is one")
    ap.add_argument("--gpu-dry-run", action="store_true",
                    help="the --gpu section's code on the CPU with a small UNet (checks the script; the numbers "
                    "mean nothing)")
    ap.add_argument("--no-cpu", action="store_true", help="skip the CPU comparison (with --gpu)")
    args = ap.parse_args()
    if args.repeats < 5:
        ap.error("--repeats: at least 5")
    torch.set_num_threads(args.threads)
    import diffusers
    import transformers
    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()
    with tempfile.TemporaryDirectory(prefix="bench-sd-") as tmp:  # the pipeline folders (SD-1.5-sized: 1.7 GB)
        if not args.no_cpu:
            cpu_bench(args, Path(tmp))
        if args.gpu or args.gpu_dry_run:
            gpu_bench(args, Path(tmp), dry_run=args.gpu_dry_run)


if __name__ == "__main__":
    main()
