"""The ``ddpm`` command line: one module per subcommand (``cmd_<name>.py``, each with ``register(subparsers)``).

Every command exits 0 on success, 2 on bad input with one line on stderr (no traceback), 130 on Ctrl+C, and
writes its outputs atomically, so a failure never leaves a partial file.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ("schedule", "noise", "sample", "train", "evaluate", "elbo")
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
            module = importlib.import_module(f"core.cli.cmd_{name}")
        except ModuleNotFoundError as e:  # a command not built yet in this checkout
            if e.name != f"core.cli.cmd_{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = f"ddpm {args.command}"
    try:
        return int(args.func(args) or EXIT_OK)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ValueError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as e:
        print(f"{prog}: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as e:  # an unexpected failure still gets one line, not a traceback
        print(f"{prog}: failed: {type(e).__name__}: {_one_line(e)}", file=sys.stderr)
        return EXIT_FAILED


def _one_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    if isinstance(e, OSError) and e.filename and e.strerror:
        text = f"{e.filename}: {e.strerror}"
    return text.splitlines()[0]


def entry_point() -> None:
    sys.exit(main())
