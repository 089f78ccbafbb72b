"""This tree's masked training step against a git revision's, for ``bench/train_step.py --baseline-ref``.

The revision's ``src/`` is extracted with ``git archive`` into a temporary folder. Two worker
processes, one importing pruneaware from this tree's ``src/`` and one from the revision's, build
the same case from the same seed and each time a dense and a masked step per round; the parent
lets only one worker run at a time, alternating which goes first. Each worker's masked step is a
ratio to the dense step it ran in the same round, in the same process, so differences of memory
layout between the two processes cancel; the two ratios are then compared.
"""

from __future__ import annotations

import io
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pruneaware as pa

ROOT = Path(__file__).resolve().parents[1]


def paired_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median of step-by-step ratios: steps run back to back share the machine's state, so drift cancels."""
    return statistics.median(a / b for a, b in zip(numerator, denominator))


def serve(variants: dict) -> None:
    """Worker side: say where pruneaware was imported from, then per index read from stdin run one step of each variant and print their times."""
    print(f"ready {pa.__file__}", flush=True)
    names = list(variants)
    for line in sys.stdin:
        index = int(line)
        for name in names if index % 2 == 0 else names[::-1]:
            variants[name][0](index)
        print(" ".join(repr(variants[name][1].parts[part][-1]) for name in names for part in ("total", "hooks")), flush=True)


class Worker:
    """A ``train_step.py --worker`` process importing pruneaware from ``src``."""

    def __init__(self, case: str, src: Path, threads: int):
        env = {**os.environ, "PYTHONPATH": str(src)}
        command = [sys.executable, str(ROOT / "bench" / "train_step.py"), "--worker", case, "--threads", str(threads)]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        self.src = src
        self.dense: list[float] = []
        self.masked: list[float] = []
        self.hooks: list[float] = []

    def wait_ready(self) -> None:
        line = self.process.stdout.readline()
        if not line.startswith("ready "):
            raise SystemExit(f"the worker for {self.src} did not start (exit code {self.process.wait()}); see its error above")
        imported = Path(line.split(" ", 1)[1].strip())
        if not imported.is_relative_to(self.src):
            raise SystemExit(f"the worker meant to import pruneaware from {self.src} imported {imported}")

    def step(self, index: int) -> None:
        self.process.stdin.write(f"{index}\n")
        self.process.stdin.flush()
        dense, _, masked, hooks = (float(value) for value in self.process.stdout.readline().split())
        self.dense.append(dense)
        self.masked.append(masked)
        self.hooks.append(hooks)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def _describe_tree() -> str:
    """``git describe`` of this tree, or 'no git history' where there is none (a copied tree)."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        return "no git history"
    return subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True).stdout.strip()


def extract_src(ref: str, into: Path) -> str:
    """Write revision ``ref``'s ``src/`` under ``into``; return its full commit hash."""
    resolved = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], capture_output=True, text=True)
    if resolved.returncode != 0:
        raise SystemExit(f"--baseline-ref {ref!r} is not a commit of this repository; give a branch, tag or hash (git log --oneline)")
    commit = resolved.stdout.strip()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", commit, "src"], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return commit


def compare_with_revision(ref: str, cases: list[str], steps: int, threads: int, extracted: Path | None = None) -> None:
    """Time this tree's masked step against revision ``ref``'s, case by case, and print both ratios to dense.

    ``extracted``: a folder already holding ``ref``'s ``src/`` (``git archive <ref> src | tar -x -C <folder>``),
    for a machine whose copy of the tree has no git history.
    """
    with tempfile.TemporaryDirectory() as folder:
        if extracted is None:
            commit = extract_src(ref, Path(folder))
        else:
            commit, folder = "extracted", str(extracted.resolve())
            if not (Path(folder) / "src" / "pruneaware").is_dir():
                raise SystemExit(f"--baseline-src {extracted} holds no src/pruneaware; extract it with: git archive {ref} src | tar -x -C {extracted}")
        tree = _describe_tree()
        print(f"\nThis tree ({tree}, src/ as it is on disk) against {ref} ({commit[:10]}), {steps} rounds, load average {os.getloadavg()[0]:.2f}")
        print("| case | src | dense ms | masked ms | pruner hooks ms | masked / dense (paired) |")
        print("|---|---|---|---|---|---|")
        for case in cases:
            workers = {"this tree": Worker(case, ROOT / "src", threads), ref: Worker(case, Path(folder) / "src", threads)}
            for worker in workers.values():
                worker.wait_ready()
            order = list(workers.values())
            for index in range(steps):
                for worker in order if index % 2 == 0 else order[::-1]:
                    worker.step(index)
            for worker in order:
                worker.close()
            ratios = {name: paired_ratio(w.masked, w.dense) for name, w in workers.items()}
            for name, worker in workers.items():
                times = (1e3 * statistics.median(values) for values in (worker.dense, worker.masked, worker.hooks))
                print(f"| {case} | {name} | {' | '.join(f'{ms:.2f}' for ms in times)} | {ratios[name]:.3f}x |")
            this, baseline = order
            masked, hooks = paired_ratio(this.masked, baseline.masked), paired_ratio(this.hooks, baseline.hooks)
            print(f"| {case} | this tree / {ref} | | {masked:.3f}x (paired rounds) | {hooks:.3f}x (paired rounds) | {ratios['this tree'] / ratios[ref]:.3f}x |")
        print(f"load average after: {os.getloadavg()[0]:.2f}")
