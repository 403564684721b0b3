"""``ddpm elbo --model SPEC (--image FILE | --data builtin:mnist|DIR --n N) [--variance small|large]
[--clip|--no-clip] [--json]``: the variational bound L_VLB = L_T + Σ L_{t−1} + L_0 of a model on real images, every
term in bits/dim (DDPM notes, eq. 9–14; computed by :mod:`core.vlb`).

A trained model is evaluated on its own T only, refused like ``ddpm sample`` refuses another T
(:func:`core.models.denoiser.check_training_T`); every number is range-checked before any work, with the range in
the one-line message (exit 2).

``--model SD_SPEC`` (a Stable Diffusion pipeline folder or a cached repo id) computes the same bound in latent space
(:mod:`core.vlb.latent`): the UNet conditioned on ``--prompt`` (default empty: unconditional; no guidance), on the
latents z_0 = s·E(x) of the image(s), with a continuous Gaussian L_0. It prints an estimate (one timed UNet call ×
the calls needed) before the run, and the VAE's reconstruction PSNR beside the bound."""
from __future__ import annotations

import time

import numpy as np

from core.cli.options import AUTOGUIDANCE, AUTOGUIDANCE_HELP, BATCH, SEED, TIMESTEPS_T, int_in
from core.cli.progress import Progress
from core.jobs.bound import DEFAULT_N, MAX_N, load_images
from core.messages import json_text
from core.vlb import DEFAULT_BATCH_SIZE, VARIANCES, BoundResult, compute_bound
from core.vlb.latent import LATENT_BATCH_ELEMENTS


def register(sub) -> None:
    p = sub.add_parser("elbo", help="compute the variational bound (bits/dim) of a model on images",
                       description="Evaluate every term of the variational bound L_VLB = L_T + Σ_{t≥2} L_{t−1} + L_0 "
                       "(notes eq. 9–14) for a model on a photo or on dataset images, in bits per dimension. "
                       "--json prints {\"bits_per_dim\": total, \"terms\": [L_0, L_1, …, L_T], …}.")
    p.add_argument("--model", required=True, help="builtin:mnist, oracle:PATH, a model folder, or a Stable "
                   "Diffusion pipeline (folder or cached repo id: the bound of its latents)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", help="an image file (centre-cropped and resized to the model's resolution)")
    src.add_argument("--data", help="builtin:mnist (its held-out digits) or a folder of images")
    p.add_argument("--n", type=int_in(1, MAX_N), default=None,
                   help=f"how many --data images, 1…{MAX_N} (default {DEFAULT_N}; the first N)")
    p.add_argument("--split", choices=("heldout", "train", "all"), default=None,
                   help="which builtin:mnist digits (default heldout: digits no model here was trained on)")
    p.add_argument("--variance", choices=VARIANCES, default=None,
                   help="p_θ's variance: small = β̃_t, large = β_t (default: the model's own)")
    p.add_argument("--schedule", default=None,
                   help="a preset name or schedule FILE.json (default: the model's own; linear T=1000 for an oracle)")
    p.add_argument("--T", type=TIMESTEPS_T, default=None,
                   help="timesteps for a --schedule preset (default: the model's own T; 1000 for an oracle). A "
                   "trained model is refused any other T")
    p.add_argument("--prompt", default=None,
                   help="a pipeline's prompt c: the bound of ε_θ(z_t, t, τ(c)) (default empty: unconditional)")
    p.add_argument("--seed", type=SEED, default=0, help="seed of the noise that draws each x_t (default 0)")
    p.add_argument("--autoguidance", type=AUTOGUIDANCE, metavar="W", help=AUTOGUIDANCE_HELP)
    p.add_argument("--batch-size", type=BATCH, default=None,
                   help=f"(image, timestep) pairs per forward pass (default {DEFAULT_BATCH_SIZE}; a pipeline: "
                   f"{LATENT_BATCH_ELEMENTS:,} latent pixels, 8 for SD 1.x at 512²)")
    p.add_argument("--clip", dest="clip", action="store_true", default=None,
                   help="clip x̂_0 to [−1, 1] (default: the model's own setting, clip_sample in its config)")
    p.add_argument("--no-clip", dest="clip", action="store_false", help="do not clip x̂_0")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the summary")
    p.set_defaults(func=run)


def pick_schedule(args, denoiser):
    """--schedule (a preset, at --T or else the model's own T, or a file); else the model's own; else (the oracle)
    linear, T = 1000. A trained model is refused a schedule of another T, as ``ddpm sample`` refuses it."""
    from core.models.denoiser import check_training_T
    from core.schedule import model_schedule, parse_schedule_spec
    own = denoiser.schedule
    if args.schedule is not None:
        if args.T is not None and (args.schedule.endswith(".json") or "/" in args.schedule):  # as parse_… reads it
            raise ValueError(f"--T goes with --schedule PRESET; the file {args.schedule} has its own T")
        schedule = parse_schedule_spec(args.schedule, T=args.T if args.T is not None else own.T if own else None)
    elif args.T is not None:
        raise ValueError("--T goes with --schedule PRESET")
    else:
        schedule = model_schedule(denoiser)
    check_training_T(denoiser, schedule)
    return schedule


