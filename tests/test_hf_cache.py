"""core.hf_cache: repo ids resolved from fake Hugging Face cache trees built like the real layout (blobs + relative
symlinks + refs/), with the cache environment variables monkeypatched. No network."""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.hf_cache import (CachedModel, cache_roots, cached_models, check_complete, describe, looks_like_repo_id,
                           repo_folder, resolve_repo, valid_repo_id)
from core.models.checkpoint import ModelLoadError

ENV = ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME")
C1, C2, C3 = "1" * 40, "2" * 40, "a3" * 20


@pytest.fixture
def env(tmp_path, monkeypatch):
    """No cache variable set and a fresh home: the only root is tmp/home/.cache/huggingface/hub."""
    for k in ENV:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def hub(env, monkeypatch):
    root = env / "hub"
    root.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    return root


def make_repo(root, repo_id, files, commit=C1, ref="main", kind="models", missing=()):
    """A repo as huggingface_hub writes it: contents in blobs/<sha256>, snapshots/<commit>/<file> a relative
    symlink into ../../blobs/, refs/<ref> holding the commit. Files in ``missing`` get a link but no blob."""
    repo = Path(root) / (f"{kind}--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        data = content if isinstance(content, bytes) else (
            content if isinstance(content, str) else json.dumps(content)).encode()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        if rel not in missing:
            blob.write_bytes(data)
        link = snap / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    snap.mkdir(parents=True, exist_ok=True)
    if ref:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(commit)  # no newline, as huggingface_hub writes it
    return snap


UNET = {"config.json": {"_class_name": "UNet2DModel", "sample_size": 32},
        "diffusion_pytorch_model.safetensors": b"weights"}


# ----- where it looks ------------------------------------------------------------------------------------------
def test_default_root_is_home_cache(env):
    assert cache_roots() == [env / "home" / ".cache" / "huggingface" / "hub"]


def test_roots_follow_huggingface_hub_precedence(env, monkeypatch):
    default = env / "home" / ".cache" / "huggingface" / "hub"
    monkeypatch.setenv("XDG_CACHE_HOME", str(env / "xdg"))
    assert cache_roots() == [env / "xdg" / "huggingface" / "hub", default]
    monkeypatch.setenv("HF_HOME", str(env / "hfhome"))
    assert cache_roots()[0] == env / "hfhome" / "hub"
    monkeypatch.setenv("HUGGINGFACE_HUB_CACHE", str(env / "legacy"))
    assert cache_roots()[0] == env / "legacy"
    monkeypatch.setenv("HF_HUB_CACHE", str(env / "new"))
    assert cache_roots() == [env / "new", env / "legacy", env / "hfhome" / "hub", env / "xdg" / "huggingface" / "hub",
                             default]


def test_roots_expand_tilde_and_variables_and_have_no_duplicates(env, monkeypatch):
    monkeypatch.setenv("SOMEWHERE", str(env / "w"))
    monkeypatch.setenv("HF_HOME", "~/hf")
    monkeypatch.setenv("HF_HUB_CACHE", "$SOMEWHERE/hub")
    monkeypatch.setenv("HUGGINGFACE_HUB_CACHE", str(env / "w" / "hub"))
    assert cache_roots() == [env / "w" / "hub", env / "home" / "hf" / "hub",
                             env / "home" / ".cache" / "huggingface" / "hub"]


def test_first_root_is_the_one_huggingface_hub_uses(env):
    pytest.importorskip("huggingface_hub")
    cases = [{}, {"XDG_CACHE_HOME": "x"}, {"XDG_CACHE_HOME": "x", "HF_HOME": "h"},
             {"HF_HOME": "h", "HUGGINGFACE_HUB_CACHE": "l"}, {"HUGGINGFACE_HUB_CACHE": "l", "HF_HUB_CACHE": "n"}]
    script = ("import importlib, json, os, sys\nimport huggingface_hub.constants as c\n"
              "for case in json.loads(sys.argv[1]):\n"
              "    for k in %r: os.environ.pop(k, None)\n"
              "    os.environ.update({k: os.path.join(sys.argv[2], v) for k, v in case.items()})\n"
              "    print(importlib.reload(c).HF_HUB_CACHE)\n") % (ENV,)
    theirs = subprocess.run([sys.executable, "-c", script, json.dumps(cases), str(env)], capture_output=True,
                            text=True, check=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    ours = []
    for case in cases:
        saved = {k: os.environ.pop(k, None) for k in ENV}
        os.environ.update({k: str(env / v) for k, v in case.items()})
        try:
            ours.append(str(cache_roots()[0]))
        finally:
            for k, v in saved.items():
                os.environ.pop(k, None)
                if v is not None:
                    os.environ[k] = v
    assert theirs.stdout.split() == ours


# ----- what a repo id is -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["runwayml/stable-diffusion-v1-5", "google/ddpm-cifar10-32", "gpt2",
                                  "madebyollin/taesd", "a_b/c.d", "x" * 96])
