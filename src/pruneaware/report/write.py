"""Every report file of a run: report.md, the plots, and the table on the terminal."""

from __future__ import annotations

from rich.console import Console

from pruneaware.job.results import JobResult
from pruneaware.report.markdown import render_markdown
from pruneaware.report.plots import write_plots
from pruneaware.report.terminal import print_report


def write_report(result: JobResult, console: Console) -> None:
    """Write ``report.md`` and ``plots/`` into the run folder and print the comparison table."""
    write_plots(result)
    (result.directory / "report.md").write_text(render_markdown(result))
    print_report(result, console)
