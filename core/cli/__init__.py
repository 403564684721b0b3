"""The ``ddpm`` command line: one module per subcommand (``cmd_<name>.py``, each with ``register(subparsers)``).

Every command exits 0 on success, 2 on bad input with one line on stderr (no traceback), 130 on Ctrl+C, and
writes its outputs atomically, so a failure never leaves a partial file.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ("schedule", "noise", "sample", "train", "train-sd", "evaluate", "elbo", "lab2d", "compare",
            "autoguide")
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


class CliError(ValueError):
    """Bad input found by a command; its message is printed as one line and the exit code is 2."""


class OneLineParser(argparse.ArgumentParser):
    """argparse with errors as a single ``ddpm CMD: error: …`` line and exit code 2."""

    def error(self, message):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    from core import __version__
    parser = OneLineParser(prog="ddpm", description="DDPM Studio from the command line: schedules, noising, "
                           "sampling, training and the variational bound.")
    parser.add_argument("--version", action="version", version=f"ddpm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    sub.required = True
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"core.cli.cmd_{name.replace('-', '_')}")
        except ModuleNotFoundError as e:  # a command not built yet in this checkout
            if e.name != f"core.cli.cmd_{name.replace('-', '_')}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv=None) -> int:
    from core.messages import relay_warnings
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = EscapingStream(out), EscapingStream(err, allow_cr=True)
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as e:  # --help, --version, or a one-line usage error: main() returns its code
            return e.code if isinstance(e.code, int) else EXIT_BAD_INPUT
        prog = f"ddpm {args.command}"
        with relay_warnings(lambda line: print(f"{prog}: warning: {line}", file=sys.stderr)):
            return _run(prog, args)
    finally:
        sys.stdout, sys.stderr = out, err


# Exceptions that only bad input reaches (a crafted file, an absurd number): exit 2 like our own refusals. Any other
# failure still gets one line, with exit 1.
_BAD_INPUT = (ValueError, OSError, OverflowError, RecursionError, NotImplementedError, SyntaxError, EOFError,
              MemoryError, KeyError, IndexError, TypeError)


def _run(prog: str, args) -> int:
    from core.messages import one_line
    try:
        return int(args.func(args) or EXIT_OK)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except _BAD_INPUT as e:
        print(f"{prog}: error: {one_line(e)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as e:  # an unexpected failure still gets one line, not a traceback
        print(f"{prog}: failed: {one_line(e)}", file=sys.stderr)
        return EXIT_FAILED


class EscapingStream:
    """A text stream wrapper that shows control characters as ``\\xNN`` escapes, so text from a file or a model's
    config (a name, a path) can never send terminal escape sequences. Newlines and tabs pass, and carriage returns
    on the stream that draws the progress bar."""

    def __init__(self, stream, allow_cr: bool = False):
        self._stream, self._keep = stream, "\t\n\r" if allow_cr else "\t\n"

    def write(self, text: str) -> int:
        from core.messages import printable
        return self._stream.write(printable(text, keep=self._keep))

    def __getattr__(self, name):
        return getattr(self._stream, name)


def entry_point() -> None:
    sys.exit(main())
