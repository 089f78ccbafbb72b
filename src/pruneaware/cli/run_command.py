"""``pruneaware run``: the main job on built-in or the user's own model and data, with progress, logs, report and plots."""

from __future__ import annotations

import argparse
import re
from datetime import datetime
from pathlib import Path

import torch
from rich.console import Console

from pruneaware.distributed.launch import launch
from pruneaware.distributed.timeouts import resolve_timeout
from pruneaware.core.errors import ConfigError
from pruneaware.job.run import JobResult, check_run, load_run_spec, prepare_run_directory, run_job, write_metrics
from pruneaware.job.spec import RunSpec
from pruneaware.recipe.shipped import default_recipe_path
from pruneaware.report.write import write_report


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "run",
        help="train a recipe on built-in or your own model and data; report dense vs pruned",
        description=(
            "Train the dense baseline and the pruned model, then report the task's metric, sparsity, size, MACs and latency. "
            "--model and --data take built-in names, torchvision:<name>, a Hugging Face model folder, an image folder, "
            "a .csv/.jsonl/.txt file or package.module:function from the current directory (docs/main-job.md)."
        ),
    )
    parser.add_argument("recipe", nargs="?", help="recipe YAML file, or the name of a shipped recipe (default: 'default', GMP to 90%% on MNIST-1D)")
    parser.add_argument("--out", type=Path, help="run folder (default: runs/<recipe>-<time>)")
    parser.add_argument("--resume", type=Path, metavar="RUN_FOLDER", help="continue an interrupted run from its folder")
    parser.add_argument("--epochs", type=int, help="override train.epochs")
    parser.add_argument("--seed", type=int, help="override train.seed")
    parser.add_argument("--no-dense", action="store_true", help="skip the dense baseline")
    parser.add_argument("--model", help="override train.model: built-in name, torchvision:<name>, Hugging Face folder or package.module:function")
    parser.add_argument("--data", help="override train.dataset: built-in name, image folder, .csv/.jsonl/.txt file or package.module:function")
    parser.add_argument("--weights", help="override train.weights: pretrained weights to start from (.safetensors or a saved state_dict)")
    parser.add_argument("--task", choices=["auto", "classification", "causal_lm", "embedding"], help="override train.task")
    parser.add_argument("--device", help="override train.device: auto, cpu, cuda or cuda:<index>")
    parser.add_argument("--threads", type=int, help="override train.threads: torch intra-op threads for the job")
    parser.add_argument("--nproc", type=int, default=1, help="train with N local processes (DistributedDataParallel over gloo); also with --resume, at any N")
    parser.add_argument("--timeout", type=float, help="with --nproc: seconds a process waits for the others before the run fails (default: $PRUNEAWARE_DDP_TIMEOUT or 600)")
    parser.add_argument("--latency-target", type=float, metavar="F", help="structured recipes: stop removing channels at F of the dense model's predicted latency (docs/hardware.md)")
    parser.add_argument("--latency-batch", type=int, metavar="N", help="with --latency-target: the batch size it is measured at (default 1)")
    parser.add_argument("--latency-backend", choices=["torch", "onnxruntime", "cuda"],
                        help="with --latency-target: the runtime it is measured on (default torch eager)")
    parser.set_defaults(handler=handle)


def _spec_from_args(args: argparse.Namespace) -> tuple[RunSpec, Path]:
    if args.resume is not None:
        overrides = (args.model, args.data, args.weights, args.task, args.device, args.threads)
        if args.recipe or args.out or args.epochs or args.seed is not None or args.no_dense or any(value is not None for value in (*overrides, args.latency_target)):
            raise ConfigError("--resume", str(args.resume), "no other arguments: a resumed run keeps its own recipe and settings")
        spec = load_run_spec(args.resume)
        _check_nproc(args.nproc, spec)
        return spec, args.resume
    source = args.recipe or "default"
    path = Path(source) if source.endswith((".yaml", ".yml")) or Path(source).exists() else default_recipe_path(source)
    spec = RunSpec.from_yaml(path).with_overrides(
        epochs=args.epochs, seed=args.seed, dense_baseline=False if args.no_dense else None, model=_absolute(args.model), dataset=_absolute(args.data),
        weights=_absolute(args.weights), task=args.task, device=args.device, threads=args.threads,
    )
    if args.latency_target is not None:
        from pruneaware.hardware.overrides import with_latency_target

        spec = with_latency_target(spec, args.latency_target, args.latency_backend or "torch", args.latency_batch or 1)
    elif args.latency_batch is not None or args.latency_backend is not None:
        raise ConfigError("--latency-batch/--latency-backend", args.latency_batch or args.latency_backend, "a --latency-target F to measure at that batch or backend")
    check_run(spec)
    _check_nproc(args.nproc, spec)
    directory = args.out or Path("runs") / f"{folder_name(spec.recipe.name)}-{datetime.now():%Y%m%d-%H%M%S}"
    if (directory / "spec.yaml").exists():
        raise ConfigError("--out", str(directory), "a new folder; this one holds a run already (use --resume to continue it)")
    prepare_run_directory(spec, directory)
    return spec, directory


def folder_name(name: str, limit: int = 80) -> str:
    """A recipe name as one safe folder name: no path separators or leading dots, at most ``limit`` characters."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name).lstrip(".-")[:limit].rstrip(".-")
    return safe or "run"


def _absolute(value: str | None) -> str | None:
    """A path that exists, made absolute, so the run folder's spec.yaml finds it from any directory on --resume."""
    return str(Path(value).expanduser().resolve()) if value is not None and Path(value).expanduser().exists() else value


def _check_nproc(nproc: int, spec: RunSpec) -> None:
    if not 1 <= nproc <= spec.train.batch_size:
        raise ConfigError("--nproc", nproc, f"from 1 to train.batch_size ({spec.train.batch_size}): each process takes a share of every batch")


def handle(args: argparse.Namespace, console: Console) -> int:
    spec, directory = _spec_from_args(args)
    console.print(f"run folder: {directory}")
    if args.nproc > 1:
        launch(_run_rank, args.nproc, (spec.to_mapping(), str(directory)), timeout=resolve_timeout(args.timeout, "--timeout"))
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
    write_report(result, Console())
