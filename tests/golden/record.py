"""Record the golden file from the current code: ``python -m tests.golden.record``.

Run only when a change of behaviour is intended, and say why in the commit message. The checkpoints
are the original (format 1) ones that the pruner must keep loading: ``--checkpoints`` re-saves them
in the current format, which only a deliberate end of format-1 support should do.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from tests.golden.runs import CASES, Run, checkpoint_path, deterministic, record

GOLDEN = Path(__file__).parent / "golden.json"


def main() -> None:
    golden = {}
    for case in CASES:
        golden[case.name] = record(case)
        if case.checkpoint_at is not None and "--checkpoints" in sys.argv[1:]:
            with deterministic():
                run = Run(case)
                run.train_to(case.checkpoint_at)
                torch.save(run.checkpoint(), checkpoint_path(case))
        print(case.name, golden[case.name]["kept"])
    GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
