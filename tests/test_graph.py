"""Lazily computed tensors."""

import copy

import torch
from torch.distributions import constraints, transform_to

import borch


def test_transform_recomputes_after_in_place_change():
    log_scale = torch.nn.Parameter(torch.zeros(2))
    scale = borch.Transform(torch.exp, log_scale, arg_names=["log_scale"])
    assert torch.equal(scale.tensor, torch.ones(2))
    with torch.no_grad():
        log_scale.fill_(1.0)
    assert torch.allclose(scale.tensor, torch.full((2,), torch.e))


def test_transform_registers_parameters_and_modules():
    inner = borch.Transform(torch.exp, torch.nn.Parameter(torch.zeros(1)))
    outer = borch.Transform(torch.add, inner, torch.nn.Parameter(torch.ones(1)))
    assert sorted(dict(outer.named_parameters())) == ["arg0.arg0", "arg1"]
    assert torch.equal(outer.tensor, torch.full((1,), 2.0))
    assert len(outer.watched_tensors()) == 2


def test_transform_gradients_reach_parameters():
    param = torch.nn.Parameter(torch.tensor(0.5))
    graph = borch.Transform(torch.exp, param)
    (graph * 2).backward()
    assert torch.allclose(param.grad, 2 * torch.exp(torch.tensor(0.5)))
    # Evaluated afresh each time, so a second backward works without retain_graph.
    (graph * 3).backward()


def test_transform_moves_tensors_inside_torch_transforms():
    low, high = torch.tensor([0.0, 1.0]), torch.tensor([2.0, 5.0])
    transform = transform_to(constraints.interval(low, high))
    graph = borch.Transform(transform, torch.nn.Parameter(torch.zeros(2)))
    graph.double()
    value = graph.tensor
    assert value.dtype == torch.float64
    assert torch.allclose(value, (low + high).double() / 2)


def test_transform_checks_arg_names():
    import pytest

    with pytest.raises(ValueError, match="2 arg_names for 1 arguments"):
        borch.Transform(torch.exp, torch.zeros(1), arg_names=["a", "b"])


def test_graph_subclass_deepcopies_and_keeps_working():
    class Softplus(borch.Graph):
        def __init__(self):
            super().__init__()
            self.raw = torch.nn.Parameter(torch.zeros(3))

        def forward(self):
            return torch.nn.functional.softplus(self.raw)

    graph = Softplus()
    clone = copy.deepcopy(graph)
    assert torch.equal(clone.tensor, graph.tensor)
    assert clone.raw is not graph.raw
    assert graph.shape == (3,)
