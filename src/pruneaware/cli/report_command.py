"""``pruneaware report RUN``: re-render report.md, plots and summary from a finished or interrupted run folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from pruneaware.job.rerender import load_result
from pruneaware.job.results import write_metrics
from pruneaware.report.write import write_report


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "report",
        help="re-render the report of a finished or interrupted run folder",
        description=(
            "Rebuild each phase from its last checkpoint, measure it again (latency is timed on this machine) and rewrite "
            "report.md, plots/, metrics.csv and summary.json. An interrupted run is reported as far as it got."
        ),
    )
    parser.add_argument("run_folder", type=Path, help="a folder written by 'pruneaware run'")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace, console: Console) -> int:
    result = load_result(args.run_folder)
    write_metrics(result)
    write_report(result, Console())
    return 0