def test_repo_ids(env, text):
    assert valid_repo_id(text) and looks_like_repo_id(text)


@pytest.mark.parametrize("text", ["", "/abs/path", "org/", "/name", "a/b/c", ".hidden", "~/models", "a..b",
                                  "a--b", "org/-x", "org/x.", "with space", "builtin:mnist", "oracle:x.png",
                                  "back\\slash", "x" * 97, "org/name.git", "ümlaut/x", "a/b\n"])
def test_not_repo_ids(env, text):
    assert not looks_like_repo_id(text)


def test_an_existing_local_folder_is_a_path_not_a_repo(env):
    (env / "runs" / "model").mkdir(parents=True)
    (env / "mnist").write_text("a file")
    assert valid_repo_id("runs/model")
    assert not looks_like_repo_id("runs/model") and not looks_like_repo_id("mnist")
    assert looks_like_repo_id("runs/other")


# ----- resolving -------------------------------------------------------------------------------------------------
def test_ref_names_the_snapshot_and_symlinked_blobs_read(hub):
    old = make_repo(hub, "google/ddpm-cifar10-32", UNET, commit=C1)
    make_repo(hub, "google/ddpm-cifar10-32", {"config.json": {"_class_name": "UNet2DModel"}}, commit=C2, ref=None)
    os.utime(old, (1, 1))  # the ref wins over the newer snapshot
    snap = resolve_repo("google/ddpm-cifar10-32")
    assert snap == hub / "models--google--ddpm-cifar10-32" / "snapshots" / C1
    assert (snap / "config.json").is_symlink()
    assert json.loads((snap / "config.json").read_text())["sample_size"] == 32
    assert check_complete(snap) == snap


def test_a_commit_present_under_snapshots_is_used_as_is(hub):
    make_repo(hub, "org/m", UNET, commit=C1)
    make_repo(hub, "org/m", UNET, commit=C2, ref=None)
    assert resolve_repo("org/m", revision=C2).name == C2
    with pytest.raises(ModelLoadError, match="at revision " + C3):
        resolve_repo("org/m", revision=C3)


def test_a_branch_or_tag_is_read_from_its_ref(hub):
    make_repo(hub, "org/m", UNET, commit=C1)
    make_repo(hub, "org/m", UNET, commit=C2, ref="v2")
    assert resolve_repo("org/m", "v2").name == C2
    assert resolve_repo("org/m").name == C1
    with pytest.raises(ModelLoadError, match="org/m at revision v3 is not in the Hugging Face cache"):
        resolve_repo("org/m", "v3")  # never some other snapshot for a revision asked for by name


def test_no_ref_and_one_snapshot_uses_it(hub):
    make_repo(hub, "solo", UNET, commit=C3, ref=None)
    assert resolve_repo("solo") == hub / "models--solo" / "snapshots" / C3


def test_no_ref_and_several_snapshots_uses_the_newest(hub):
    for i, c in enumerate((C1, C2, C3)):
        os.utime(make_repo(hub, "org/m", UNET, commit=c, ref=None), (1000 * (i + 1),) * 2)
    os.utime(hub / "models--org--m" / "snapshots" / C1, (10_000, 10_000))
    assert resolve_repo("org/m").name == C1


@pytest.mark.parametrize("content", [C2, "../../../../etc", "", "x/y", C2 + "\n"])
def test_a_ref_to_a_missing_or_unsafe_snapshot_is_not_followed(hub, content):
    make_repo(hub, "org/m", UNET, commit=C1)
    (hub / "models--org--m" / "refs" / "main").write_text(content)
    with pytest.raises(ModelLoadError, match="org/m at revision main is not in the Hugging Face cache"):
        resolve_repo("org/m")


