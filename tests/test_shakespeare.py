"""Shakespeare text: Markdown markup removed, held-out plays never in the training split."""

from __future__ import annotations

import pytest

from pruneaware.data.shakespeare import HELDOUT_PLAYS, load_plays, speeches, to_plain_text
from pruneaware.core.errors import ConfigError

PLAY = """# A Play

## ACT I

### SCENE I. A street.

_Enter ONE and TWO_

**ONE**  
What news, good friend, upon the windy street today?  
Tell me all.


**TWO**  
None.
"""


def test_markdown_becomes_plain_text_with_speakers():
    text = to_plain_text(PLAY)
    assert "#" not in text and "**" not in text and "_Enter" not in text
    assert "ONE:\nWhat news, good friend, upon the windy street today?\nTell me all." in text
    assert speeches(text) == ["What news, good friend, upon the windy street today? Tell me all."]


def test_splits_are_disjoint(tmp_path):
    for slug in ("hamlet", "macbeth", "the-tempest"):
        (tmp_path / f"{slug}.md").write_text(PLAY)
    train, heldout = load_plays("train", root=tmp_path), load_plays("heldout", root=tmp_path)
    assert set(train) == {"macbeth"} and set(heldout) == {"hamlet", "the-tempest"} <= set(HELDOUT_PLAYS)
    with pytest.raises(ConfigError, match="heldout"):
        load_plays("test", root=tmp_path)
