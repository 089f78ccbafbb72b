"""Combinations the stages make possible: channel removal with element or 2:4 pruning of what remains, and
GMP with an L1 penalty and QAT; each trained, checked and resumed bit-exactly from a mid-run checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import pruneaware as pa
from tests.golden.runs import STEPS, Case, Run, deterministic

CHANNELS = {"type": "cubic", "final": 0.3, "begin": 0.1, "end": 0.5, "every": 0.1}


def channels_and_elements() -> pa.Recipe:
    """30% of channels removed while a movement-scored ramp prunes 80% of the remaining weights (the two overlap)."""
    elements = {"type": "cubic", "final": 0.8, "begin": 0.2, "end": 0.7, "every": 0.1}
    return pa.Recipe.from_dict({"structured": {"schedule": CHANNELS}, "pruning": {"criterion": "movement", "schedule": elements}})


def channels_and_2_4() -> pa.Recipe:
    """30% of channels removed (in multiples of 4), then 2:4 on the remaining Linear layers."""
    nm = {"type": "one_shot", "sparsity": 0.5, "at": 0.6}
    return pa.Recipe.from_dict(
        {"scope": {"modules": ["Linear"]}, "structured": {"schedule": CHANNELS, "round_to": 4}, "pruning": {"granularity": "2:4", "schedule": nm}}
    )


CASES = [Case("channels+elements", channels_and_elements, checkpoint_at=14), Case("channels+2:4", channels_and_2_4, checkpoint_at=14)]


def finished(case: Case) -> tuple[Run, dict]:
    with deterministic():
        run = Run(case)
        return run, run.finish()


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_channel_removal_composes_with_element_masks_and_resumes_bit_exactly(case: Case) -> None:
    run, result = finished(case)
    assert [stage.name for stage in run.pruner.stages] == ["channels", "prune"]
    assert result["shapes"], "channels were removed"
    assert run.model.features[4].out_channels < 8
    masks = run.pruner.masks
    expected = 0.8 if case.name == "channels+elements" else 0.5
    assert masks.sparsity() == pytest.approx(expected, abs=0.01)
    for name, param in run.pruner.params.items():
        assert masks[name].shape == param.shape, name
        assert int((param != 0).sum()) <= int(masks[name].sum()), f"{name}: pruned weights are zero"
    if case.name == "channels+2:4":
        weight = run.model.classifier[0].weight.detach()
        assert int((weight.reshape(weight.shape[0], -1, 4) != 0).sum(-1).max()) <= 2, "at most 2 of every 4"
    with deterministic():
        interrupted = Run(case)
        interrupted.train_to(case.checkpoint_at)
        state = interrupted.checkpoint()
        assert state["pruner"]["stages"]["channels"]["history"], "the checkpoint is taken after a channel removal"
        resumed = Run(case)
        resumed.resume(state)
        again = resumed.finish()
    assert again["masks"] == result["masks"] and again["weights"] == result["weights"]


def test_element_stages_that_cannot_follow_channel_removal_are_refused_by_name() -> None:
    recipe = channels_and_elements().to_dict()
    recipe["pruning"]["rewind"] = {"to": 0}
    with pytest.raises(pa.ConfigError, match="stage 'rewind'") as caught:
        Run(Case("rewind", lambda: pa.Recipe.from_dict(recipe)))
    assert caught.value.field == "stages.rewind"
    l1 = {"structured": {"schedule": CHANNELS}, "regularizer": {"type": "l1", "strength": 1e-4, "proximal": True}}
    Run(Case("l1", lambda: pa.Recipe.from_dict(l1)))  # L1 keeps no per-weight state: it follows removals


@pytest.mark.slow
def test_gmp_with_l1_and_qat_trains_converts_and_resumes_bit_exactly(tmp_path: Path) -> None:
    pytest.importorskip("torchao")
    from pruneaware.job.run import prepare_run_directory, run_job
    from pruneaware.job.spec import RunSpec
    from tests.conftest import TINY_RUN
    from tests.test_job import Crash, crash_at

    gmp = {"schedule": {"type": "cubic", "final": 0.8, "begin": 0, "end": 40, "every": 10, "unit": "step"}}
    mapping = {**TINY_RUN, "pruning": gmp, "regularizer": {"type": "l1", "strength": 1e-4, "proximal": True},
               "quantization": {"qat": {"epochs": 2}}, "train": {**TINY_RUN["train"], "dense_baseline": False}}
    spec = RunSpec.from_mapping(mapping)
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    for folder in (straight, interrupted):
        prepare_run_directory(spec, folder)
    expected = run_job(spec, straight, latency_batches=())
    assert expected.phases["int8"].summary.sparsity >= 0.8 - 1e-3
    with pytest.raises(Crash):
        run_job(spec, interrupted, callbacks=[crash_at(85)], latency_batches=())
    resumed = run_job(spec, interrupted, latency_batches=())
    weights, resumed_weights = torch.load(straight / "pruned_model.pt"), torch.load(interrupted / "pruned_model.pt")
    assert all(torch.equal(weights[name], resumed_weights[name]) for name in weights)
    assert resumed.phases["int8"].accuracy == expected.phases["int8"].accuracy
