"""The end-of-run table printed on the terminal."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from pruneaware.job.results import JobResult
from pruneaware.report.table import accuracy_change, comparison_rows, latency_target_rows, quantization_change


def print_report(result: JobResult, console: Console) -> None:
    header, rows = comparison_rows(result)
    table = Table(title=f"pruneaware: {result.spec.recipe.name}")
    for index, name in enumerate(header):
        table.add_column(name, justify="left" if index == 0 else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    change = accuracy_change(result)
    if change is not None:
        console.print(f"accuracy change from pruning: {change:+.2f} points")
    change = quantization_change(result)
    if change is not None:
        console.print(f"accuracy change from int8 conversion after QAT: {change:+.2f} points")
    found = latency_target_rows(result)
    if found is not None:
        caption, header, rows = found
        console.print(caption)
        for row in rows:
            console.print("  " + ", ".join(f"{name} {value}" for name, value in zip(header[1:], row[1:])) + f" ({row[0]})")
    console.print(f"report: {result.directory / 'report.md'}")
