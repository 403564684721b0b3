"""``ddpm sample --model SPEC … -o OUT.png|.gif|.npz``: run the reverse process (DDPM, DDIM or DPM-Solver++) and
write a grid, the denoising animation, or the raw samples. A Stable Diffusion SPEC takes ``--prompt`` and runs in
latent space (:mod:`core.cli.sample_latent`); ``--list-models`` lists what is on disk."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from core.atomic import atomic_path
from core.cli.options import AUTOGUIDANCE, AUTOGUIDANCE_HELP, BATCH, ETA, GUIDANCE, SEED, STEPS, float_in, int_in
from core.cli.progress import drive
from core.messages import printable
from core.outputs import check_output_file, refuse_overwriting_inputs, spec_paths

OUTPUTS = (".png", ".gif", ".npz")
PREVIEWS = ("approx", "taesd", "vae")
LATENT_ONLY = ("prompt", "negative_prompt", "height", "width", "preview", "taesd", "strength")
PIXEL_ONLY = ("class_", "schedule", "resolution", "autoguidance")
MAX_GIF_FRAMES = 60


def register(sub) -> None:
    from core.samplers import SAMPLERS
    from core.samplers.timesteps import SPACINGS
    p = sub.add_parser("sample", help="generate images with a model (DDPM, DDIM or DPM-Solver++)",
                       description="Generate images by running the reverse process. SPEC: builtin:NAME, a model "
                       "folder (ours or diffusers), oracle:PATH (the exact denoiser of an image, a folder of "
                       "images, or builtin:mnist), a Stable Diffusion pipeline folder, or a Hugging Face repo id "
                       "already in the local cache (nothing is downloaded). Writes .png (a grid), .gif (x_t beside "
                       "x̂_0 at each step) or .npz (images: N×C×H×W float32 in [−1, 1]; Stable Diffusion adds "
                       "latents).")
    p.add_argument("--model", default=None, metavar="SPEC", help="model to sample (default builtin:mnist)")
    p.add_argument("--list-models", action="store_true", help="list the pipelines and pixel models in the Hugging "
                   "Face cache and the folders given with --model, then exit")
    p.add_argument("--sampler", default=None, choices=SAMPLERS, help="ddpm (ancestral), ddim, dpmpp2m "
                   "(DPM-Solver++ 2M); default ddpm (Stable Diffusion: ddim)")
    p.add_argument("--steps", type=STEPS, help="model calls (default: ddpm all T, ddim 50, dpmpp2m 20)")
    p.add_argument("--eta", type=ETA, default=0.0, help="DDIM's η: 0 deterministic … 1 DDPM-like (default 0)")
    p.add_argument("--seed", type=SEED, default=0, help="noise seed (same images on every device; default 0)")
    p.add_argument("--n", type=BATCH, default=None, help="number of images (default 16; Stable Diffusion: 1)")
    p.add_argument("--class", dest="class_", metavar="C", help="class label, or a comma list with one per image "
                   "(class-conditional models; -1 = no class)")
    p.add_argument("--guidance", type=GUIDANCE, default=None, help="classifier-free guidance scale w (default 1; "
                   "Stable Diffusion: 7.5, and w ≤ 1 means the prompt alone)")
    p.add_argument("--autoguidance", type=AUTOGUIDANCE, metavar="W", help=AUTOGUIDANCE_HELP)
    p.add_argument("--prompt", help="Stable Diffusion: the text to draw")
    p.add_argument("--negative-prompt", help="Stable Diffusion: text to steer away from (guidance's other side)")
    p.add_argument("--height", type=int_in(8, 4096), help="Stable Diffusion: image height in pixels, a multiple of "
                   "8 (default: the model's size)")
    p.add_argument("--width", type=int_in(8, 4096), help="Stable Diffusion: image width (default: the model's size)")
    p.add_argument("--preview", choices=PREVIEWS, default=None, help="Stable Diffusion: how .gif frames decode "
                   "x_t and x̂_0 — vae (exact, slow), taesd (TAESD, if you have it) or approx (a linear map fitted "
                   "to the VAE; default); the final image always uses the full VAE")
    p.add_argument("--taesd", metavar="FOLDER", help="a TAESD (AutoencoderTiny) folder or repo id for --preview "
                   "taesd (default: madebyollin/taesd from the Hugging Face cache)")
    p.add_argument("--strength", type=float_in(0.0, 1.0), help="with --from, instead of --t: diffusers' img2img "
                   "strength s (denoise the last s·steps of the usual timesteps)")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda or mps")
    p.add_argument("--precision", default=None, choices=("fp32", "bf16", "fp16"),
                   help="network precision (reduced precision is for GPUs; default fp32; Stable Diffusion: fp16 "
                   "on CUDA)")
    p.add_argument("--spacing", choices=SPACINGS, help="timestep spacing (default: the model's, else the "
                   "sampler's diffusers default)")
    p.add_argument("--variance", choices=("fixed_small", "fixed_large"), help="DDPM variance: β̃_t or β_t")
    p.add_argument("--clip", dest="clip", action="store_true", default=None, help="clip x̂_0 to [−1, 1]")
    p.add_argument("--no-clip", dest="clip", action="store_false", help="do not clip x̂_0")
    p.add_argument("--threshold", type=float_in(0.5, 1.0), metavar="P", help="dynamic thresholding at quantile P (Imagen)")
    p.add_argument("--use-clipped-model-output", action="store_true",
                   help="DDIM: recompute ε̂ from the clipped x̂_0 (diffusers' option of the same name)")
    p.add_argument("--from", dest="from_image", metavar="IMAGE", help="start from IMAGE noised to step --t (SDEdit)")
    p.add_argument("--t", type=int_in(0, 99_999), help="with --from: the timestep to noise the image to")
    p.add_argument("--schedule", metavar="SPEC", help="noise schedule: a preset name or a saved FILE.json (default: "
                   "the model's own; the oracle's default is linear, T=1000)")
    p.add_argument("--resolution", type=int_in(1, 1024), help="oracle over photos/folders: image size (default: their own "
                   "size, else 32)")
    p.add_argument("--scale", type=int_in(1, 64), help="enlarge the output by an integer factor (default: 1 for .png, "
                   "at least 256 pixels for .gif)")
    p.add_argument("-o", "--output", help="OUT.png, OUT.gif or OUT.npz (required unless --list-models)")
    p.set_defaults(func=run)


def parse_classes(text: str | None):
    if text is None:
        return None
    try:
        labels = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--class must be an integer or a comma list of integers, got {text!r}") from None
    if not labels:
        raise ValueError("--class lists no classes")
    return labels[0] if len(labels) == 1 else labels


def _frame(x_t, x0, scale: int) -> np.ndarray:
    """x_t (left) beside x̂_0 (right)."""
    from core.images import batch_grid, beside
    return beside(batch_grid(x_t, scale), batch_grid(x0, scale), 4 * scale)


def run(args) -> int:
    from core.models.load import is_latent_spec
    if args.list_models:
        from core.cli.sample_latent import list_models
        return list_models(args.model)
    if args.output is None:
        raise ValueError("-o OUT.png|.gif|.npz is required")
    args.model = args.model or "builtin:mnist"
    latent = is_latent_spec(args.model)
    for name in LATENT_ONLY if not latent else PIXEL_ONLY:
        if getattr(args, name) is not None:
            flag = "--" + name.rstrip("_").replace("_", "-")
            raise ValueError(f"{flag} is for {'Stable Diffusion pipelines' if not latent else 'pixel models'}; "
                             f"{args.model} is {'a pixel model' if not latent else 'a Stable Diffusion pipeline'}")
    if latent:
        from core.cli.sample_latent import run_latent
        return run_latent(args)
    args.sampler, args.n = args.sampler or "ddpm", args.n or 16
    args.guidance = 1.0 if args.guidance is None else args.guidance
    args.precision = args.precision or "fp32"
    from core.device import pick_device
    from core.images import save_animation, save_image
    from core.models.autoguidance import set_weight
    from core.models.load import load_model
    from core.images import batch_grid, evenly_spaced, load_image, photo_to_model_input
    from core.samplers import SAMPLER_NAMES, sample
    from core.schedule import model_schedule, parse_schedule_spec

    out = Path(args.output)
    if out.suffix.lower() not in OUTPUTS:
        raise ValueError(f"-o {out}: write .png (a grid), .gif (the animation) or .npz (the arrays)")
    check_output_file(out)
    refuse_overwriting_inputs([out], [args.from_image, args.schedule, *spec_paths(args.model)])
    if (args.from_image is None) != (args.t is None):
        raise ValueError("--from IMAGE and --t T go together")
    device = pick_device(args.device)
    labels = parse_classes(args.class_)
    denoiser = set_weight(load_model(args.model, device=device, resolution=args.resolution), args.autoguidance)
    x_start = (photo_to_model_input(load_image(args.from_image), denoiser.resolution, denoiser.channels)
               if args.from_image else None)
    if args.schedule is not None:
        schedule = parse_schedule_spec(args.schedule, T=denoiser.schedule.T if denoiser.schedule else None)
    else:  # the model's own; the oracle, which has none, gets Ho et al.'s linear T = 1000
        schedule = model_schedule(denoiser)
    steps = sample(denoiser, schedule=schedule, sampler=args.sampler, steps=args.steps, eta=args.eta,
                   seed=args.seed, n=args.n, class_labels=labels, guidance=args.guidance,
                   variance_type=args.variance, clip_sample=args.clip, dynamic_threshold=args.threshold,
                   use_clipped_model_output=args.use_clipped_model_output,
                   timestep_spacing=args.spacing, x_start=x_start, t_start=args.t, device=device,
                   precision=args.precision)
    gif = out.suffix.lower() == ".gif"
    frames, scale = [], args.scale or 1

    def record(step):
        nonlocal scale
        if gif and step.index == 1 and args.scale is None:  # GIF frames at least 256 pixels high
            scale = max(1, -(-256 // batch_grid(step.x_t, 1).shape[0]))
        if gif and step.index in evenly_spaced(step.total, MAX_GIF_FRAMES):
            frames.append(_frame(step.x_t, step.x0_pred, scale))

    last, elapsed = drive(steps, f"{SAMPLER_NAMES[args.sampler]} on {device.type}", each=record)
    images = last.x_t.detach().float().cpu().clamp(-1, 1)
    if gif:
        save_animation(out, frames, duration_ms=[80] * (len(frames) - 1) + [1500])  # hold the result
    elif out.suffix.lower() == ".png":
        save_image(out, batch_grid(images, scale))
    else:
        extra = {} if labels is None else {"labels": np.broadcast_to(np.asarray(labels, np.int64), (len(images),))}
        with atomic_path(out) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, images=images.numpy().astype(np.float32), **extra)
    rate = last.total / elapsed if elapsed > 0 else float("inf")
    print(f"wrote {out}: {len(images)} image(s) from {printable(denoiser.name)} with {args.sampler}, {last.total} steps, "
          f"seed {args.seed} ({elapsed:.1f} s, {rate:.1f} steps/s on {device.type})")
    return 0
