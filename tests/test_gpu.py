"""On a CUDA GPU: sampling agrees with the CPU, a cancelled Generate run gives its GPU memory back, training runs
in bf16 and its checkpoint loads on the CPU. Skipped where there is no GPU (CI has none)."""
import numpy as np
import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _final(den, device, precision="fp32", **kw):
    from core.samplers import sample
    last = None
    for last in sample(den, sampler="ddim", steps=20, seed=3, n=8, class_labels=list(range(8)), guidance=2.0,
                       device=device, precision=precision, **kw):
        pass
    return last.x_t.float().cpu().numpy()


@pytest.fixture
def no_tf32():
    prev = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = prev


def test_cuda_sampling_matches_the_cpu(no_tf32):
    """The same seed gives the same digits on both devices: the noise is drawn on the CPU, the arithmetic is fp32."""
    from core.models.load import load_model
    cpu = _final(load_model("builtin:mnist", device="cpu"), "cpu")
    gpu = _final(load_model("builtin:mnist", device="cuda"), "cuda")
    diff = np.abs(cpu - gpu)
    print(f"fp32 CPU vs CUDA after 20 DDIM steps: max |Δ| {diff.max():.2e}, mean {diff.mean():.2e}")
    assert diff.max() < 1e-3
    # bf16 autocast changes the last bits of every step, not the picture
    bf16 = _final(load_model("builtin:mnist", device="cuda"), "cuda", precision="bf16")
    d16 = np.abs(cpu - bf16)
    print(f"bf16 CUDA vs fp32 CPU: max |Δ| {d16.max():.2e}, mean {d16.mean():.2e}")
    assert d16.mean() < 0.05


def test_channels_last_gives_the_same_samples(no_tf32):
    from core.models.load import load_model
    den = load_model("builtin:mnist", device="cuda")
    assert np.abs(_final(den, "cuda") - _final(den, "cuda", channels_last=True)).max() < 1e-4


def test_a_cancelled_run_gives_its_gpu_memory_back():
    """Generate's worker generator, closed after a few steps (Cancel): the allocator holds no more memory than
    before the run, and the cache it reserved is released."""
    from core.jobs.generate import GenerateJob, Recording, generate_frames
    from core.model_spec import ModelCache
    from core.models.load import load_model
    cache = ModelCache()
    job = GenerateJob(model_key=("builtin:mnist", "cuda"), loader=lambda: load_model("builtin:mnist", "cuda"),
                      sampler="ddpm", steps=1000, n=256, device="cuda")
    for _ in generate_frames(GenerateJob(**{**job.__dict__, "steps": 2}), cache, Recording()):
        pass  # a finished warm-up run: the model and the libraries' one-off workspaces are loaded
    torch.cuda.synchronize()
    allocated, reserved = torch.cuda.memory_allocated(), torch.cuda.memory_reserved()
    frames = generate_frames(job, cache, Recording())
    for i, _ in enumerate(frames):
        if i == 0:
            during = torch.cuda.memory_allocated()
        if i == 5:
            break
    frames.close()
    torch.cuda.synchronize()
    after_alloc, after_res = torch.cuda.memory_allocated(), torch.cuda.memory_reserved()
    print(f"allocated: before {allocated / 2**20:.1f} MiB, during {during / 2**20:.1f}, after {after_alloc / 2**20:.1f}; "
          f"reserved before {reserved / 2**20:.1f}, after {after_res / 2**20:.1f}")
    assert during > allocated + 256 * 28 * 28 * 4  # the run did hold batch tensors on the GPU
    assert after_alloc <= allocated
    assert after_res <= reserved
    cache.clear()
    assert torch.cuda.memory_allocated() < allocated  # dropping the model frees its weights too


def test_training_runs_in_bf16_and_its_checkpoint_loads_on_the_cpu(tmp_path):
    from core.data import load_dataset
    from core.models.checkpoint import load_checkpoint
    from core.train import TrainConfig, train
    data = load_dataset("builtin:mnist", 28, "train", None)
    tr = train(TrainConfig(data="builtin:mnist", out=str(tmp_path / "run"), steps=30, batch_size=32,
                           model_size="tiny", sample_every=0, checkpoint_every=0, device="cuda"), dataset=data)
    assert tr.precision in ("bf16", "fp16") and tr.device.type == "cuda"
    losses = [ev.loss for ev in tr if ev.kind == "step"]
    assert len(losses) == 30 and all(np.isfinite(losses))
    den = load_checkpoint(tmp_path / "run" / "model", device="cpu")
    ema = {k: v.cpu() for k, v in tr.ema.state_dict().items()}
    for k, v in den.net.state_dict().items():
        assert torch.equal(v, ema[k]), k
    resumed = train(TrainConfig(data="builtin:mnist", out=str(tmp_path / "run"), steps=35, batch_size=32,
                                model_size="tiny", sample_every=0, checkpoint_every=0, device="cuda"),
                    resume=True, dataset=data)
    assert resumed.step == 30 and [ev.kind for ev in resumed].count("step") == 5
