"""core.model_spec: one grammar for every model SPEC, keys that never collide, one cache."""
import os
import threading

import numpy as np
import pytest

from core.model_spec import (BUILTIN, FOLDER, ORACLE, PHOTO, ModelCache, ModelSpec, cache_key, parse_spec,
                             pixels_token)


@pytest.mark.parametrize("text, kind, value", [
    ("builtin:mnist", BUILTIN, "mnist"),
    ("oracle:builtin:mnist", ORACLE, "builtin:mnist"),
    ("oracle:/data/digits", ORACLE, "/data/digits"),
    ("oracle:cat.png", ORACLE, "cat.png"),
    ("photo", PHOTO, None),
    ("/models/run/model", FOLDER, "/models/run/model"),
    ("relative/folder", FOLDER, "relative/folder"),
])
def test_parse_and_format_are_inverses(text, kind, value):
    spec = parse_spec(text)
    assert (spec.kind, spec.value) == (kind, value)
    assert str(spec) == text and parse_spec(str(spec)) == spec


def test_empty_means_the_builtin_model_and_empty_targets_are_one_line():
    assert parse_spec("") == parse_spec(None) == ModelSpec(BUILTIN, "mnist")
    for bad in ("builtin:", "oracle:", "oracle:  "):
        with pytest.raises(ValueError) as e:
            parse_spec(bad)
        assert len(str(e.value).splitlines()) == 1


def test_an_oracle_folder_is_the_same_kind_everywhere():
    """The old panels disagreed: oracle:FOLDER was its own kind in Generate and a plain folder in ELBO."""
    assert parse_spec("oracle:/x/imgs").kind == parse_spec("oracle:builtin:mnist").kind == ORACLE
    assert parse_spec("oracle:/x/imgs").is_path and not parse_spec("oracle:builtin:mnist").is_path


def test_labels_name_what_the_menu_shows():
    assert parse_spec("builtin:mnist").label == "Built-in — mnist"
    assert parse_spec("oracle:builtin:mnist").label == "Oracle — built-in digits"
    assert parse_spec("/a/b/run7").label == "Model — run7"


def test_pixels_without_a_file_never_share_a_key_even_when_python_reuses_the_id():
    keys, ids = set(), set()
    for i in range(20):
        x = np.full((4, 4, 3), i / 20, np.float32)   # freed each turn: CPython reuses the address
        ids.add(id(x))
        keys.add(cache_key("photo", "cpu", pixels=x))
        del x
    assert len(keys) == 20
    assert len(ids) < 20  # the premise: ids were reused, so an id()-based key would have collided
    a = np.zeros((4, 4, 3), np.float32)
    assert cache_key("photo", pixels=a) == cache_key("photo", pixels=a.copy())
    assert pixels_token(a) != pixels_token(a.astype(np.float64))


def test_a_folder_key_follows_the_resolved_path_and_a_retrain_in_place(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    link = tmp_path / "alias"
    link.symlink_to(folder)
    k1 = cache_key(str(folder))
    assert cache_key(str(link)) == k1                       # one model, one key, however it is named
    st = (folder / "config.json").stat()
    os.utime(folder / "config.json", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert cache_key(str(folder)) != k1                      # rewritten: loaded again
    assert cache_key(str(folder), "cpu") != cache_key(str(folder), "cuda")
    assert cache_key(str(folder), resolution=32) != cache_key(str(folder), resolution=64)


def test_photo_key_needs_pixels():
    with pytest.raises(ValueError, match="open a photo"):
        cache_key("photo")


def test_model_cache_loads_once_and_peek_never_blocks():
    cache, calls = ModelCache(), []
    assert cache.get(("a",), lambda: calls.append(1) or "A") == "A"
    assert cache.get(("a",), lambda: calls.append(1) or "A2") == "A" and len(calls) == 1
    assert cache.peek(("a",)) == "A" and cache.peek(("b",)) is None
    started, release = threading.Event(), threading.Event()

    def slow():
        started.set()
        release.wait(5)
        return "B"
    t = threading.Thread(target=cache.get, args=(("b",), slow))
    t.start()
    started.wait(5)
    assert cache.peek(("b",)) is None and cache.peek(("a",)) is None   # busy loading: answers at once
    release.set()
    t.join(5)
    assert cache.peek(("b",)) == "B"
    cache.clear()
    assert cache.peek(("b",)) is None
