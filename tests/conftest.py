"""Shared test set-up."""
import gc

import pytest
import torch


@pytest.fixture(autouse=True)
def _qt_garbage_dies_on_the_main_thread(request):
    """After a Qt test, collect its dropped windows here, on the main thread: with automatic GC off
    (ddpm_gui.worker.collect_garbage_on_ui_thread) they would otherwise wait for the UI timer."""
    yield
    if {"qtbot", "qapp"} & set(request.fixturenames):
        gc.collect()


@pytest.fixture
def one_torch_thread():
    """This machine's 2 cores are shared with other jobs: tiny tensors on one thread keep a test fast."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


@pytest.fixture
def window(qtbot):
    """The main window on its defaults (the built-in cat), shown and painted; test files may override it."""
    from ddpm_gui import MainWindow
    w = MainWindow()
    qtbot.addWidget(w)
    w.show()
    qtbot.waitUntil(lambda: w.displayed_image() is not None, timeout=5000)
    return w


# A child process (no torch) puts a copy of SOURCE in place of TARGET with core.atomic.atomic_dir, as Trainer.save
# does, and dies (os._exit: no cleanup) right after its N-th rename (N = 0: while writing). MODE "swap" uses the
# atomic exchange; anything else the three-rename fallback. Used by test_atomic.py and test_train.py.
DIE_DURING_SWAP = r"""
import os, shutil, sys
import core.atomic as atomic
target, source, die_after, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
calls = [0]
def dying(fn):
    def wrapped(*a, **k):
        r = fn(*a, **k)
        calls[0] += 1
        if calls[0] == die_after:
            os._exit(9)
        return r
    return wrapped
os.rename, os.replace = dying(os.rename), dying(os.replace)
if mode != "swap":  # a system or file system without an atomic swap: the three-rename fallback
    atomic._exchange = lambda a, b: False
elif hasattr(atomic, "_exchange"):
    atomic._exchange = dying(atomic._exchange)
with atomic.atomic_dir(target) as tmp:
    shutil.copytree(source, tmp, dirs_exist_ok=True)
    if die_after == 0:
        os._exit(9)  # killed while writing
"""


def save_tiny_unet(folder, T: int = 1000, num_classes: int = 0, name: str = "tiny", seed: int = 0):
    """A tiny random UNet on 8×8 grey images (``seed``) saved as a model folder with a linear schedule of ``T``."""
    from core.models.checkpoint import save_checkpoint
    from core.models.unet import UNet, UNetConfig
    from core.schedule import NoiseSchedule
    torch.manual_seed(seed)
    net = UNet(UNetConfig(resolution=8, in_channels=1, base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
                          attention_resolutions=(), num_classes=num_classes, groups=4))
    save_checkpoint(folder, net, NoiseSchedule.preset("linear", T=T), name=name)
    return folder


def perturbed_unet(seed: int, **over):
    """A tiny class-conditional UNet (8×8 grey, 3 classes) whose weights are visibly far from the initialisation, so
    two seeds give networks that really differ (a model and its guide); ``over`` changes config fields."""
    from core.models.unet import UNet, UNetConfig
    torch.manual_seed(seed)
    net = UNet(UNetConfig(**{**dict(resolution=8, in_channels=1, base_channels=8, channel_mults=(1, 2),
                                   attention_resolutions=(), groups=4, num_classes=3), **over}))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


def save_guided_pair(root, weight: float):
    """``root/model`` (seed 0), ``root/guide`` (seed 1), both on a linear T = 40 schedule, and ``root/guided`` made
    from them by ``ddpm autoguide --weight weight``; returns the three folders."""
    from core.cli import main
    from core.models.checkpoint import save_checkpoint
    from core.schedule import NoiseSchedule
    sched = NoiseSchedule.preset("linear", T=40)
    model = save_checkpoint(root / "model", perturbed_unet(0), sched, name="m", trained_steps=200)
    guide = save_checkpoint(root / "guide", perturbed_unet(1), sched, name="m", trained_steps=50)
    guided = root / "guided"
    assert main(["autoguide", "--model", str(model), "--guide", str(guide), "--weight", str(weight), "-o",
                 str(guided)]) == 0
    return model, guide, guided


def save_photo_folder(folder, n: int = 4, size: int = 12):
    """``n`` random size×size RGB photos (seed 0) and one file that is not an image, in ``folder``."""
    import numpy as np

    from core.images import save_image
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        save_image(folder / f"{i}.png", rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    (folder / "notes.png").write_text("not an image")
    return folder


def cache_as_repo(folder, root, repo_id: str = "tester/tiny-sd", commit: str = "a" * 40):
    """``folder`` copied into a Hugging Face cache layout under ``root`` as ``repo_id`` (blobs + relative symlinks,
    refs/main); returns the snapshot folder."""
    import os
    import shutil
    from pathlib import Path
    folder, root = Path(folder), Path(root)
    repo = root / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / commit
    for i, f in enumerate(sorted(p for p in folder.rglob("*") if p.is_file())):
        blob = repo / "blobs" / f"blob{i}"
        blob.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, blob)
        link = snap / f.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snap
