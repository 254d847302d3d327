"""The ``mobilenets`` command line: one module per command group, each with ``add_arguments(sub)``
and its ``cmd_*`` functions, every one a thin layer over the library.

``main`` is the one boundary between the user and the library: whatever a user can cause (a
``ValueError`` or ``OSError`` from any layer: bad values, missing or unreadable files, a full disk;
a diverged or non-finite loss; memory that a size cannot fit in) ends with one line naming the parameter or
file and exit status 2, never a traceback. Anything else is a bug: a line saying so, the
traceback, exit status 1. ``main`` also opens the command's ``fileio.command_inputs`` scope, so no
command writes over a file it was given to read, and checks every output the command names
(``fileio.check_output``: not a folder where a file is due, a place the user may write) before
the command starts, so no run fails at its end for want of a place to write.
"""
from __future__ import annotations

import argparse
import errno
import os
import sys
import traceback

from mobilenets.cli import (deploy, detect, faces, finegrained, geo, latency, models, segment,
                            train)
from mobilenets.cli.common import DefaultsFormatter, Parser, harden_numeric_flags

#: What ``mobilenets --help`` says first, and last.
DESCRIPTION = ("The MobileNets paper as a command line: models and their cost, training, "
               "evaluation, export, latency, and the paper's section 4 applications.")
EPILOG = ("`mobilenets COMMAND --help` shows a command's options; docs/cli.md lists every "
          "command. Tables fit 100 columns; --wide shows every column, --format csv|json every "
          "field.")

#: The command groups, in the order ``mobilenets --help`` lists them.
GROUPS = (models, train, deploy, latency, detect, segment, finegrained, geo, faces)


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


def command_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, str]:
    """``{dest: how the user names it}`` for the command ``args`` was parsed for: its first
    option string (``--out`` for ``--out``/``--out-dir``), or a positional's metavar."""
    flags: dict[str, str] = {}
    while parser is not None:
        sub = None
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                sub = action
            else:
                flags[action.dest] = (action.option_strings[0] if action.option_strings
                                      else action.metavar or action.dest)
        parser = sub.choices.get(getattr(args, sub.dest, None)) if sub else None
    return flags


def named_inputs(args: argparse.Namespace, flags: dict[str, str] | None = None
                 ) -> dict[str, str]:
    """``{path: flag}`` of every existing file named by a flag or ``--set KEY=VALUE`` that is not
    an output (``FILE_OUTPUTS``, ``FOLDER_OUTPUTS``); ``flags`` from ``command_flags``."""
    found: dict[str, str] = {}

    def add(value, flag: str) -> None:
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, str) and v and os.path.isfile(v):
                found.setdefault(v, flag)

    for dest, value in vars(args).items():
        if dest not in FILE_OUTPUTS + FOLDER_OUTPUTS and dest != "assignments":
            add(value, (flags or {}).get(dest, "--" + dest.replace("_", "-")))
    for item in getattr(args, "assignments", None) or ():
        key, _, value = item.partition("=")
        if key.strip().replace("-", "_") not in FILE_OUTPUTS + FOLDER_OUTPUTS:
            add(value, f"--set {key.strip()}")
    return found


def named_outputs(args: argparse.Namespace, flags: dict[str, str] | None = None
                  ) -> list[tuple[str, str, bool]]:
    """``(path, flag, is_folder)`` of every output named by a flag (``FILE_OUTPUTS``,
    ``FOLDER_OUTPUTS``) or by ``--set KEY=VALUE`` with such a key; ``flags`` from
    ``command_flags``."""
    found = []
    for dest, value in vars(args).items():
        if dest in FILE_OUTPUTS + FOLDER_OUTPUTS and isinstance(value, str) and value:
            found.append((value, (flags or {}).get(dest, "--" + dest.replace("_", "-")),
                          dest in FOLDER_OUTPUTS))
    for item in getattr(args, "assignments", None) or ():
        key, _, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if key in FILE_OUTPUTS + FOLDER_OUTPUTS and value:
            found.append((value, f"--set {key}", key in FOLDER_OUTPUTS))
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
    from mobilenets.fileio import check_output, command_inputs

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # a usage error, already printed; --help and --version exit 0
        if e.code == 0:
            raise
        return e.code if isinstance(e.code, int) else 2
    prefix = f"mobilenets {args.command}"
    try:
        flags = command_flags(parser, args)
        with command_inputs(named_inputs(args, flags)):
            for path, flag, folder in named_outputs(args, flags):  # before any work
                check_output(path, flag, folder)
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


__all__ = ["build_parser", "command_flags", "main", "named_inputs", "named_outputs",
           "user_error"]