def run(args) -> int:
    from core.models.load import is_latent_spec, load_model
    if is_latent_spec(args.model):
        return run_latent(args)
    if args.prompt is not None:
        raise ValueError("--prompt goes with a Stable Diffusion pipeline (--model SD_FOLDER or a cached repo id)")
    from core.models.autoguidance import set_weight
    denoiser = set_weight(load_model(args.model, device=args.device), args.autoguidance)
    schedule = pick_schedule(args, denoiser)  # before the images: a refusal costs no loading
    x0, source = load_images(denoiser, image=args.image, data=args.data, n=args.n, split=args.split)
    start = time.perf_counter()
    batch = args.batch_size if args.batch_size is not None else DEFAULT_BATCH_SIZE
    events = compute_bound(denoiser, x0, schedule, args.variance, batch_size=batch, seed=args.seed,
                           clip_denoised=args.clip)
    result = None
    with Progress(len(x0) * schedule.T, "elbo", unit="terms") as bar:
        for event in events:
            if isinstance(event, BoundResult):
                result = event
            else:
                bar.update(event.done)
    seconds = time.perf_counter() - start
    if args.json:
        out = {**result.to_dict(), "model": args.model, "images": source, "seconds": round(seconds, 3)}
        print(json_text(out))  # valid JSON even if a term is not finite (null)
    else:
        print(summary(result, args.model, source, seconds))
    return 0


def summary(r: BoundResult, model: str, source: str, seconds: float) -> str:
    """The bound as a few lines: total, the three parts, and where in t the KL terms sit."""
    n, T = r.per_image.shape[0], r.T
    k = r.terms[1:-1]
    lines = [f"variational bound of {model} on {n} image{'s' * (n != 1)} from {source}",
             f"  schedule {r.schedule.name} T={T}, variance {r.variance} (σ_t² = {'β̃_t' if r.variance == 'small' else 'β_t'}),"
             f" clip x̂_0 {'on' if r.clip_denoised else 'off'}, seed {r.seed}, {seconds:.1f} s",
             f"  L_T        prior     {r.prior:10.5f} bits/dim",
             f"  L_1…L_{T - 1:<4} KL sum    {r.kl:10.5f} bits/dim"]
    edges = [1, 2, 11, 101, T]
    for lo, hi in zip(edges[:-1], edges[1:]):
        if lo < T and hi > lo:
            hi = min(hi, T)
            label = f"L_{lo}" if hi - lo == 1 else f"L_{lo}…L_{hi - 1}"
            lines.append(f"    {label:<14}        {k[lo - 1:hi - 1].sum():10.5f}")
    lines += [f"  L_0        decoder   {r.decoder:10.5f} bits/dim",
              f"  total                {r.bits_per_dim:10.5f} bits/dim"
              f"  (= {r.bits_per_dim * r.dims:.1f} bits per image)"]
    if n > 1:
        per = r.per_image_bits_per_dim
        lines.append(f"  per image: min {per.min():.4f}, median {np.median(per):.4f}, max {per.max():.4f} bits/dim")
    return "\n".join(lines)


def run_latent(args) -> int:
    """``ddpm elbo --model SD_SPEC``: the bound of the pipeline's UNet on the images' latents (see the module
    docstring); the estimate goes to stderr before the run."""
    import sys

    from core.device import pick_device
    from core.jobs.bound import load_latent_images
    from core.models.load import load_latent
    from core.vlb.latent import BoundEstimate, LatentBound, latent_bound_events
    if args.schedule is not None or args.T is not None:
        raise ValueError("a pipeline's UNet is tied to its own schedule: --schedule and --T go with pixel models")
    if args.autoguidance is not None:
        raise ValueError("--autoguidance goes with pixel models that ship a guide, not with a pipeline")
    pipe = load_latent(args.model, device=pick_device(args.device))
    pixels, source = load_latent_images(pipe, image=args.image, data=args.data, n=args.n, split=args.split)
    start = time.perf_counter()
    out, bar = None, None
    try:
        for ev in latent_bound_events(pipe, pixels, args.prompt or "", args.variance, seed=args.seed,
                                      batch_size=args.batch_size, clip_denoised=args.clip):
            if isinstance(ev, BoundEstimate):
                print(ev.line(), file=sys.stderr, flush=True)
                bar = Progress(len(pixels) * pipe.denoiser.schedule.T, "elbo", unit="terms")
            elif isinstance(ev, LatentBound):
                out = ev
            elif not isinstance(ev, str) and bar is not None:
                bar.update(ev.done)
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - start
    if args.json:
        print(json_text({**out.to_dict(), "model": args.model, "images": source, "seconds": round(seconds, 3)}))
    else:
        print(latent_summary(out, args.model, source, seconds))
    return 0


def latent_summary(b, model: str, source: str, seconds: float) -> str:
    """:func:`summary` in bits per latent dimension, with what it bounds and the VAE's reconstruction PSNR."""
    r = b.result
    shape = "×".join(str(v) for v in b.latent_shape)
    lines = summary(r, model, source, seconds).replace("bits/dim", "bits/latent-dim").splitlines()
    lines[0] += f", in latent space (z_0 = s·E(x), {shape} = {r.dims} dims, s = {b.scaling_factor:g})"
    lines.insert(1, "  prompt " + (f"{b.prompt!r}" if b.prompt else "'' (unconditional)")
                 + "; classifier-free guidance does not enter (the bound is of one model)")
    at = next(i for i, line in enumerate(lines) if "L_0" in line and "decoder" in line)
    lines[at] = lines[at].replace("decoder  ", "continuous") + "  (a Gaussian density: may be negative)"
    lines.append("  this bounds −log p(latents) per latent dimension, not −log p(pixels)")
    lines.append(f"  VAE reconstruction D(z_0/s): PSNR {b.vae_psnr_db:.2f} dB (not part of the bound)")
    if b.estimate is not None:
        lines.append(f"  {b.estimate.line()}")
    return "\n".join(lines)
