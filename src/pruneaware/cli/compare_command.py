"""``pruneaware compare``: many methods at several sparsities on one model, data, seed list and budget; one table, one plot."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from rich.console import Console

from pruneaware.compare.plot import plot_comparison
from pruneaware.compare.runner import RESULTS_FILE, run_comparison
from pruneaware.compare.spec import ComparisonSpec, comparison_path
from pruneaware.compare.table import markdown_table
from pruneaware.core.errors import ConfigError

TABLE_FILE = "table.md"
PLOT_FILE = "accuracy_vs_sparsity.png"


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "compare",
        help="run a set of recipes at several sparsities with the same model, data, seeds and epochs; write a table and a plot",
        description=(
            "Train the dense baseline once per seed and every method of a comparison file at every sparsity, each for the "
            "same number of epochs from the same initial weights; write runs.csv, table.md (mean ± std over seeds) and a "
            "plot. Running again with the same --out skips the runs already in runs.csv."
        ),
    )
    parser.add_argument("comparison", help="comparison YAML file, or a shipped one: mnist1d, mnist_lenet300")
    parser.add_argument("--out", type=Path, help="output folder (default: runs/compare-<name>); reuse it to resume")
    parser.add_argument("--epochs", type=int, help="override the epochs every run trains")
    parser.add_argument("--seeds", type=int, nargs="+", metavar="SEED", help="run these seeds instead of the file's (e.g. --seeds 0 1 2)")
    parser.add_argument("--include", type=Path, nargs="+", default=[], metavar="FOLDER", help="also take the finished runs of these folders of the same comparison (e.g. seeds run in parallel processes)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace, console: Console) -> int:
    spec = ComparisonSpec.from_yaml(comparison_path(args.comparison)).with_overrides(epochs=args.epochs, seeds=args.seeds)
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError("--threads", args.threads, "a positive number of threads")
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # denormal floats in Adam's moments slow CPU training up to 2x
    directory = args.out or Path("runs") / f"compare-{spec.name}"
    console.print(f"comparison folder: {directory}")
    records = run_comparison(spec, directory, console=console, include=args.include)
    table = markdown_table(spec, records)
    (directory / TABLE_FILE).write_text(f"Test accuracy (%) on {spec.dataset}, {spec.model}, {spec.epochs} epochs per run, seeds {spec.seeds}:\n\n{table}\n")
    plot_comparison(spec, records, directory / PLOT_FILE)
    Console().print(table, highlight=False)
    console.print(f"wrote {directory / RESULTS_FILE}, {directory / TABLE_FILE}, {directory / PLOT_FILE}")
    return 0
