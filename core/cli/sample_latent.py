"""``ddpm sample --model SD_SPEC --prompt …``: text-to-image (or img2img with ``--from``) on a Stable Diffusion
pipeline, and ``--list-models``. Argparse lives in :mod:`core.cli.cmd_sample`; this is the run and its printing."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from core.atomic import atomic_path
from core.cli.progress import drive
from core.messages import printable
from core.outputs import check_output_file, refuse_overwriting_inputs, spec_paths

MAX_GIF_FRAMES = 60


def list_models(extra_spec: str | None) -> int:
    """Print one line per pipeline / pixel model in the Hugging Face cache, then the ``--model`` folder if any."""
    from core import hf_cache
    found = hf_cache.cached_models()
    roots = ", ".join(str(r) for r in hf_cache.cache_roots())
    print(f"Hugging Face cache ({roots}):" if found else f"Hugging Face cache ({roots}): no models")
    for m in found:
        print("  " + hf_cache.describe(m))
    if extra_spec:
        print(f"--model {printable(extra_spec)}: {describe_spec(extra_spec)}")
    return 0


def describe_spec(spec: str) -> str:
    """What a SPEC is, in a few words, without loading any network."""
    from core.latent.parts import is_latent_pipeline
    from core.models.load import model_folder
    if spec.startswith(("builtin:", "oracle:")):
        return "a built-in model" if spec.startswith("builtin:") else "an oracle (exact denoiser of images)"
    folder = model_folder(spec)
    if is_latent_pipeline(folder):
        return f"a Stable Diffusion pipeline ({folder})"
    return f"a pixel-space model folder ({folder})"


def _frame(x_t: np.ndarray, x0: np.ndarray) -> np.ndarray:
    """Decoded x_t (left) beside decoded x̂_0 (right), uint8."""
    from core.images import batch_grid, beside
    return beside(batch_grid(x_t), batch_grid(x0))


def run_latent(args) -> int:
    from core.device import pick_device
    from core.images import batch_grid, evenly_spaced, load_image, save_animation, save_image
    from core.latent.generate import DEFAULT_GUIDANCE, DEFAULT_SAMPLER, text_to_image
    from core.models.load import load_latent
    from core.samplers import SAMPLER_NAMES

    out = Path(args.output)
    suffix = out.suffix.lower()
    if suffix not in (".png", ".gif", ".npz"):
        raise ValueError(f"-o {out}: write .png (a grid), .gif (the animation) or .npz (the arrays)")
    if args.prompt is None:
        raise ValueError(f"{args.model} is a Stable Diffusion pipeline: give --prompt \"…\"")
    if args.from_image is None and (args.t is not None or args.strength is not None):
        raise ValueError("--t and --strength go with --from IMAGE")
    if args.from_image is not None and (args.t is None) == (args.strength is None):
        raise ValueError("--from IMAGE needs --t T (a timestep) or --strength S (diffusers' img2img), not both")
    if args.preview is not None and suffix != ".gif":
        raise ValueError("--preview decodes the .gif's frames; write -o OUT.gif")
    check_output_file(out)
    refuse_overwriting_inputs([out], [args.from_image, args.taesd, *spec_paths(args.model), *spec_paths(args.taesd)])
    device = pick_device(args.device)
    init = load_image(args.from_image) if args.from_image else None
    pipe = load_latent(args.model, device=device, precision=args.precision)
    pipe.latent_size(args.height, args.width)  # multiples of the VAE's factor, before any work
    if init is not None:  # the photo at --height/--width, else within the model's own size
        from core.latent.forward import fit_photo
        init = fit_photo(init, pipe.default_size, args.height, args.width)
    gif = suffix == ".gif"
    preview = None
    if gif:
        from core.latent.decoders import make_decoder
        preview = make_decoder(pipe, args.preview or "approx", taesd=args.taesd)
    sampler = args.sampler or DEFAULT_SAMPLER
    n = args.n or 1
    steps = text_to_image(pipe, args.prompt, args.negative_prompt,
                          guidance=DEFAULT_GUIDANCE if args.guidance is None else args.guidance,
                          height=args.height, width=args.width, n=n, seed=args.seed, sampler=sampler,
                          steps=args.steps, eta=args.eta, init_image=init, t_start=args.t, strength=args.strength,
                          variance_type=args.variance, clip_sample=args.clip, dynamic_threshold=args.threshold,
                          use_clipped_model_output=args.use_clipped_model_output, timestep_spacing=args.spacing)
    frames = []

    def record(step):  # the last frame is decoded by the full VAE below
        if gif and step.index < step.total and step.index in evenly_spaced(step.total, MAX_GIF_FRAMES):
            frames.append(_frame(*preview.decode_step(step.x_t, step.x0_pred)))

    last, elapsed = drive(steps, f"{SAMPLER_NAMES[sampler]} on {device.type}", unit="it", each=record)
    images = pipe.decode(last.x_t).clamp(-1, 1).cpu()  # the result: always the full VAE
    if gif:
        frames.append(_frame(images, preview.decode(last.x0_pred).cpu()))  # the result itself: the full VAE
        save_animation(out, frames, duration_ms=[80] * (len(frames) - 1) + [1500])
    elif suffix == ".png":
        save_image(out, batch_grid(images))
    else:
        with atomic_path(out) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, images=images.numpy().astype(np.float32),
                         latents=last.x_t.detach().float().cpu().numpy())
    rate = last.total / elapsed if elapsed > 0 else float("inf")
    print(f"wrote {out}: {len(images)} image(s) from {printable(pipe.name)} with {sampler}, {last.total} steps, "
          f"seed {args.seed} ({elapsed:.1f} s, {rate:.2f} steps/s on {device.type})")
    return 0
