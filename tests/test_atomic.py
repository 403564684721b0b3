"""core.atomic: a failed write leaves nothing behind, and what it writes gets ordinary permissions."""
import os
import stat

import pytest

from core.atomic import atomic_dir, atomic_path, write_text_atomic

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
