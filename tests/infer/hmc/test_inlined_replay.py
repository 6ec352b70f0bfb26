"""The generated program with numpy operations written out as expressions
(``inline_numpy``) gives bitwise the values of the program that calls a function per
operation, and agrees with torch autograd; on every operation the inliner writes out
and on generated chains of them (hypothesis)."""

import re

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from borch.infer.hmc.traced.numpy_ops import inline
from borch.infer.hmc.traced.tracing import compile_graph, record_value_and_grad

aten = torch.ops.aten
WEIGHTS = torch.linspace(-1.0, 2.0, 12, dtype=torch.float64).reshape(4, 3)

#: A function of a 6-vector per operation ``inline`` writes out (with the
#: expression it should become, as a regular expression).
OPERATIONS = {
    "add": (lambda q: (q + q.flip(0)).exp().sum(), r"\+"),
    "add scalar": (lambda q: (q + 0.5).square().sum(), r"\(position \+ k\d+\)"),
    "sub": (lambda q: (q - q.exp()).sum(), r" - "),
    "rsub": (lambda q: (2.0 - q).exp().sum(), r"\(k\d+ - position\)"),
    "mul": (lambda q: (q * q.sin()).sum(), r" \* "),
    "div": (lambda q: (q / (q.exp() + 1)).sum(), r" / "),
    "neg": (lambda q: (-q).exp().sum(), r"\(-"),
    "square": (lambda q: q.pow(2).sum() * 1.5, r"\* v"),
    "sum over a dim": (
        lambda q: q.reshape(2, 3).exp().sum(1).square().sum(),
        r"add_reduce\(\w+, axis=\(1,\)",
    ),
    "sum keepdim": (
        lambda q: (q.reshape(2, 3).sum(0, keepdim=True) * q.reshape(2, 3)).sum(),
        r"keepdims=True",
    ),
    "scalar reshape": (lambda q: q[2:3].reshape(()).exp() * q.sum(), r"\[\(\)\]"),
    "expand": (lambda q: q[0].expand(5).sin().sum() + q.sum(), "broadcast_to"),
    "split": (
        lambda q: q.split([2, 4])[0].exp().sum() + q.split([2, 4])[1].square().sum(),
        r"position\[0:2\]",
    ),
    "split rows": (
        lambda q: sum(
            (part.exp() * i).sum()
            for i, part in enumerate(q.reshape(2, 3).split([1, 2], 1))
        ),
        r"\[:, 1:3\]",
    ),
    "matrix-vector": (
        lambda q: (WEIGHTS.float() @ q[:3]).sigmoid().sum() + q.sum(),
        " @ ",
    ),
    "matrix-matrix": (
        lambda q: (WEIGHTS.float() @ q.reshape(3, 2)).tanh().sum(),
        " @ ",
    ),
}


def programs(function, example):
    """The inlined and the function-per-operation program of one recorded graph."""
    graph = record_value_and_grad(function, example)
    inlined = compile_graph(graph, example, numpy_input=True)
    called = compile_graph(graph, example, numpy_input=True, inline_numpy=False)
    return inlined, called


def eager(function, position):
    position = torch.from_numpy(position).requires_grad_(True)
    value = function(position)
    (grad,) = torch.autograd.grad(value, position)
    return value.item(), grad.numpy()