def test_ref_with_trailing_newline_is_read(hub):
    make_repo(hub, "org/m", UNET, commit=C1)
    (hub / "models--org--m" / "refs" / "main").write_text(C1 + "\n")
    assert resolve_repo("org/m").name == C1


def test_missing_repo_is_one_line_naming_the_id_and_every_root(env, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(env / "hfhome"))
    with pytest.raises(ModelLoadError) as e:
        resolve_repo("runwayml/stable-diffusion-v1-5")
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("runwayml/stable-diffusion-v1-5 is not in the Hugging Face cache (looked in ")
    assert str(env / "hfhome" / "hub") in msg and str(env / "home" / ".cache" / "huggingface" / "hub") in msg
    assert "nothing is downloaded" in msg and "give a local folder" in msg


def test_first_root_holding_the_repo_wins(env, monkeypatch):
    a, b = env / "a", env / "b"
    monkeypatch.setenv("HF_HUB_CACHE", str(a))
    monkeypatch.setenv("HF_HOME", str(b))
    make_repo(b / "hub", "org/m", UNET, commit=C2)
    assert resolve_repo("org/m") == b / "hub" / "models--org--m" / "snapshots" / C2  # found in a later root
    make_repo(a, "org/m", UNET, commit=C1)
    assert resolve_repo("org/m") == a / "models--org--m" / "snapshots" / C1
    assert [m.path for m in cached_models()] == [a / "models--org--m" / "snapshots" / C1]


@pytest.mark.parametrize("repo_id, revision", [("../evil", "main"), ("a/b/c", "main"), ("org/m", "../../x"),
                                               ("org/m", ""), ("org/m", "/etc/passwd")])
def test_bad_ids_and_revisions_are_refused_in_one_line(hub, repo_id, revision):
    with pytest.raises(ModelLoadError, match="is not a") as e:
        resolve_repo(repo_id, revision)
    assert "\n" not in str(e.value)


def test_dangling_symlink_is_an_incomplete_download(hub):
    files = {"model_index.json": {"_class_name": "StableDiffusionPipeline"},
             "unet/config.json": UNET["config.json"], "unet/diffusion_pytorch_model.safetensors": b"big weights"}
    snap = make_repo(hub, "org/pipe", files, missing=("unet/diffusion_pytorch_model.safetensors",))
    assert resolve_repo("org/pipe") == snap  # resolving does not read the files
    with pytest.raises(ModelLoadError) as e:
        check_complete(snap)
    msg = str(e.value)
    assert "\n" not in msg and "incomplete download" in msg
    assert "unet/diffusion_pytorch_model.safetensors" in msg and "../../../blobs/" in msg


def test_check_complete_accepts_plain_copies_and_finds_dangling_folder_links(tmp_path):
    (tmp_path / "snap" / "unet").mkdir(parents=True)
    (tmp_path / "snap" / "unet" / "config.json").write_text("{}")  # Windows-style copies, no links
    assert check_complete(tmp_path / "snap") == tmp_path / "snap"
    (tmp_path / "snap" / "vae").symlink_to(tmp_path / "gone")
    with pytest.raises(ModelLoadError, match="vae points to"):
        check_complete(tmp_path / "snap")


# ----- listing -----------------------------------------------------------------------------------------------------
def test_listing_classifies_each_repo_and_skips_datasets_and_spaces(hub):
    make_repo(hub, "runwayml/stable-diffusion-v1-5", {"model_index.json": {"_class_name": "StableDiffusionPipeline"},
                                                      "unet/config.json": UNET["config.json"]})
    make_repo(hub, "google/ddpm-cifar10-32", UNET)
    make_repo(hub, "org/cond", {"config.json": {"_class_name": "UNet2DConditionModel"}})
    make_repo(hub, "madebyollin/taesd", {"config.json": {"_class_name": "AutoencoderTiny"}})
    make_repo(hub, "stabilityai/sd-vae-ft-mse", {"config.json": {"_class_name": "AutoencoderKL"}})
    make_repo(hub, "bert-base-uncased", {"config.json": {"model_type": "bert"}})
    make_repo(hub, "org/weird", {"config.json": {"_class_name": "ControlNetModel"}})
    make_repo(hub, "org/bare", {"README.md": "hi"})
    make_repo(hub, "org/data", {"config.json": {"_class_name": "UNet2DModel"}}, kind="datasets")
    make_repo(hub, "org/space", {"config.json": {"_class_name": "UNet2DModel"}}, kind="spaces")
    (hub / "models--org--empty" / "snapshots").mkdir(parents=True)
    (hub / ".locks").mkdir()
    (hub / "version.txt").write_text("1")
    got = {m.repo_id: (m.kind, m.class_name) for m in cached_models()}
    assert list(got) == sorted(got)
    assert got == {"bert-base-uncased": ("other", None), "google/ddpm-cifar10-32": ("unet", "UNet2DModel"),
                   "madebyollin/taesd": ("vae-tiny", "AutoencoderTiny"), "org/bare": ("other", None),
                   "org/cond": ("unet", "UNet2DConditionModel"), "org/weird": ("other", "ControlNetModel"),
                   "runwayml/stable-diffusion-v1-5": ("pipeline", "StableDiffusionPipeline"),
                   "stabilityai/sd-vae-ft-mse": ("vae", "AutoencoderKL")}
    for m in cached_models():
        assert m.path == resolve_repo(m.repo_id)


