"""A second opinion on generated digits: classifiers of other families than ``core.classifier``, trained here by
this script, score samples the way ``ddpm evaluate`` does (confident share, digit shares, Fréchet / floor,
near-copies), so that a change to the model is not judged only by the ruler it could have been tuned to.

    python benchmarks/judge_digits.py --model builtin:mnist [--n 1000] [--seed 0]     # ddpm evaluate's samples
    python benchmarks/judge_digits.py --samples a.npz b.npz        # score saved samples (key ``images``)
    python benchmarks/judge_digits.py --model builtin:mnist --save-samples s.npz

The judges (trained once, ~3 minutes on 2 cores, cached in ``~/.cache/ddpm-studio/judge/``):

- ``lenet``: LeNet-5-like CNN with batch norm (5×5 convs, 256-d features), ±2 px shifts, 15 epochs;
- ``mlp``: 784-512-256-10 MLP with dropout, no augmentation, 20 epochs.

Neither sees noise or any generated image. A sample is *confident* when both judges' averaged probability of its
top class is ≥ 0.9, the same threshold as ``ddpm evaluate``; the Fréchet distance uses the LeNet's 256-d
features. The held-out real digits are scored the same way, so the ratio sample / real is the figure to read.
With ``--model`` the samples are ``ddpm evaluate``'s own (same call, same seed), and its report is printed too.
Nothing here is used for training or for choosing a sampler's settings by the judges' own scores alone: they are
read beside the shipped classifier and beside grids a person looks at.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.classifier import confident_share, load_classifier
from core.data import load_mnist_arrays
from core.evaluate import frechet_distance, near_copy_mask
from core.images import from_uint8

CACHE = Path.home() / ".cache" / "ddpm-studio" / "judge"
CONFIDENCE = 0.9


class LeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, 20, 5, padding=2), nn.BatchNorm2d(20), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.Conv2d(20, 50, 5, padding=2), nn.BatchNorm2d(50), nn.ReLU(), nn.MaxPool2d(2))
        self.fc = nn.Linear(50 * 7 * 7, 256)
        self.head = nn.Sequential(nn.Dropout(0.5), nn.Linear(256, 10))

    def features(self, x):
        return F.relu(self.fc(self.conv(x).flatten(1)))

    def forward(self, x):
        return self.head(self.features(x))


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Dropout(0.2), nn.Linear(512, 256),
                                  nn.ReLU(), nn.Dropout(0.2))
        self.head = nn.Linear(256, 10)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.features(x))


def shift(x: torch.Tensor, g: torch.Generator, pixels: int = 2) -> torch.Tensor:
    """Random integer translations of up to ±pixels (background −1)."""
    n, size = len(x), x.shape[-1]
    padded = F.pad(x, [pixels] * 4, value=-1.0)
    dx, dy = torch.randint(0, 2 * pixels + 1, (2, n), generator=g)
    return torch.stack([padded[i, :, dy[i]:dy[i] + size, dx[i]:dx[i] + size] for i in range(n)])


def train(kind: str, seed: int = 1234, log=print) -> nn.Module:
    train_u8, labels = load_mnist_arrays("train")
    x, y = torch.from_numpy(from_uint8(train_u8)[:, None]), torch.from_numpy(labels)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    net, epochs, augment = (LeNet(), 15, True) if kind == "lenet" else (MLP(), 20, False)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True)
    steps = epochs * ((len(x) + 63) // 64)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 64):
            idx = order[i:i + 64]
            xb = shift(x[idx], g) if augment else x[idx]
            loss = F.cross_entropy(net(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        log(f"  {kind}: epoch {epoch + 1}/{epochs}, loss {float(loss.detach()):.4f}")
    return net.eval()


def judges(log=print) -> dict[str, nn.Module]:
    from safetensors.torch import load_file, save_file
    out = {}
    for kind, cls in (("lenet", LeNet), ("mlp", MLP)):
        path = CACHE / f"{kind}.safetensors"
        if path.is_file():
            net = cls()
            net.load_state_dict(load_file(str(path)))
            out[kind] = net.eval()
            continue
        log(f"training the {kind} judge (once; cached in {CACHE})")
        out[kind] = train(kind, log=log)
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_file({k: v.contiguous() for k, v in out[kind].state_dict().items()}, str(tmp))
        tmp.replace(path)
    return out


@torch.no_grad()
def read(nets: dict, images) -> tuple[np.ndarray, np.ndarray]:
    """Averaged probabilities N×10 and the LeNet's features N×256."""
    x = torch.as_tensor(np.asarray(images, np.float32)).reshape(-1, 1, 28, 28)
    probs = sum(torch.softmax(net(x), 1).double() for net in nets.values()) / len(nets)
    return probs.numpy(), nets["lenet"].features(x).double().numpy()


