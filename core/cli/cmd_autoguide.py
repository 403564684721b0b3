"""``ddpm autoguide --model FOLDER --guide FOLDER --weight W [--t-min A] [--t-max B] -o OUT``: write a model folder
that samples with autoguidance, ε̃ = ε_guide + w·(ε_model − ε_guide) (Karras et al. 2024; see
:mod:`core.models.autoguidance`). The guide is a weaker model of the same kind, e.g. an early checkpoint of the
same run; its weights are stored in fp16 unless ``--full-guide``."""
from __future__ import annotations

from pathlib import Path

from core.cli.options import float_in, int_in
from core.outputs import refuse_overwriting_inputs


def register(sub) -> None:
    p = sub.add_parser("autoguide", help="make a model guided by a weaker version of itself (autoguidance)",
                       description="Write OUT: the model's files plus guide/ and an 'autoguidance' entry in "
                       "config.json, so every sampler (ddpm sample, evaluate, the window) computes "
                       "ε_guide + w·(ε_model − ε_guide). ddpm sample --autoguidance W overrides w.")
    p.add_argument("--model", required=True, help="our model folder (the strong model)")
    p.add_argument("--guide", required=True, help="our model folder of the same architecture, trained less")
    p.add_argument("--weight", type=float_in(0.0, 10.0), required=True, help="w (1 = the model alone)")
    p.add_argument("--t-min", type=int_in(0, 100_000), default=0, help="guide only for t ≥ this (default 0)")
    p.add_argument("--t-max", type=int_in(0, 100_000), help="guide only for t ≤ this (default T − 1)")
    p.add_argument("--full-guide", action="store_true", help="store the guide's weights in fp32 (default fp16)")
    p.add_argument("-o", "--output", required=True, help="the new model folder (must not exist)")
    p.set_defaults(func=run)


def run(args) -> int:
    from core.models.autoguidance import write_autoguided
    from core.models.load import model_folder
    out = Path(args.output)
    model_dir, guide_dir = model_folder(args.model), model_folder(args.guide)
    if out.exists():
        raise FileExistsError(f"{out}: already exists; give a new folder name")
    refuse_overwriting_inputs([out], [model_dir, guide_dir])
    if args.t_max is not None and args.t_max < args.t_min:
        raise ValueError(f"--t-max {args.t_max} is below --t-min {args.t_min}")
    write_autoguided(out, model_dir, guide_dir, args.weight, args.t_min, args.t_max,
                     half_guide=not args.full_guide)
    print(f"wrote {out} (autoguidance w = {args.weight:g})")
    return 0
