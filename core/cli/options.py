"""Range-checked argparse types: every number a user types is checked before any work, with the range in the
one-line message (``ddpm sample: error: argument --n: must be an integer in 1…4096, got 0``)."""
from __future__ import annotations

import argparse
import math


def _fmt(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def int_in(lo: int, hi: int):
    """An argparse ``type`` accepting integers in ``lo…hi``."""
    def parse(text: str) -> int:
        try:
            v = int(text.strip().replace("_", ""), 10) if len(text) < 40 else None
        except ValueError:
            v = None
        if v is None or not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"must be an integer in {lo}…{hi}, got {text[:40]!r}")
        return v
    parse.__name__ = "integer"
    return parse


def float_in(lo: float, hi: float, lo_open: bool = False, hi_open: bool = False):
    """An argparse ``type`` accepting finite numbers in ``lo…hi`` (ends excluded when ``*_open``)."""
    def parse(text: str) -> float:
        try:
            v = float(text) if len(text) < 60 else math.nan
        except ValueError:
            v = math.nan
        ok = math.isfinite(v) and (lo < v if lo_open else lo <= v) and (v < hi if hi_open else v <= hi)
        if not ok:
            left, right = "(" if lo_open else "[", ")" if hi_open else "]"
            raise argparse.ArgumentTypeError(f"must be a finite number in {left}{_fmt(lo)}, {_fmt(hi)}{right}, "
                                             f"got {text[:40]!r}")
        return v
    parse.__name__ = "number"
    return parse


# the ranges shared by several commands (one place, so `ddpm sample` and `ddpm evaluate` agree)
SEED = int_in(0, 2**63 - 1)
BATCH = int_in(1, 4096)
STEPS = int_in(1, 100_000)
TIMESTEPS_T = int_in(2, 100_000)
GUIDANCE = float_in(0.0, 100.0)
AUTOGUIDANCE = float_in(0.0, 10.0)
AUTOGUIDANCE_HELP = ("autoguidance weight w of a model that has a guide (ε_guide + w·(ε − ε_guide); 1 = the model "
                     "alone; default: the weight in its config.json)")
ETA = float_in(0.0, 1.0)
