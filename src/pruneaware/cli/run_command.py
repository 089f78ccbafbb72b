"""``pruneaware run``: the main job on built-in data, with progress, report and plots."""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path

import torch
from rich.console import Console

from pruneaware.errors import ConfigError
from pruneaware.job.run import check_run, load_run_spec, prepare_run_directory, run_job, write_metrics
from pruneaware.job.spec import RunSpec, default_recipe_path
from pruneaware.report.markdown import render_markdown
from pruneaware.report.plots import write_plots
from pruneaware.report.terminal import print_report


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "run",
        help="train a recipe on built-in data and report dense vs pruned",
        description="Train the dense baseline and the pruned model, then report accuracy, sparsity, size, MACs and latency.",
    )
    parser.add_argument("recipe", nargs="?", help="recipe YAML file, or the name of a shipped recipe (default: 'default', GMP to 90%% on MNIST-1D)")
    parser.add_argument("--out", type=Path, help="run folder (default: runs/<recipe>-<time>)")
    parser.add_argument("--resume", type=Path, metavar="RUN_FOLDER", help="continue an interrupted run from its folder")
    parser.add_argument("--epochs", type=int, help="override train.epochs")
    parser.add_argument("--seed", type=int, help="override train.seed")
    parser.add_argument("--no-dense", action="store_true", help="skip the dense baseline")
    parser.set_defaults(handler=handle)


def _spec_from_args(args: argparse.Namespace) -> tuple[RunSpec, Path]:
    if args.resume is not None:
        if args.recipe or args.out or args.epochs or args.seed is not None or args.no_dense:
            raise ConfigError("--resume", str(args.resume), "no other arguments: a resumed run keeps its own recipe and settings")
        return load_run_spec(args.resume), args.resume
    source = args.recipe or "default"
    path = Path(source) if source.endswith((".yaml", ".yml")) or Path(source).exists() else default_recipe_path(source)
    spec = RunSpec.from_yaml(path).with_overrides(epochs=args.epochs, seed=args.seed, dense_baseline=False if args.no_dense else None)
    check_run(spec)
    directory = args.out or Path("runs") / f"{spec.recipe.name}-{datetime.now():%Y%m%d-%H%M%S}"
    if (directory / "spec.yaml").exists():
        raise ConfigError("--out", str(directory), "a new folder; this one holds a run already (use --resume to continue it)")
    prepare_run_directory(spec, directory)
    return spec, directory


def handle(args: argparse.Namespace, console: Console) -> int:
    spec, directory = _spec_from_args(args)
    console.print(f"run folder: {directory}")
    torch.set_flush_denormal(True)  # denormal floats (e.g. in Adam's second moments) slow CPU training up to 2x
    result = run_job(spec, directory, console=console)
    write_metrics(result)
    write_plots(result)
    (directory / "report.md").write_text(render_markdown(result))
    print_report(result, Console())
    return 0
