"""Run every (method, sparsity, seed) of a comparison with the main job's trainer, skipping runs already in the CSV.

Each seed trains the dense model once; every other run of that seed starts from the same initial
weights (or, for post-training methods, from that dense model) and trains for the same number of
epochs. Runs checkpoint every epoch like ``pruneaware run``, so even a run cut in half continues.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from pruneaware.compare.records import RunRecord, read_records, run_key, write_records
from pruneaware.compare.spec import DENSE, ComparisonSpec, MethodSpec
from pruneaware.compare.targets import method_recipe
from pruneaware.data import DatasetSplits, load_dataset
from pruneaware.core.errors import ConfigError
from pruneaware.job import checkpoint
from pruneaware.job.spec import TrainSpec
from pruneaware.job.trainer import PhaseTrainer, evaluate
from pruneaware.models import build_model
from pruneaware.recipe import Recipe, ScopeSpec
from pruneaware.measure.sparsity import summarize

SPEC_FILE = "comparison.yaml"
RESULTS_FILE = "runs.csv"


@dataclass(frozen=True)
class PlannedRun:
    """One model to train: which recipe (None for dense), at which target, with which seed."""

    method: str
    target: float
    seed: int
    recipe: Recipe | None
    train: TrainSpec
    from_dense: bool = False
    setting: str = ""

    @property
    def key(self) -> tuple[str, float, int]:
        return run_key(self.method, self.target, self.seed)

    @property
    def slug(self) -> str:
        return f"{self.method.replace(' ', '_').replace('/', '-')}-s{self.target:g}-seed{self.seed}"


def plan_runs(spec: ComparisonSpec) -> list[PlannedRun]:
    """Every run in order (seed by seed, dense first), each recipe built now so a bad method fails before training."""
    runs = []
    for seed in spec.seeds:
        runs.append(PlannedRun(DENSE, 0.0, seed, None, TrainSpec.model_validate(spec.train_fields(None, seed))))
        for method in spec.methods:
            train = _train_spec(spec, method, seed)
            for target in spec.method_sparsities(method):
                recipe, setting = method_recipe(method, target, seed)
                runs.append(PlannedRun(method.label, target, seed, recipe, train, method.from_dense, setting))
    return runs


def run_comparison(
    spec: ComparisonSpec, directory: Path, *, console: Console | None = None, include: Sequence[Path] = ()
) -> list[RunRecord]:
    """Train every planned run not yet in ``directory/runs.csv``, appending a row after each; returns all rows.

    ``include`` names folders of the same comparison run by other processes (e.g. one seed each): their
    rows are copied in first and not trained again.
    """
    console = console or Console(stderr=True)
    runs = plan_runs(spec)
    _claim_directory(spec, directory)
    results_path = directory / RESULTS_FILE
    records = read_records(results_path)
    if include:
        records = _merge(records, [record for folder in include for record in _included_records(spec, folder)])
        write_records(results_path, records)
    done = {record.key for record in records}
    missing_dense = {run.seed for run in runs if run.from_dense and run.key not in done and not _dense_path(directory, run.seed).is_file()}
    pending = [run for run in runs if run.key not in done or (run.method == DENSE and run.seed in missing_dense)]
    records = [record for record in records if record.key not in {run.key for run in pending}]
    if not pending:
        return records
    data = load_dataset(spec.dataset, **spec.dataset_options)
    _check_scopes(spec, data, pending)
    with _progress(console) as progress:
        overall = progress.add_task("all runs", total=len(runs), completed=len(runs) - len(pending), loss="")
        for run in pending:
            task = progress.add_task(f"{run.method} {run.target:.0%} seed {run.seed}", total=None, loss="")
            record = execute_run(run, spec, data, directory, on_step=lambda step, loss, task=task: progress.update(task, completed=step, loss=f"loss {loss:.4f}"), on_start=lambda total, task=task: progress.update(task, total=total))
            progress.remove_task(task)
            records.append(record)
            write_records(results_path, records)
            progress.advance(overall)
            console.print(f"{record.method:>14} target {record.target_sparsity:.0%} seed {record.seed}: accuracy {record.accuracy:.2%} at sparsity {record.achieved_sparsity:.1%} ({record.seconds:.0f} s)", highlight=False)
    return records


def execute_run(
    run: PlannedRun,
    spec: ComparisonSpec,
    data: DatasetSplits,
    directory: Path,
    *,
    on_step: Callable[[int, float], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> RunRecord:
    """Train one run with the job's PhaseTrainer, then measure the finalized model on the test split."""
    torch.manual_seed(run.seed)  # every run of a seed starts from the same initial weights
    model = build_model(spec.model, data.input_shape, data.num_classes)
    if run.from_dense:
        model.load_state_dict(checkpoint.load(_dense_path(directory, run.seed)))
    work = directory / "work" / run.slug
    started = time.perf_counter()
    trainer = PhaseTrainer(run.method, model, data.train, data.test, run.train, work, recipe=run.recipe)
    if on_start is not None:
        on_start(trainer.total_steps)
    trainer.run(on_step=on_step)
    seconds = time.perf_counter() - started
    _, accuracy = evaluate(model, data.test)
    achieved = summarize(model, ScopeSpec().build().select(model)).sparsity  # one scope for every method
    if run.method == DENSE:
        checkpoint.atomic_save(model.state_dict(), _dense_path(directory, run.seed))
    shutil.rmtree(work, ignore_errors=True)
    return RunRecord(run.method, run.target, achieved, run.seed, accuracy, seconds, run.setting)


