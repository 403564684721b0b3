"""``ddpm schedule PRESET [--T N] [--beta-start X] [--beta-end Y] [--zero-snr] [--json]`` / ``--load FILE.json``."""
from __future__ import annotations

from core.cli.options import TIMESTEPS_T, float_in
from core.messages import json_text, printable
from core.schedule import PRESETS, NoiseSchedule

BETA = float_in(0.0, 1.0, lo_open=True, hi_open=True)


def register(sub) -> None:
    p = sub.add_parser("schedule", help="print a noise schedule (β, ᾱ, SNR …)",
                       description="Print a noise schedule; --json gives one object with T, betas, alphas_cumprod.")
    p.add_argument("preset", nargs="?", help=f"one of {', '.join(PRESETS)} (default linear)")
    p.add_argument("--load", metavar="FILE.json", help="read a saved schedule instead of a preset")
    p.add_argument("--T", type=TIMESTEPS_T, default=1000, help="number of timesteps (default 1000)")
    p.add_argument("--beta-start", type=BETA, help="first β (default 1e-4)")
    p.add_argument("--beta-end", type=BETA, help="last β (default 0.02)")
    p.add_argument("--zero-snr", action="store_true", help="rescale to zero terminal SNR (Lin et al. 2023)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.load and args.preset:
        raise ValueError("give a PRESET or --load FILE.json, not both")
    if args.load:
        s = NoiseSchedule.load(args.load)
    else:
        s = NoiseSchedule.preset(args.preset or "linear", T=args.T, beta_start=args.beta_start,
                                 beta_end=args.beta_end, zero_snr=args.zero_snr)
    if args.json:
        d = s.to_dict()
        d.update(alphas_cumprod=[float(v) for v in s.alphas_cumprod],
                 sqrt_alphas_cumprod=[float(v) for v in s.sqrt_alphas_cumprod],
                 sqrt_one_minus_alphas_cumprod=[float(v) for v in s.sqrt_one_minus_alphas_cumprod],
                 posterior_variance=[float(v) for v in s.posterior_variance],
                 snr=[float(v) for v in s.snr])
        print(json_text(d))
        return 0
    print(f"# {printable(s.name)} schedule, T={s.T}" + "".join(f", {printable(k)}={printable(v)}" for k, v in s.params.items() if k != "T"))
    print(f"{'t':>6} {'beta':>12} {'alpha_bar':>12} {'sqrt_ab':>10} {'sqrt_1-ab':>10} {'SNR_dB':>9}")
    for t in range(s.T):
        snr_db = 10 * _log10(s.snr[t])
        print(f"{t:6d} {s.betas[t]:12.6g} {s.alphas_cumprod[t]:12.6g} {s.sqrt_alphas_cumprod[t]:10.6f} "
              f"{s.sqrt_one_minus_alphas_cumprod[t]:10.6f} {snr_db:9.3f}")
    return 0


def _log10(v: float) -> float:
    import math
    return math.log10(v) if v > 0 else float("-inf")
