"""What users read: one-line error messages, text from files made safe to print, warnings as one line of ours.

Every entry point (the CLI and the window) formats failures through :func:`one_line`, so the same fault reads the
same way everywhere and never as a traceback.
"""
from __future__ import annotations

import contextlib
import re
import threading
import warnings

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")
_TEMP_NAME = re.compile(r"(?P<dir>[^\s'\"]*/)?\.(?P<name>[^/\s'\"]+?)\.tmp-[A-Za-z0-9_]+(?P<suffix>\.[A-Za-z0-9]+)?")
# messages from Python internals that mean nothing to a user; shown as "invalid value" with the type instead
_INTERNAL = ("math domain error", "unsupported format string", "not all arguments converted",
             "maximum recursion depth", "object of type", "can't multiply sequence")


def printable(text, keep: str = "") -> str:
    """``text`` with control characters (ANSI escapes, newlines, bidi overrides) shown as ``\\xNN`` escapes, so text
    taken from a file or a config can never drive the terminal or split a one-line message. Characters in ``keep``
    (e.g. ``"\\n\\t"`` for a whole stream) pass unchanged."""
    def escape(m):
        c = m.group()
        return c if c in keep else c.encode("unicode_escape").decode("ascii")
    return _CONTROL.sub(escape, str(text))


def user_path(text: str) -> str:
    """``text`` with our atomic writers' temporary names (``dir/.out.png.tmp-abc.png``) put back as the user's
    path (``dir/out.png``)."""
    return _TEMP_NAME.sub(lambda m: f"{m.group('dir') or ''}{m.group('name')}", text)


def first_line(text: str) -> str:
    """The first line of ``text`` after stripping it ("" for blank text): what a status bar or message box shows."""
    return (text.strip().splitlines() or [""])[0]


def one_line(exc: BaseException) -> str:
    """A one-line, human message for an exception: the message itself for our ``ValueError``/``OSError`` family
    (whose messages are written for users), ``message (TypeName)`` for anything else; control characters escaped,
    temporary file names replaced by the user's path, Python-internal wording replaced."""
    text = str(exc).strip()
    first = text.splitlines()[0].strip() if text else ""
    if isinstance(exc, OSError) and getattr(exc, "filename", None) and exc.strerror:
        first = f"{exc.filename}: {exc.strerror}"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    if isinstance(exc, MemoryError):
        return "not enough memory"
    if any(s in first for s in _INTERNAL):
        first = "invalid value"
    first = printable(user_path(first))
    if not first:
        return type(exc).__name__
    if isinstance(exc, (ValueError, OSError)) and not isinstance(exc, (UnicodeError,)):
        return first
    return f"{first} ({type(exc).__name__})"


def warning_line(w: warnings.WarningMessage | Warning | str) -> str:
    """A warning as one line of plain text (the first line of its message, escaped), without Python's
    ``file:line: UserWarning:`` framing."""
    message = getattr(w, "message", w)
    text = str(message).strip()
    return printable(user_path(text.splitlines()[0].strip() if text else type(message).__name__))


class WarningRouter:
    """Sends the warnings raised on a thread, while it is inside :meth:`relay`, to that thread's report function as
    one line (each distinct line once per block); warnings on other threads go where they went before.

    ``warnings.catch_warnings`` swaps process-wide state and is not safe when several threads enter and leave it in
    any order (Python < 3.14): two overlapping worker runs would restore each other's ``showwarning`` and leave it
    replaced for good. Here one hook is installed while any thread relays (counted under a lock) and picks the
    current thread's report function; the warning filters are left as they are."""

    def __init__(self):
        self._lock = threading.Lock()
        self._users = 0
        self._fallback = None
        self._local = threading.local()
        self._hook = self._show   # one bound-method object, so ``warnings.showwarning is self._hook`` holds

    def _show(self, message, category, filename, lineno, file=None, line=None):
        target = getattr(self._local, "target", None)
        if target is None:
            fallback = self._fallback or warnings._showwarning_orig
            return fallback(message, category, filename, lineno, file, line)
        report, seen = target
        text = warning_line(message)
        if text not in seen:
            seen.add(text)
            try:
                report(text)
            except Exception:  # noqa: BLE001 - a warning must never end a run
                pass

    def _install(self) -> None:
        if warnings.showwarning is not self._hook:
            self._fallback = warnings.showwarning
            warnings.showwarning = self._hook

    def check(self) -> None:
        """Re-install the hook if someone replaced ``showwarning`` meanwhile (a ``catch_warnings`` block that began
        before a relay and ended during it)."""
        if warnings.showwarning is not self._hook:
            with self._lock:
                if self._users:
                    self._install()

    @contextlib.contextmanager
    def relay(self, report):
        """Inside the block, this thread's warnings go to ``report(line)``; an enclosing block's resume after it."""
        outer = getattr(self._local, "target", None)
        self._local.target = (report, set())
        with self._lock:
            self._users += 1
            self._install()
        try:
            yield
        finally:
            self._local.target = outer
            with self._lock:
                self._users -= 1
                if self._users == 0 and warnings.showwarning is self._hook:
                    warnings.showwarning = self._fallback or warnings._showwarning_orig
                    self._fallback = None


warning_router = WarningRouter()


@contextlib.contextmanager
def relay_warnings(report):
    """Inside the block, every warning of this thread (the filters set to ``"always"``) is passed to
    ``report(line)`` as one line, each distinct line once, instead of Python printing its multi-line text."""
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        with warning_router.relay(report):
            yield


def json_text(obj, **kw) -> str:
    """``json.dumps`` that always writes valid JSON: NaN and ±inf (which ``json.dumps`` would print as bare
    ``NaN``/``Infinity``) become ``null``; numpy scalars and arrays become numbers and lists. A caller whose value
    may be non-finite says why in a neighbouring field."""
    import json
    import math

    def clean(v):
        if isinstance(v, float):
            return v if math.isfinite(v) else None
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if hasattr(v, "tolist") and not isinstance(v, (str, bytes)):  # numpy scalar or array
            return clean(v.tolist())
        return v

    return json.dumps(clean(obj), allow_nan=False, **kw)


def format_eta(seconds: float) -> str:
    """Seconds as ``M:SS`` or ``H:MM:SS`` (the CLI's progress bar and every panel's ETA); ``--:--`` when unknown."""
    import math
    if not math.isfinite(seconds):
        return "--:--"
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"

