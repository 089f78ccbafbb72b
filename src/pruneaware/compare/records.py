"""The comparison's CSV: one row per finished run, rewritten atomically so an interrupted comparison resumes from it."""

from __future__ import annotations

import csv
import io
import os
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from pruneaware.core.errors import StateError


@dataclass(frozen=True)
class RunRecord:
    """One trained model: target and achieved sparsity (counted from the weights), test accuracy, wall time."""

    method: str
    target_sparsity: float
    achieved_sparsity: float
    seed: int
    accuracy: float
    seconds: float
    setting: str = ""
    """What the comparison set to reach the target when it is not the sparsity itself (L0 strength, IMP keep)."""

    @property
    def key(self) -> tuple[str, float, int]:
        return run_key(self.method, self.target_sparsity, self.seed)


def run_key(method: str, target: float, seed: int) -> tuple[str, float, int]:
    """Identity of a run in the CSV (targets rounded, so 0.9 read back from text matches 0.9)."""
    return method, round(float(target), 6), int(seed)


COLUMNS = [field.name for field in fields(RunRecord)]
_TYPES = {field.name: field.type for field in fields(RunRecord)}


def read_records(path: Path) -> list[RunRecord]:
    """Every row of a comparison CSV (none when the file does not exist yet)."""
    if not path.is_file():
        return []
    with path.open(newline="") as stream:
        reader = csv.DictReader(stream)
        if reader.fieldnames != COLUMNS:
            raise StateError(f"{path} has columns {reader.fieldnames}, not {COLUMNS}; pass a new --out folder")
        return [_parse(row) for row in reader]


def write_records(path: Path, records: list[RunRecord]) -> None:
    """Write all rows to a temp file and rename it over ``path``: a kill never leaves half a CSV."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(asdict(record) for record in records)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", newline="") as stream:
            stream.write(buffer.getvalue())
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _parse(row: dict[str, str]) -> RunRecord:
    converters = {"float": float, "int": int, "str": str}
    return RunRecord(**{name: converters[str(_TYPES[name])](row[name]) for name in COLUMNS})
