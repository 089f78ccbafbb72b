"""The README's demo tables, generated from docs/demo.json, and the runs that produce that file.

``python -m tests.readme_demo`` runs ``pruneaware run`` (the ``make demo`` recipe) and ``pruneaware run
structured`` for seeds 0-2 on this machine, writes docs/demo.json and rewrites the README's two tables.
The README shows seed 0; each checked figure's tolerance is its spread (max - min) over the seeds.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
JSON_PATH = ROOT / "docs" / "demo.json"
README = ROOT / "README.md"
RECIPES = ("default", "structured")
SEEDS = (0, 1, 2)
CHECKED = {  # figure: (phase keys in summary.json) checked against reruns within the seed spread
    "default": ["accuracy", "sparsity", "nonzero_parameters", "effective_macs", "checkpoint_gzip_bytes"],
    "structured": ["accuracy", "parameters", "macs"],
}


def figures(run_folder: Path, recipe: str) -> dict[str, dict[str, float]]:
    """The checked figures of one run, per phase, plus the batch-64 latency ratio (shown, not checked)."""
    summary = json.loads((run_folder / "summary.json").read_text())
    result = {phase: {key: summary[phase][key] for key in CHECKED[recipe]} for phase in ("dense", "pruned")}
    result["latency_ratio_64"] = summary["pruned"]["latency_ms"]["64"] / summary["dense"]["latency_ms"]["64"]
    return result


def run_demo(recipe: str, seed: int, folder: Path) -> dict[str, dict[str, float]]:
    """Run ``pruneaware run RECIPE --seed SEED`` into ``folder/<recipe>-<seed>``, or read that run if it finished already."""
    out = folder / f"{recipe}-{seed}"
    if (out / "summary.json").is_file():
        return figures(out, recipe)
    subprocess.run([sys.executable, "-m", "pruneaware.cli.main", "run", recipe, "--seed", str(seed), "--out", str(out)], check=True, capture_output=True)
    return figures(out, recipe)


def spread(runs: list[dict[str, dict[str, float]]], phase: str, key: str) -> float:
    values = [run[phase][key] for run in runs]
    return max(values) - min(values)


def render_tables(data: dict) -> tuple[str, str]:
    """The two README tables (seed 0) with the tolerance a rerun must meet."""
    default, structured = data["default"]["seeds"]["0"], data["structured"]["seeds"]["0"]
    dense, pruned = default["dense"], default["pruned"]
    tolerance = data["default"]["tolerance"]
    first = "\n".join([
        "| | dense | pruned (GMP, 90% of prunable weights) |",
        "|---|---|---|",
        f"| test accuracy | {dense['accuracy']:.2%} | {pruned['accuracy']:.2%} |",
        f"| sparsity of prunable weights, counted | {dense['sparsity']:.2%} | {pruned['sparsity']:.2%} |",
        f"| nonzero parameters | {dense['nonzero_parameters']:,} | {pruned['nonzero_parameters']:,} |",
        f"| MACs per sample with a sparse kernel | {dense['effective_macs']:,} | {pruned['effective_macs']:,} |",
        f"| checkpoint, gzip | {dense['checkpoint_gzip_bytes'] / 1024:.1f} KiB | {pruned['checkpoint_gzip_bytes'] / 1024:.1f} KiB |",
        f"| spread over seeds 0-2 (accuracy, max - min) | {100 * tolerance['dense']['accuracy']:.2f} points | {100 * tolerance['pruned']['accuracy']:.2f} points |",
    ])
    dense, pruned = structured["dense"], structured["pruned"]
    ratios = [run["latency_ratio_64"] for run in data["structured"]["seeds"].values()]
    second = "\n".join([
        "| | dense | slimmed |",
        "|---|---|---|",
        f"| test accuracy | {dense['accuracy']:.2%} | {pruned['accuracy']:.2%} |",
        f"| parameters | {dense['parameters']:,} | {pruned['parameters']:,} ({pruned['parameters'] / dense['parameters']:.3f}x) |",
        f"| MACs per sample | {dense['macs']:,} | {pruned['macs']:,} ({pruned['macs'] / dense['macs']:.3f}x) |",
        f"| CPU latency, batch 64 (median, side by side; seeds 0-2) | 1x | {min(ratios):.3f}x to {max(ratios):.3f}x |",
    ])
    return first, second


def readme_tables(text: str) -> list[str]:
    """Every markdown table in ``text`` (consecutive lines starting with '|')."""
    tables, current = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append("\n".join(current))
            current = []
    return tables


def update(runs: Path) -> None:
    """Run every recipe at every seed in ``runs``, write docs/demo.json and replace the README's demo tables."""
    data: dict = {
        "commands": {"default": "make demo (.venv/bin/pruneaware run)", "structured": ".venv/bin/pruneaware run structured"},
        "environment": f"torch {torch.__version__} on the CPU, 1 torch thread (train.threads in the shipped recipes), {platform.machine()}",
    }
    for recipe in RECIPES:
        seeds = {str(seed): run_demo(recipe, seed, runs) for seed in SEEDS}
        tolerance = {phase: {key: spread(list(seeds.values()), phase, key) for key in CHECKED[recipe]} for phase in ("dense", "pruned")}
        data[recipe] = {"seeds": seeds, "tolerance": tolerance}
    old = render_tables(json.loads(JSON_PATH.read_text())) if JSON_PATH.is_file() else None
    JSON_PATH.write_text(json.dumps(data, indent=2) + "\n")
    text = README.read_text()
    for before, after in zip(old or (), render_tables(data)):
        text = text.replace(before, after)
    README.write_text(text)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=Path, help="folder for the runs (default: a temporary one); finished runs in it are reused")
    arguments = parser.parse_args()
    if arguments.runs is not None:
        update(arguments.runs)
    else:
        with tempfile.TemporaryDirectory() as folder:
            update(Path(folder))
