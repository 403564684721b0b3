"""builtin:mnist-sd judged by a classifier that shares nothing with ours: k-nearest neighbours (k = 5, Euclidean, on
pixels) over the 4,500 training digits. Prints its accuracy on the 500 held-out digits (the ruler's own floor), then
the on-label share of prompted samples ("a handwritten D", guidance 5, DDIM 30) for every digit.

    python benchmarks/check_mnist_sd_knn.py [--n 50] [--threads 1]
"""
from __future__ import annotations

import argparse

import numpy as np
import torch


def knn_predict(train_x: torch.Tensor, train_y: torch.Tensor, x: torch.Tensor, k: int = 5) -> torch.Tensor:
    d = torch.cdist(x.flatten(1).double(), train_x.flatten(1).double())
    idx = d.topk(k, largest=False).indices
    votes = torch.nn.functional.one_hot(train_y[idx], 10).sum(1)
    return votes.argmax(1)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=50, help="samples per digit")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from core.data import load_dataset
    from core.latent.generate import text_to_image
    from core.models.load import load_latent
    from core.samplers import run_to_end
    train, held = load_dataset("builtin:mnist", split="train"), load_dataset("builtin:mnist", split="heldout")
    tx, ty = torch.from_numpy(train.images), torch.from_numpy(train.labels).long()
    real = float((knn_predict(tx, ty, torch.from_numpy(held.images)) == torch.from_numpy(held.labels)).double().mean())
    print(f"k-NN (k=5, pixels) on {len(held)} held-out real digits: {100 * real:.1f}% correct")
    pipe = load_latent("builtin:mnist-sd")
    shares = []
    for d in range(10):
        last = run_to_end(text_to_image(pipe, f"a handwritten {d}", guidance=5.0, n=args.n, seed=d, steps=30))
        img = pipe.decode(last.x_t).clamp(-1, 1).mean(1, keepdim=True)       # grey, 32×32 padded
        img = img[..., 2:30, 2:30]                                           # back to the 28×28 digit
        pred = knn_predict(tx, ty, img)
        shares.append(float((pred == d).double().mean()))
        print(f"  'a handwritten {d}': {100 * shares[-1]:.0f}% on label ({args.n} samples)")
    print(f"mean on-label {100 * np.mean(shares):.1f}%, lowest {100 * min(shares):.0f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
