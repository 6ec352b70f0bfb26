"""Random variables and graphs act as their tensor in torch code."""

import operator

import numpy as np
import pytest
import torch

import borch
from borch import distributions as dist

BINARY = [
    operator.add,
    operator.sub,
    operator.mul,
    operator.truediv,
    operator.pow,
    operator.lt,
    operator.le,
    operator.gt,
    operator.ge,
    operator.eq,
    operator.ne,
]


@pytest.mark.parametrize("op", BINARY)
def test_binary_operators_both_ways(op):
    rv = dist.Normal(torch.ones(3), 1.0)
    rv.tensor = torch.tensor([1.0, 2.0, 3.0])
    other = torch.tensor([2.0, 2.0, 2.0])
    assert torch.equal(op(rv, other), op(rv.tensor, other))
    assert torch.equal(op(other, rv), op(other, rv.tensor))
    assert torch.equal(op(rv, 2.0), op(rv.tensor, 2.0))
    assert torch.equal(op(rv, rv), op(rv.tensor, rv.tensor))


def test_matmul_unary_and_torch_functions():
    rv = dist.Normal(torch.zeros(2, 2), 1.0)
    x = torch.randn(3, 2)
    assert torch.equal(x @ rv, x @ rv.tensor)
    assert torch.equal(rv @ x.T, rv.tensor @ x.T)
    assert torch.equal(-rv, -rv.tensor)
    assert torch.equal(abs(rv), rv.tensor.abs())
    assert torch.equal(torch.exp(rv), rv.tensor.exp())
    assert torch.equal(torch.stack([rv, rv]), torch.stack([rv.tensor, rv.tensor]))
    assert torch.equal(torch.nn.functional.relu(rv), rv.tensor.relu())
    assert torch.equal(torch.cat([rv, x]), torch.cat([rv.tensor, x]))


def test_tensor_methods_and_properties_are_the_values():
    rv = dist.Normal(torch.zeros(4), 1.0)
    value = rv.tensor
    assert torch.equal(rv.mean(), value.mean())  # tensor meaning, not the moment
    assert torch.equal(rv.sum(0), value.sum(0))
    assert rv.shape == value.shape and rv.dtype == value.dtype
    assert rv.device == value.device
    assert torch.equal(rv[1:3], value[1:3])
    assert len(rv) == 4
    assert [float(v) for v in rv] == value.tolist()
    assert np.array_equal(np.asarray(rv), value.numpy())


def test_scalar_conversions_detach_and_hash_is_identity():
    loc = torch.nn.Parameter(torch.tensor(2.0))
    rv = dist.Delta(loc)
    assert float(rv) == 2.0
    assert int(rv) == 2
    assert bool(rv)
    assert f"{rv:.1f}" == "2.0"
    assert len({rv, rv}) == 1


def test_unknown_attributes_raise_attribute_error():
    rv = dist.Normal(0.0, 1.0)
    with pytest.raises(AttributeError):
        rv.not_an_attribute  # noqa: B018
    with pytest.raises(AttributeError):
        rv._private_thing  # noqa: B018


def test_as_tensor_converts_everything():
    rv = dist.Normal(0.0, 1.0)
    assert borch.as_tensor(rv) is rv.tensor
    assert borch.as_tensor(np.array([1.0, 2.0])).dtype == torch.get_default_dtype()
    assert borch.as_tensor([1, 2]).dtype == torch.int64
    tensor = torch.ones(2)
    assert borch.as_tensor(tensor) is tensor
    assert borch.as_tensor(3.0, dtype=torch.float64).dtype == torch.float64
    graph = borch.Transform(torch.exp, torch.zeros(2))
    assert torch.equal(borch.as_tensor(graph), torch.ones(2))
