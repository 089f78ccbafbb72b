"""Under DistributedDataParallel the pruner works on the wrapped module: no ``module.`` prefixes anywhere."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel

import pruneaware as pa
from pruneaware.models import build_model

torch.set_num_threads(1)
INPUTS = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
TARGETS = torch.arange(8) % 10


@pytest.fixture
def single_process_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_ddp_wrapped_model_gets_unprefixed_names_and_its_state_resumes_unwrapped(single_process_group) -> None:
    torch.manual_seed(0)
    bare = build_model("resnet20", (3, 16, 16), 10)
    model = DistributedDataParallel(bare)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    recipe = pa.Recipe.from_dict({"structured": {"schedule": {"type": "one_shot", "sparsity": 0.5, "at": 1, "unit": "step"}}})
    pruner = pa.Pruner(model, optimizer, recipe, total_steps=4, example_inputs=INPUTS)
    for _ in range(2):
        loss = F.cross_entropy(pruner.model(INPUTS), TARGETS)  # the wrapper is rebuilt after channel removal
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    state = copy.deepcopy(pruner.state_dict())
    assert bare.stem[0].out_channels < 16, "channels were not removed"
    assert state["stages"]["channels"]["history"] and not any(name.startswith("module.") for name, *_ in state["stages"]["channels"]["history"])
    assert not any(name.startswith("module.") for name in state["masks"])
    assert not any(name.startswith("module.") for name in pruner.params)

    torch.manual_seed(0)
    fresh = build_model("resnet20", (3, 16, 16), 10)  # a single-process resume of the distributed run
    resumed = pa.Pruner(fresh, None, recipe, total_steps=4, example_inputs=INPUTS)
    resumed.load_state_dict(state)
    fresh.load_state_dict(bare.state_dict())
    assert torch.equal(fresh.eval()(INPUTS), bare.eval()(INPUTS))
    assert isinstance(pruner.model, DistributedDataParallel) and pruner.model is not model and pruner.model.module is bare
    with pytest.raises(pa.UsageError, match="stale"):
        model(INPUTS)
