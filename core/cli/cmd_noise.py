"""``ddpm noise IMAGE … -o OUT.png [--npz]``: the notes' strip — x_0, then x_t at each listed t (eq. 5). With
``--model SD_SPEC``, the same in a Stable Diffusion pipeline's latent space (:mod:`core.latent.forward`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from core.atomic import atomic_path
from core.cli.options import SEED, TIMESTEPS_T
from core.cli.cmd_schedule import BETA
from core.forward import NOTES_TIMESTEPS, noise_strip, notes_timesteps, parse_timesteps
from core.images import load_image, make_grid, save_image
from core.outputs import check_output_file, refuse_overwriting_inputs, spec_paths
from core.schedule import notes_schedule, parse_schedule_spec


def register(sub) -> None:
    p = sub.add_parser("noise", help="noise a photo to several timesteps and write the strip",
                       description="Write x_0 followed by x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε at each --t, as one PNG. "
                       "Without --schedule: the notes' example, linear 1e-4 → 0.05 with T=100.")
    p.add_argument("image", help="any image Pillow reads")
    p.add_argument("--schedule", help="a preset name or a saved FILE.json (default: the notes' linear T=100)")
    p.add_argument("--T", type=TIMESTEPS_T, help="timesteps for a preset")
    p.add_argument("--beta-start", type=BETA, help="first β for a preset")
    p.add_argument("--beta-end", type=BETA, help="last β for a preset")
    p.add_argument("--zero-snr", action="store_true", help="rescale the preset to zero terminal SNR")
    p.add_argument("--t", default=None, help=f"comma-separated timesteps (default {','.join(map(str, NOTES_TIMESTEPS))})")
    p.add_argument("--seed", type=SEED, default=0, help="seed of the noise ε (default 0)")
    p.add_argument("-o", "--output", required=True, help="output PNG")
    p.add_argument("--npz", action="store_true", help="also write OUT.npz with x0, xt and t (with --model: and "
                   "the latents z0, zt)")
    p.add_argument("--model", metavar="SD_SPEC", help="a Stable Diffusion pipeline (folder or cached repo id): "
                   "encode the photo with its VAE (scaled to the model's size), noise the latents with its "
                   "schedule, and write the VAE-decoded strip above the 4 latent channels (default timesteps: "
                   "the notes' fractions of T)")
    p.add_argument("--device", default="auto", help="with --model: auto, cpu, cuda or mps")
    p.set_defaults(func=run)


def run(args) -> int:
    out = Path(args.output)
    if out.suffix.lower() != ".png":
        raise ValueError(f"-o {out}: the strip is written as .png")
    npz_path = out.with_suffix(".npz")
    check_output_file(out)
    refuse_overwriting_inputs([out, npz_path if args.npz else None], [args.image, args.schedule,
                                                                      *spec_paths(args.model)])
    if args.model is not None:
        return _run_latent(args, out, npz_path)
    if args.schedule is None and args.T is None and args.beta_start is None and args.beta_end is None:
        schedule = notes_schedule(zero_snr=args.zero_snr)
    else:
        schedule = parse_schedule_spec(args.schedule, T=args.T, beta_start=args.beta_start, beta_end=args.beta_end,
                                       zero_snr=args.zero_snr)
    if args.t is None:
        ts = notes_timesteps(schedule.T)
    else:
        ts = parse_timesteps(args.t, schedule)
    x0 = load_image(args.image)
    xt = noise_strip(x0, schedule, ts, args.seed)
    strip = make_grid([x0, *xt], ncols=len(ts) + 1, pad=4)
    if args.npz:  # both files or neither: write the npz to a temp first, rename both at the end
        with atomic_path(npz_path) as tmp_npz:
            with open(tmp_npz, "wb") as f:
                np.savez(f, x0=x0.astype(np.float32), xt=xt, t=np.asarray(ts, dtype=np.int64))
            save_image(out, strip)
    else:
        save_image(out, strip)
    print(f"wrote {out}" + (f" and {npz_path}" if args.npz else "") + f" (t = {', '.join(map(str, ts))})")
    return 0


def _run_latent(args, out: Path, npz_path: Path) -> int:
    from core.device import pick_device
    from core.latent.forward import channel_view, fit_photo, latent_noise_strip
    from core.models.load import is_latent_spec, load_latent
    if args.schedule is not None or args.T is not None or args.beta_start is not None or args.zero_snr:
        raise ValueError("--model uses the pipeline's own schedule; drop --schedule/--T/--beta-*/--zero-snr")
    if not is_latent_spec(args.model):
        raise ValueError(f"--model {args.model}: not a Stable Diffusion pipeline (a pixel strip needs no model)")
    pipe = load_latent(args.model, device=pick_device(args.device))
    schedule = pipe.denoiser.schedule
    ts = notes_timesteps(schedule.T) if args.t is None else parse_timesteps(args.t, schedule)
    strip = latent_noise_strip(pipe, fit_photo(load_image(args.image), pipe.default_size), ts, args.seed)
    h, w = strip.decoded.shape[1:3]
    top = list(strip.decoded)
    bottom = [channel_view(z, h, w) for z in (strip.z0, *strip.zt)]
    grid = make_grid(top + bottom, ncols=len(ts) + 1, pad=4)
    if args.npz:
        with atomic_path(npz_path) as tmp_npz:
            with open(tmp_npz, "wb") as f:
                np.savez(f, x0=strip.x0.astype(np.float32), xt=strip.decoded[1:].astype(np.float32),
                         t=np.asarray(ts, dtype=np.int64), z0=strip.z0.astype(np.float32),
                         zt=strip.zt.astype(np.float32))
            save_image(out, grid)
    else:
        save_image(out, grid)
    print(f"wrote {out}" + (f" and {npz_path}" if args.npz else "") + f" ({pipe.name}'s latents "
          f"{'×'.join(map(str, strip.z0.shape))}, t = {', '.join(map(str, ts))})")
    return 0