def test_listing_ignores_hostile_json(hub):
    make_repo(hub, "ok/unet", UNET)
    make_repo(hub, "bad/huge", {"config.json": b'{"_class_name": "UNet2DModel", "x": "' + b"a" * 1_100_000 + b'"}'})
    make_repo(hub, "bad/invalid", {"config.json": b'{"_class_name": "UNet2DModel",'})
    make_repo(hub, "bad/list", {"config.json": ["UNet2DModel"]})
    make_repo(hub, "bad/deep", {"config.json": b"[" * 200_000 + b"]" * 200_000})
    make_repo(hub, "bad/binary", {"model_index.json": b"\xff\xfe\x00garbage"})
    make_repo(hub, "bad/dangling", {"config.json": UNET["config.json"]}, missing=("config.json",))
    snap = make_repo(hub, "bad/device", {})
    (snap / "config.json").symlink_to("/dev/zero")  # reading it would never end
    make_repo(hub, "odd/class", {"config.json": {"_class_name": ["UNet2DModel"]}})
    assert {m.repo_id: m.kind for m in cached_models()} == {"ok/unet": "unet", "odd/class": "other",
                                                           "bad/dangling": "other"}


def test_describe_is_one_printable_line(hub):
    make_repo(hub, "org/evil", {"config.json": {"_class_name": "Evil\nName\x1b[31m"}})
    make_repo(hub, "google/ddpm-cifar10-32", UNET)
    lines = [describe(m) for m in cached_models()]
    where = hub / "models--google--ddpm-cifar10-32" / "snapshots" / C1
    assert lines[0] == f"google/ddpm-cifar10-32  unet (UNet2DModel)  {where}"
    assert "\n" not in lines[1] and "\x1b" not in lines[1] and lines[1].startswith("org/evil  other (Evil\\nName")
    assert describe(CachedModel("x", Path("/p"), "other")) == "x  other  /p"


def test_empty_or_missing_cache_lists_nothing(env):
    assert cached_models() == []


# ----- agreement with huggingface_hub ------------------------------------------------------------------------------
def test_agrees_with_huggingface_hub_snapshot_download(hub, monkeypatch):
    hf = pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    make_repo(hub, "google/ddpm-cifar10-32", UNET, commit=C1)
    make_repo(hub, "google/ddpm-cifar10-32", UNET, commit=C2, ref="v2")
    make_repo(hub, "gpt2", {"config.json": {"model_type": "gpt2"}}, commit=C3)
    for repo_id, revision, commit in [("google/ddpm-cifar10-32", "main", C1), ("google/ddpm-cifar10-32", "v2", C2),
                                      ("google/ddpm-cifar10-32", C2, C2), ("gpt2", "main", C3)]:
        try:
            theirs = hf.snapshot_download(repo_id, revision=revision, cache_dir=hub, local_files_only=True)
        except Exception as e:  # noqa: BLE001 - this huggingface_hub cannot answer offline
            pytest.skip(f"huggingface_hub cannot resolve offline here: {type(e).__name__}: {e}")
        assert Path(theirs) == resolve_repo(repo_id, revision) == repo_folder(hub, repo_id) / "snapshots" / commit


def test_module_does_not_import_huggingface_hub():
    code = "import sys, core.hf_cache; sys.exit('huggingface_hub' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0
