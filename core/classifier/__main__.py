"""``python -m core.classifier``: retrain the digit classifier ``ddpm evaluate`` uses (2–3 minutes on 2 CPU cores)."""
from __future__ import annotations

import sys

from core.classifier.train import save_classifier, train_classifier


def main(argv=None) -> int:
    import argparse
    p = argparse.ArgumentParser(prog="python -m core.classifier",
                                description="Train the digit classifier used by ddpm evaluate.")
    p.add_argument("--out", help="output folder (default resources/classifier)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=32, help="channels of the first conv block")
    p.add_argument("--outlier-weight", type=float, default=0.1,
                   help="weight λ of outlier exposure on noise (0 turns it off)")
    args = p.parse_args(argv)
    if args.epochs < 1 or args.width < 1 or args.outlier_weight < 0:
        p.error("--epochs and --width must be ≥ 1 and --outlier-weight ≥ 0")
    net, meta = train_classifier(epochs=args.epochs, seed=args.seed, width=args.width,
                                 outlier_weight=args.outlier_weight)
    folder = save_classifier(net, meta, args.out)
    print(f"wrote {folder} (held-out accuracy {meta['heldout_accuracy']:.4f}, confident on "
          f"{meta['heldout_confident_share']:.1%} of held-out digits and {meta['noise_confident_share']:.1%} of noise)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
