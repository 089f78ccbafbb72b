"""bench/fsdp_smollm2.py on a tiny random Llama at 2 gloo ranks: masks agree with the unsharded cut, FSDP2 holds less than DDP."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
TINY = {"num_hidden_layers": 2, "vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2}


@pytest.mark.slow
def test_tiny_llama_fsdp2_and_ddp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fsdp_smollm2

    monkeypatch.setattr(fsdp_smollm2, "SMOLLM2_135M", {**fsdp_smollm2.SMOLLM2_135M, **TINY})
    out = tmp_path / "fsdp.json"
    monkeypatch.setattr(sys, "argv", ["fsdp_smollm2", "--random-init", "--configs", "fsdp2:2", "ddp:2", "--steps", "1", "--seq", "8", "--out", str(out)])
    fsdp_smollm2.main()
    fsdp, ddp = (result["ranks"] for result in json.loads(out.read_text())["results"])
    assert {r["layers"] for r in fsdp} == {14} and {r["layers_equal_to_unsharded"] for r in fsdp} == {14}
    assert len({r["mask_digest"] for r in fsdp}) == 1 and fsdp[0]["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert max(r["tensor_mb"] for r in fsdp) < 0.7 * min(r["tensor_mb"] for r in ddp)  # shards: about half at 2 ranks
    assert all(r["peak_rss_mb"] >= r["runtime_rss_mb"] > 0 for r in fsdp + ddp)
