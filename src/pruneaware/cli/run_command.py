"""``pruneaware run``: the main job on built-in data, with progress, report and plots."""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path

import torch
from rich.console import Console

from pruneaware.distributed.launch import launch
from pruneaware.errors import ConfigError
from pruneaware.job.run import JobResult, check_run, load_run_spec, prepare_run_directory, run_job, write_metrics
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
    parser.add_argument("--nproc", type=int, default=1, help="train with N local processes (DistributedDataParallel over gloo); also with --resume, at any N")
    parser.set_defaults(handler=handle)


def _spec_from_args(args: argparse.Namespace) -> tuple[RunSpec, Path]:
    if args.resume is not None:
        if args.recipe or args.out or args.epochs or args.seed is not None or args.no_dense:
            raise ConfigError("--resume", str(args.resume), "no other arguments: a resumed run keeps its own recipe and settings")
        spec = load_run_spec(args.resume)
        _check_nproc(args.nproc, spec)
        return spec, args.resume
    source = args.recipe or "default"
    path = Path(source) if source.endswith((".yaml", ".yml")) or Path(source).exists() else default_recipe_path(source)
    spec = RunSpec.from_yaml(path).with_overrides(epochs=args.epochs, seed=args.seed, dense_baseline=False if args.no_dense else None)
    check_run(spec)
    _check_nproc(args.nproc, spec)
    directory = args.out or Path("runs") / f"{spec.recipe.name}-{datetime.now():%Y%m%d-%H%M%S}"
    if (directory / "spec.yaml").exists():
        raise ConfigError("--out", str(directory), "a new folder; this one holds a run already (use --resume to continue it)")
    prepare_run_directory(spec, directory)
    return spec, directory


def _check_nproc(nproc: int, spec: RunSpec) -> None:
    if not 1 <= nproc <= spec.train.batch_size:
        raise ConfigError("--nproc", nproc, f"from 1 to train.batch_size ({spec.train.batch_size}): each process takes a share of every batch")


def handle(args: argparse.Namespace, console: Console) -> int:
    spec, directory = _spec_from_args(args)
    console.print(f"run folder: {directory}")
    if args.nproc > 1:
        launch(_run_rank, args.nproc, (spec.to_mapping(), str(directory)))
        return 0
    torch.set_flush_denormal(True)  # denormal floats (e.g. in Adam's second moments) slow CPU training up to 2x
    _write_report(run_job(spec, directory, console=console), directory)
    return 0


def _run_rank(spec: dict, directory: str) -> None:
    """One process of a ``--nproc`` run: every rank trains, rank 0 (the one that gets results) reports."""
    torch.set_flush_denormal(True)
    result = run_job(RunSpec.from_mapping(spec), Path(directory), console=Console(stderr=True))
    if result is not None:
        _write_report(result, Path(directory))


def _write_report(result: JobResult, directory: Path) -> None:
    write_metrics(result)
    write_plots(result)
    (directory / "report.md").write_text(render_markdown(result))
    print_report(result, Console())
