"""Measure each composition beside its parts on MNIST-1D: ``python examples/compositions/measure.py [--seeds 3]``.

Runs ``pruneaware run <recipe> --no-dense --threads 1 --seed S`` for every recipe in this folder and
prints test accuracy, counted sparsity (pruned scope), nonzero parameters and MACs as mean ± std
over the seeds (int8 accuracy too when the recipe ends in QAT), as the table in docs/compositions.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
ORDER = ["channels30", "gmp80", "channels30-gmp80", "linear-2-4", "channels30-linear-2-4", "gmp90", "gmp90-l1", "gmp90-qat", "gmp90-qat-l1"]


def run(recipe: str, seed: int, out: Path) -> dict:
    folder = out / f"{recipe}-seed{seed}"
    if not (folder / "summary.json").exists():
        command = [sys.executable, "-m", "pruneaware.cli.main", "run", str(HERE / f"{recipe}.yaml"), "--no-dense", "--threads", "1", "--seed", str(seed), "--out", str(folder)]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return json.loads((folder / "summary.json").read_text())


def spread(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    mean = statistics.mean(values) * scale
    std = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("runs/compositions"))
    args = parser.parse_args()
    print("| recipe | test accuracy % | int8 accuracy % | sparsity (scope) % | nonzero params | MACs (dense kernels) |")
    print("|---|---|---|---|---|---|")
    for recipe in ORDER:
        results = [run(recipe, seed, args.out) for seed in range(args.seeds)]
        pruned = [r["pruned"] for r in results]
        int8 = [r["int8"]["accuracy"] for r in results if "int8" in r]
        print(
            f"| {recipe} | {spread([p['accuracy'] for p in pruned], 100)} | {spread(int8, 100) if int8 else '-'} "
            f"| {spread([p['sparsity'] for p in pruned], 100)} | {spread([p['nonzero_parameters'] for p in pruned], 1, 0)} "
            f"| {spread([p['macs'] for p in pruned], 1, 0)} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
