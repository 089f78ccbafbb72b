"""Record the golden file and checkpoints from the current code: ``python -m tests.golden.record``.

Run only when a change of behaviour is intended, and say why in the commit message.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.golden.runs import CASES, Run, checkpoint_path, deterministic, record

GOLDEN = Path(__file__).parent / "golden.json"


def main() -> None:
    golden = {}
    for case in CASES:
        golden[case.name] = record(case)
        if case.checkpoint_at is not None:
            with deterministic():
                run = Run(case)
                run.train_to(case.checkpoint_at)
                torch.save(run.checkpoint(), checkpoint_path(case))
        print(case.name, golden[case.name]["kept"])
    GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
