"""core.messages without a display: warnings become one line of ours, routed per thread (what the window's workers
and the CLI both use), and the hook is put back when the last block ends."""
import threading
import warnings

from core.messages import first_line, relay_warnings, warning_line, warning_router


def test_warning_line_is_the_first_line_escaped():
    assert warning_line(UserWarning("clipped x0\nsecond line")) == "clipped x0"
    assert warning_line("bad\x1b[31m name") == r"bad\x1b[31m name"
    assert warning_line(UserWarning("")) == "UserWarning"


def test_first_line_of_a_message():
    assert first_line("  one\ntwo ") == "one"
    assert first_line("") == "" and first_line(" \n ") == ""


def test_relay_warnings_reports_each_distinct_line_once_and_restores_the_hook():
    before = warnings.showwarning
    lines = []
    with relay_warnings(lines.append):
        for _ in range(3):
            warnings.warn("the same\ndetail", UserWarning)
        warnings.warn("another", RuntimeWarning)
        warnings.warn("the same", DeprecationWarning)   # 'always': shown, but the same line as before
    assert lines == ["the same", "another"]
    assert warnings.showwarning is before


def test_nested_relays_resume_the_outer_one():
    outer, inner = [], []
    with relay_warnings(outer.append):
        warnings.warn("first", UserWarning)
        with relay_warnings(inner.append):
            warnings.warn("inside", UserWarning)
        warnings.warn("after", UserWarning)
    assert outer == ["first", "after"] and inner == ["inside"]


def test_overlapping_threads_each_get_their_own_warnings():
    before = warnings.showwarning
    got = {"a": [], "b": []}
    a_in, b_done = threading.Event(), threading.Event()

    def a():
        with warning_router.relay(got["a"].append):
            warnings.warn("from A, before B", UserWarning)
            a_in.set()
            assert b_done.wait(10)
            warning_router.check()
            warnings.warn("from A, after B", UserWarning)

    def b():
        assert a_in.wait(10)
        with warning_router.relay(got["b"].append):
            warnings.warn("from B", UserWarning)
        b_done.set()

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        threads = [threading.Thread(target=f) for f in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert got == {"a": ["from A, before B", "from A, after B"], "b": ["from B"]}
        assert warnings.showwarning is before
        with warnings.catch_warnings(record=True) as caught:   # this thread's warnings are untouched
            warnings.warn("on the main thread", UserWarning)
    assert [str(w.message) for w in caught] == ["on the main thread"]


def test_a_failing_report_never_raises_into_the_job():
    def report(_line):
        raise RuntimeError("the UI is gone")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        with warning_router.relay(report):
            warnings.warn("ignored", UserWarning)   # no exception
