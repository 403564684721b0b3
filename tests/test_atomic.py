"""core.atomic: a failed write leaves nothing behind, and what it writes gets ordinary permissions."""
import os
import stat

import pytest

from core.atomic import atomic_dir, atomic_path, write_text_atomic
from conftest import DIE_DURING_SWAP

posix_only = pytest.mark.skipif(os.name != "posix", reason="permission bits are POSIX")


def _mode(p):
    return stat.S_IMODE(os.stat(p).st_mode)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@posix_only
@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_new_files_and_folders_get_the_umask_permissions_not_tempfiles_owner_only_ones(tmp_path, monkeypatch,
                                                                                        umask):
    import core.atomic
    monkeypatch.setattr(core.atomic, "_UMASK", umask)  # read once at import; a umask other than 0o077 tells apart
    write_text_atomic(tmp_path / "a.json", "{}")
    with atomic_dir(tmp_path / "model") as d:
        (d / "config.json").write_text("{}")
    # what open() and mkdir() would give: 0o666 / 0o777 minus the umask (tempfile makes 0o600 / 0o700)
    assert _mode(tmp_path / "a.json") == 0o666 & ~umask
    assert _mode(tmp_path / "model") == 0o777 & ~umask


@posix_only
def test_the_umask_is_read_from_the_process():
    import core.atomic
    assert core.atomic._current_umask() == _umask()


@posix_only
def test_replacing_a_file_or_folder_keeps_its_permissions(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("old")
    os.chmod(f, 0o640)
    write_text_atomic(f, "new")
    assert f.read_text() == "new" and _mode(f) == 0o640
    d = tmp_path / "run"
    d.mkdir()
    os.chmod(d, 0o750)
    with atomic_dir(d) as tmp:
        (tmp / "x").write_text("1")
    assert (d / "x").read_text() == "1" and _mode(d) == 0o750


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    f = tmp_path / "keep.txt"
    f.write_text("precious")
    with pytest.raises(RuntimeError):
        with atomic_path(f) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "folder") as tmp:
            (tmp / "part").write_text("half")
            raise RuntimeError("killed")
    assert f.read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


# ----- a folder swap killed at any point ----------------------------------------------------------------------------
# A child process (no torch: it starts in a blink) replaces folder TARGET by a copy of SOURCE with atomic_dir and is
# killed (os._exit: no cleanup, no finally) right after its N-th rename, as `kill -9` or a power cut would leave it.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _version(folder):
    """'old' or 'new' when every file of ``folder`` is of that one version, else the mixture."""
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["a.txt", "b.txt", "sub"], names
    found = {(folder / "a.txt").read_text(), (folder / "b.txt").read_text(), (folder / "sub" / "c.txt").read_text()}
    assert len(found) == 1, found
    return found.pop()


def _folder(path, version):
    (path / "sub").mkdir(parents=True)
    for f in ("a.txt", "b.txt", "sub/c.txt"):
        (path / f).write_text(version)
    return path


@posix_only
@pytest.mark.parametrize("mode, die_after, expected", [
    ("swap", 0, "old"),      # killed while writing the new folder
    ("swap", 1, "new"),      # killed after the swap, before the old folder is removed
    ("swap", 99, "new"),     # not killed
    ("rename", 0, "old"),
    ("rename", 1, "old"),    # after tmp → .ready: the old folder is still in place
    ("rename", 2, "new"),    # after checkpoint → .old: no folder under the name, the complete new one beside it
    ("rename", 3, "new"),    # after .ready → checkpoint, before the old one is removed
    ("rename", 99, "new"),
])
def test_a_folder_swap_killed_at_any_point_leaves_a_complete_folder(tmp_path, mode, die_after, expected):
    import subprocess
    import sys

    from core.atomic import recover_dir, resolve_dir
    run = tmp_path / "run"
    target = _folder(run / "checkpoint", "old")
    source = _folder(tmp_path / "source", "new")
    proc = subprocess.run([sys.executable, "-c", DIE_DURING_SWAP, str(target), str(source), str(die_after), mode],
                          env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True, text=True)
    assert proc.returncode == (0 if die_after == 99 else 9), proc.stderr
    # a reader at this moment finds a complete folder (the one recovery will keep), without changing anything
    found = resolve_dir(target)
    assert found is not None and _version(found) == expected
    # the next start puts it back under its name and removes what the killed process left
    assert recover_dir(target) == target
    assert _version(target) == expected
    assert [p.name for p in run.iterdir()] == ["checkpoint"]


@posix_only
def test_recovery_leaves_the_folders_of_a_live_writer_alone(tmp_path):
    from core.atomic import recover_dir
    target = _folder(tmp_path / "model", "old")
    live = tmp_path / f".model.{os.getpid()}-abcdefgh.tmp"   # this process is alive: perhaps still writing
    dead = tmp_path / ".model.999999999-abcdefgh.tmp"        # no such process
    stale = tmp_path / ".model.old-999999999"                # what the two-rename swap of old versions left
    other = tmp_path / ".model.png.tmp-x.png"                # a file of another writer, not a folder of ours
    for p in (live, dead, stale):
        p.mkdir()
    other.write_text("x")
    recover_dir(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([".model.png.tmp-x.png", live.name, "model"])


def test_a_swap_replaces_the_old_folder_entirely(tmp_path):
    target = _folder(tmp_path / "m", "old")
    (target / "extra.txt").write_text("old")
    with atomic_dir(target) as tmp:
        _folder(tmp, "new")
    assert _version(target) == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_atomic_path_fsyncs_the_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    """Crash safety: a rename that reaches the disk before the bytes can leave an empty file under the name."""
    import os

    from core.atomic import write_bytes_atomic
    events = []
    real_fsync, real_replace, real_open = os.fsync, os.replace, os.open
    names = {}

    def opening(path, flags, *a):
        fd = real_open(path, flags, *a)
        names[fd] = str(path)
        return fd
    monkeypatch.setattr(os, "open", opening)
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", names.get(fd))), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", str(b))), real_replace(a, b))[1])
    write_bytes_atomic(tmp_path / "out.bin", b"data")
    kinds = [(k, n if k == "replace" or n == str(tmp_path) else "tmp") for k, n in events]
    assert kinds == [("fsync", "tmp"), ("replace", str(tmp_path / "out.bin")), ("fsync", str(tmp_path))], events
    assert (tmp_path / "out.bin").read_bytes() == b"data"