def assert_same(function, inlined, called, points):
    for point in points:
        energy, grad = inlined(point)
        expected_energy, expected_grad = called(point)
        assert float(energy) == float(expected_energy)
        assert grad.dtype == expected_grad.dtype and grad.shape == point.shape
        np.testing.assert_array_equal(grad, expected_grad)
        reference_energy, reference_grad = eager(function, point)
        assert float(energy) == pytest.approx(reference_energy, rel=1e-5, abs=1e-6)
        np.testing.assert_allclose(grad, reference_grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_inlined_operations_give_the_called_values(name):
    function, expression = OPERATIONS[name]
    example = torch.linspace(-0.9, 1.3, 6)
    inlined, called = programs(function, example)
    assert re.search(expression, inlined.source), inlined.source
    rng = np.random.default_rng(0)
    points = [rng.uniform(-2, 2, 6).astype(np.float32) for _ in range(5)]
    assert_same(function, inlined, called, points)


def test_dead_values_are_released_and_scalar_constants_are_numpy_scalars():
    """Every intermediate is deleted after its last use; a shape-() constant is bound
    as a numpy scalar (arithmetic on it skips the ufunc machinery)."""
    inlined, _ = programs(
        lambda q: (q * torch.tensor(3.0)).exp().sum(),
        torch.ones(3, dtype=torch.float64),
    )
    body = inlined.source.splitlines()[1:-1]
    assigned = {line.split(" = ")[0].strip() for line in body if " = " in line}
    deleted = {name for line in body if "del " in line for name in line[8:].split(", ")}
    assert assigned - deleted <= set(
        re.findall(r"v\d+", inlined.source.splitlines()[-1])
    )
    constants = inlined.__globals__
    assert any(isinstance(value, np.floating) for value in constants.values())


def test_inline_leaves_what_it_cannot_write_out():
    """An ``alpha`` other than one, or a sum with a dtype, stays a function call."""
    shape = lambda node: (3,)  # noqa: E731
    assert inline(aten.add.Tensor, ("a", "b"), {"alpha": 2}, str, shape) is None
    assert (
        inline(aten.sum.default, ("a",), {"dtype": torch.float64}, str, shape) is None
    )
    assert inline(aten.exp.default, ("a",), {}, str, shape) is None


ELEMENTWISE = {
    "exp": torch.exp,
    "neg": torch.neg,
    "square": torch.square,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "scale": lambda x: 2.5 * x,
    "shift": lambda x: x - 0.75,
    "rsub": lambda x: 1.0 - x,
    "halve": lambda x: x / 2.0,
    "softplus": torch.nn.functional.softplus,
}
COMBINE = {
    "add": torch.add,
    "mul": torch.mul,
    "sub": torch.sub,
    "div": lambda a, b: a / (1.0 + b.square()),
}
REDUCE = {
    "sum": lambda x: x.sum(),
    "rows": lambda x: x.reshape(2, 4).sum(1).square().sum(),
    "split": lambda x: x.split([3, 5])[0].sum() * x.split([3, 5])[1].sum(),
    "first": lambda x: x[0].reshape(()) * x.sum(),
}


def chain(left, right, combine, reduce):
    """The function the operations named by the strategies below make."""

    def function(q):
        a, b = q, q.flip(0)
        for name in left:
            a = ELEMENTWISE[name](a)
        for name in right:
            b = ELEMENTWISE[name](b)
        return REDUCE[reduce](COMBINE[combine](a, b))

    return function


#: The strategies of the generated chains (the numba program's tests use them too).
CHAINS = {
    "left": st.lists(st.sampled_from(sorted(ELEMENTWISE)), min_size=1, max_size=4),
    "right": st.lists(st.sampled_from(sorted(ELEMENTWISE)), max_size=3),
    "combine": st.sampled_from(sorted(COMBINE)),
    "reduce": st.sampled_from(sorted(REDUCE)),
    "dtype": st.sampled_from([torch.float32, torch.float64]),
    "seed": st.integers(0, 2**16),
}


@settings(
    max_examples=25,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(**CHAINS)
def test_generated_chains_give_the_called_values(
    left, right, combine, reduce, dtype, seed
):
    function = chain(left, right, combine, reduce)
    example = torch.linspace(-1.0, 1.0, 8, dtype=dtype)
    inlined, called = programs(function, example)
    rng = np.random.default_rng(seed)
    points = [rng.uniform(-1.5, 1.5, 8).astype(example.numpy().dtype) for _ in range(3)]
    assert_same(function, inlined, called, points)
