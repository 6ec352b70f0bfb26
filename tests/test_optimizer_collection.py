"""OptimizersCollection grows with the model."""

import pytest
import torch

import borch
from borch import distributions as dist


def test_parameters_created_later_are_added():
    model = borch.Module()
    optimizer = borch.OptimizersCollection(torch.optim.SGD, lr=0.1)
    with pytest.raises(RuntimeError, match="no parameters"):
        optimizer.step()
    model.a = dist.Normal(0.0, 1.0)
    borch.infer.vi_loss(**borch.pq_to_infer(model)).backward()
    optimizer.step(model.parameters())
    assert optimizer.num_parameters == 2
    model.b = dist.Normal(0.0, 1.0)
    borch.infer.vi_loss(**borch.pq_to_infer(model)).backward()
    optimizer.step(model.parameters())
    assert optimizer.num_parameters == 4
    assert len(optimizer.optimizer.param_groups) == 2
    optimizer.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_state_round_trip():
    model = borch.Module()
    model.a = dist.Normal(0.0, 1.0)
    optimizer = borch.OptimizersCollection(torch.optim.Adam, lr=0.1)
    borch.infer.vi_loss(**borch.pq_to_infer(model)).backward()
    optimizer.step(model.parameters())
    state = optimizer.state_dict()
    fresh = borch.OptimizersCollection(torch.optim.Adam, lr=0.1)
    with pytest.raises(RuntimeError, match="add the parameters"):
        fresh.load_state_dict(state)
    fresh.add_parameters(model.parameters())
    fresh.load_state_dict(state)
    assert fresh.state_dict()["state"].keys() == state["state"].keys()
