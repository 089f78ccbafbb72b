"""Print the markdown table of a zoo sweep log (``PRUNEAWARE_ZOO_LOG`` of tests/test_zoo_sweep.py): one row per model.

    python -m tests.zoo_sweep_table zoo.jsonl
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path


def table(lines: list[str]) -> str:
    """Outcome and seconds of both cases of each model (the last record of a case wins, so a rerun replaces a failure)."""
    cases: dict[str, dict[str, dict]] = defaultdict(dict)
    for line in lines:
        if line.strip():
            record = json.loads(line)
            cases[record["model"]][record["stem"]] = record
    rows = ["| model | parameters | frozen stem | trainable | seconds (frozen, trainable) |", "|---|---|---|---|---|"]
    for model in sorted(cases):
        both = cases[model]
        params = next(iter(both.values())).get("params")
        cells = [_cell(both.get(stem)) for stem in ("frozen", "trainable")]
        seconds = ", ".join(f"{both[stem]['seconds']:g}" if stem in both else "-" for stem in ("frozen", "trainable"))
        rows.append(f"| {model} | {params / 1e6:.1f} M | {cells[0]} | {cells[1]} | {seconds} |" if params else f"| {model} | - | {cells[0]} | {cells[1]} | {seconds} |")
    return "\n".join(rows)


def _cell(record: dict | None) -> str:
    if record is None:
        return "not run"
    if record["outcome"] == "pruned":
        return f"pruned ({record['detail']})"
    if record["outcome"] == "refused":
        return "refused, " + record["detail"].split(";")[0].split(" (")[0].replace("|", "/")  # the error type and its first clause
    return "**failed**"


if __name__ == "__main__":
    print(table(Path(sys.argv[1]).read_text().splitlines()))
