"""The ``mobilenets`` command line: one module per command group, each with ``add_arguments(sub)``
and its ``cmd_*`` functions, every one a thin layer over the library.

``main`` is the one boundary between the user and the library: whatever a user can cause (a
``ValueError`` or ``OSError`` from any layer: bad values, missing or unreadable files, a full disk;
a diverged or non-finite loss; memory that a size cannot fit in) ends with one line naming the parameter or
file and exit status 2, never a traceback. Anything else is a bug: a line saying so, the
traceback, exit status 1. ``main`` also opens the command's ``fileio.command_inputs`` scope, so no
command writes over a file it was given to read.
"""
from __future__ import annotations

import argparse
import errno
import os
import sys
import traceback

from mobilenets.cli import deploy, detect, faces, finegrained, geo, models, segment, train
from mobilenets.cli.common import DefaultsFormatter, Parser, harden_numeric_flags

#: What ``mobilenets --help`` says first, and last.
DESCRIPTION = ("The MobileNets paper as a command line: models and their cost, training, "
               "evaluation, export, latency, and the paper's section 4 applications.")
EPILOG = ("`mobilenets COMMAND --help` shows a command's options; docs/cli.md lists every "
          "command. Tables fit 100 columns; --wide shows every column, --format csv|json every "
          "field.")

#: The command groups, in the order ``mobilenets --help`` lists them.
GROUPS = (models, train, deploy, detect, segment, finegrained, geo, faces)


def build_parser() -> argparse.ArgumentParser:
    """The ``mobilenets`` parser: every group's subcommands."""
    from mobilenets import __version__

    p = Parser(prog="mobilenets", description=DESCRIPTION, epilog=EPILOG,
               formatter_class=DefaultsFormatter)
    p.add_argument("--version", action="version", version=f"mobilenets {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.add_arguments(sub)
    harden_numeric_flags(p)
    return p


#: Flags that name files a command writes; every other flag naming an existing file is an input.
FILE_OUTPUTS = ("output", "dst", "report", "plot", "teacher_cache")
#: Flags that name folders a command writes into.
FOLDER_OUTPUTS = ("out_dir", "out", "output_dir")


def named_inputs(args: argparse.Namespace) -> dict[str, str]:
    """``{path: flag}`` of every existing file named by a flag or ``--set KEY=VALUE`` that is not
    an output (``FILE_OUTPUTS``, ``FOLDER_OUTPUTS``)."""
    found: dict[str, str] = {}

    def add(value, flag: str) -> None:
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, str) and v and os.path.isfile(v):
                found.setdefault(v, flag)

    for dest, value in vars(args).items():
        if dest not in FILE_OUTPUTS + FOLDER_OUTPUTS and dest != "assignments":
            add(value, "--" + dest.replace("_", "-"))
    for item in getattr(args, "assignments", None) or ():
        key, _, value = item.partition("=")
        if key.strip().replace("-", "_") not in FILE_OUTPUTS + FOLDER_OUTPUTS:
            add(value, f"--set {key.strip()}")
    return found


def user_error(e: BaseException) -> str | None:
    """The one-line message of an error the user can cause, or None for a bug."""
    from mobilenets.engine.loop import DivergedError

    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" writing {e.filename}" if e.filename else ""
        return (f"no space left on the device{where}: free some space and run again (the files "
                "already there were left as they were)")
    if isinstance(e, OSError) and e.filename and e.strerror:
        return f"{e.filename}: {e.strerror}"
    if isinstance(e, (ValueError, OSError, DivergedError)):
        text = str(e).strip()
        if "Original Traceback" in text:  # re-raised from a data-loading worker: its last line
            text = text.splitlines()[-1].split(": ", 1)[-1]
        return text
    if isinstance(e, MemoryError) or (isinstance(e, RuntimeError) and any(
            s in str(e) for s in ("can't allocate memory", "not enough memory", "out of memory"))):
        return (f"out of memory ({str(e).splitlines()[0] if str(e) else 'MemoryError'}): use a "
                "smaller batch size, resolution or width_mult")
    return None


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit status. A user's error ends with one line and status 2
    (argparse's usage errors too), an interruption with status 130, a bug with a line saying so
    and the traceback (status 1). ``--help`` and ``--version`` exit as argparse does."""
    from mobilenets.fileio import check_not_input, command_inputs

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # a usage error, already printed; --help and --version exit 0
        if e.code == 0:
            raise
        return e.code if isinstance(e.code, int) else 2
    prefix = f"mobilenets {args.command}"
    try:
        with command_inputs(named_inputs(args)):
            for dest in FILE_OUTPUTS:
                if isinstance(getattr(args, dest, None), str):
                    check_not_input(getattr(args, dest))
            args.func(args)
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # the boundary: every error ends here, as a line or as a bug report
        message = user_error(e)
        if message is None:
            print(f"{prefix}: internal error (a bug in mobilenets, not in your input; please "
                  f"report it with the traceback below): {type(e).__name__}: {e}", file=sys.stderr)
            traceback.print_exc()
            return 1
        print(f"{prefix}: error: {' '.join(message.split())}", file=sys.stderr)
        return 2
    return 0


__all__ = ["build_parser", "main", "named_inputs", "user_error"]
