"""``pruneaware`` command: argument parsing and one-line errors (exit status 2, no traceback)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from rich.console import Console

from pruneaware import __version__
from pruneaware.cli import compare_command, fetch_command, report_command, run_command
from pruneaware.core.errors import PruneawareError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pruneaware", description="Pruning-aware training for PyTorch.")
    parser.add_argument("--version", action="version", version=f"pruneaware {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", required=True)
    run_command.add_parser(commands)
    report_command.add_parser(commands)
    fetch_command.add_parser(commands)
    compare_command.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    console = Console(stderr=True)
    try:
        return args.handler(args, console)
    except PruneawareError as error:
        console.print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        console.print("interrupted; continue with --resume and the run folder", highlight=False)
        return 130


if __name__ == "__main__":
    sys.exit(main())