def _check_scopes(spec: ComparisonSpec, data: DatasetSplits, runs: list[PlannedRun]) -> None:
    """Select every recipe's scope on the model now, so a pattern matching no layer fails before hours of training."""
    model = build_model(spec.model, data.input_shape, data.num_classes)
    for run in runs:
        if run.recipe is not None:
            run.recipe.scope.build().select(model)


def _train_spec(spec: ComparisonSpec, method: MethodSpec, seed: int) -> TrainSpec:
    try:
        return TrainSpec.model_validate(spec.train_fields(method, seed))
    except ValueError as error:
        raise ConfigError(f"method {method.label!r}.train", method.train, f"valid training settings ({str(error).splitlines()[-1].strip()})") from None


def _dense_path(directory: Path, seed: int) -> Path:
    return directory / "dense" / f"seed{seed}.pt"


def _merge(records: list[RunRecord], extra: list[RunRecord]) -> list[RunRecord]:
    known = {record.key for record in records}
    return records + [record for record in extra if record.key not in known]


def _included_records(spec: ComparisonSpec, folder: Path) -> list[RunRecord]:
    """Rows of another folder of this comparison (seeds may differ; every other setting must match)."""
    path = folder / SPEC_FILE
    stored = yaml.safe_load(path.read_text()) if path.is_file() else None
    if stored is None or {**stored, "seeds": None} != {**spec.model_dump(mode="json"), "seeds": None}:
        raise ConfigError("--include", str(folder), "a folder of the same comparison (same settings in its comparison.yaml; only seeds may differ)")
    return [record for record in read_records(folder / RESULTS_FILE) if record.seed in spec.seeds]


def _claim_directory(spec: ComparisonSpec, directory: Path) -> None:
    """Store the spec in the output folder; refuse a folder holding a different comparison (its rows would not match)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / SPEC_FILE
    current = spec.model_dump(mode="json")
    if path.is_file():
        stored = yaml.safe_load(path.read_text())
        if stored != current:
            raise ConfigError("--out", str(directory), "a new folder, or the same comparison settings as the one stored there (comparison.yaml)")
        return
    path.write_text(yaml.safe_dump(current, sort_keys=False))


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description:<28}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[loss]}"),  # blank until a run reports its first step; the overall bar has none
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
