"""The ``mobilenets`` command line: one module per command group, each with ``add_arguments(sub)``
and its ``cmd_*`` functions, every one a thin layer over the library.

``main`` is the one boundary between the user and the library: bad input (a ``ValueError`` or
``FileNotFoundError`` from any layer) ends with one line naming the parameter or file and exit
status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import sys

from mobilenets.cli import deploy, detect, faces, finegrained, geo, models, segment, train
from mobilenets.cli.common import DefaultsFormatter

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

    p = argparse.ArgumentParser(prog="mobilenets", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=DefaultsFormatter)
    p.add_argument("--version", action="version", version=f"mobilenets {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.add_arguments(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; bad input ends with a one-line error and exit status 2, not a stack trace."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"mobilenets {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


__all__ = ["build_parser", "main"]