def score(nets: dict, images, held_feats, floor: float, train_x) -> dict:
    probs, feats = read(nets, images)
    conf = float((probs.max(1) >= CONFIDENCE).mean())
    shares = np.bincount(probs.argmax(1), minlength=10) / len(probs)
    fd = frechet_distance(feats, held_feats)
    return {"n": len(probs), "confident_share": conf, "digit_share_min": float(shares.min()),
            "digit_share_max": float(shares.max()), "frechet": fd, "frechet_floor": floor,
            "frechet_ratio": fd / floor, "near_copy_share": float(near_copy_mask(np.asarray(images), train_x).mean()),
            "confident_mask": (probs.max(1) >= CONFIDENCE)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="a digit model SPEC: sample it as ddpm evaluate does (unconditional DDIM 50)")
    src.add_argument("--samples", nargs="+", help="npz files with images N×1×28×28 in [−1, 1]")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--class", dest="class_label", help="with --model: as ddpm evaluate --class (a digit or all)")
    p.add_argument("--guidance", type=float, default=1.0, help="with --model and --class: guidance w")
    p.add_argument("--autoguidance", type=float, help="with --model: override its autoguidance weight")
    p.add_argument("--save-samples", help="with --model: write the samples here (npz, key images)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    nets = judges(log=lambda m: print(m, file=sys.stderr))
    train_u8, _ = load_mnist_arrays("train")
    held_u8, _ = load_mnist_arrays("heldout")
    train_x, held_x = from_uint8(train_u8)[:, None], from_uint8(held_u8)[:, None]
    held_probs, held_feats = read(nets, held_x)
    shipped = load_classifier()
    sets, evaluations = {}, {}
    if args.model:
        from core.evaluate import evaluate
        start = time.perf_counter()
        out: list = []
        evaluations[args.model] = evaluate(args.model, n=args.n, seed=args.seed, class_label=args.class_label,
                                           guidance=args.guidance, autoguidance=args.autoguidance, samples_out=out)
        sets[args.model] = out[0]
        print(f"sampled {args.n} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
        if args.save_samples:
            np.savez_compressed(args.save_samples, images=out[0])
    else:
        for f in args.samples:
            with np.load(f) as z:
                sets[f] = np.asarray(z["images"], np.float32)
    rows = []
    for name, images in sets.items():
        n = len(images)
        idx = np.random.default_rng(args.seed).choice(len(train_x), size=min(n, len(train_x)), replace=False)
        floor = frechet_distance(read(nets, train_x[idx])[1], held_feats)
        s = score(nets, images, held_feats, floor, train_x)
        s.pop("confident_mask")
        s["real_confident_share"] = float((held_probs.max(1) >= CONFIDENCE).mean())
        s["name"] = name
        s["shipped_classifier_confident_share"] = confident_share(shipped, images)
        if name in evaluations:
            s["ddpm_evaluate"] = evaluations[name].to_dict()
        rows.append(s)
        if not args.json:
            print(f"{name}: confident {s['confident_share']:.1%} (real {s['real_confident_share']:.1%}, ratio "
                  f"{s['confident_share'] / s['real_confident_share']:.3f}), digits {s['digit_share_min']:.1%}–"
                  f"{s['digit_share_max']:.1%}, Fréchet {s['frechet']:.2f} / {floor:.2f} = "
                  f"{s['frechet_ratio']:.2f}×, near-copies {s['near_copy_share']:.1%}; the shipped classifier: "
                  f"{s['shipped_classifier_confident_share']:.1%} confident")
            if name in evaluations:
                from core.cli.cmd_evaluate import format_report
                print(format_report(evaluations[name]))
    if args.json:
        print(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
