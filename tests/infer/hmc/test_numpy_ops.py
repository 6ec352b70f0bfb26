"""The numpy implementations of ATen operations agree with torch, also far from any
traced point (the formulas must be the stable ones)."""

import numpy as np
import pytest
import torch

from borch.infer.hmc.traced.numpy_ops import NUMPY_OPS, matches, to_torch

aten = torch.ops.aten

#: Values from the far tails to zero, float32.
GRID = torch.tensor(
    [-200.0, -30.0, -5.0, -1.0, -1e-3, 0.0, 1e-3, 0.5, 3.0, 40.0, 300.0]
)
POSITIVE = GRID.abs() + 1e-3

UNARY = {
    aten.neg.default: GRID,
    aten.exp.default: GRID.clamp(max=80),
    aten.expm1.default: GRID.clamp(max=80),
    aten.log.default: POSITIVE,
    aten.log1p.default: POSITIVE,
    aten.sqrt.default: POSITIVE,
    aten.rsqrt.default: POSITIVE,
    aten.reciprocal.default: POSITIVE,
    aten.abs.default: GRID,
    aten.sign.default: GRID,
    aten.sin.default: GRID,
    aten.cos.default: GRID,
    aten.tanh.default: GRID,
    aten.floor.default: GRID,
    aten.sigmoid.default: GRID,
    aten.softplus.default: GRID,
    aten.relu.default: GRID,
}


@pytest.mark.parametrize("op", sorted(UNARY, key=str), ids=str)
def test_unary_operations_agree_with_torch_everywhere(op):
    values = UNARY[op]
    assert matches(NUMPY_OPS[op](values.numpy()), op(values))


@pytest.mark.parametrize("reduction", [0, 1, 2])
@pytest.mark.parametrize("weighted", [False, True])
def test_bce_with_logits_agrees_with_torch_in_the_tails(reduction, weighted):
    logits = GRID
    target = (torch.arange(len(GRID)) % 2).float()
    weight = torch.linspace(0.5, 2.0, len(GRID)) if weighted else None
    pos_weight = torch.full((len(GRID),), 3.0) if weighted else None
    expected = aten.binary_cross_entropy_with_logits.default(
        logits, target, weight, pos_weight, reduction
    )
    result = NUMPY_OPS[aten.binary_cross_entropy_with_logits.default](
        logits.numpy(),
        target.numpy(),
        None if weight is None else weight.numpy(),
        None if pos_weight is None else pos_weight.numpy(),
        reduction,
    )
    assert matches(result, expected)


_GENERATOR = torch.Generator().manual_seed(0)


def randn(*shape):
    return torch.randn(*shape, generator=_GENERATOR)


def rand(*shape):
    return torch.rand(*shape, generator=_GENERATOR)


CASES = [
    (aten.add.Tensor, (randn(3, 4), randn(4)), {"alpha": 2}),
    (aten.sub.Tensor, (randn(3, 4), 1.5), {}),
    (aten.rsub.Scalar, (randn(3), 2.0), {}),
    (aten.mul.Tensor, (randn(2, 1), randn(3)), {}),
    (aten.div.Tensor, (randn(3), rand(3) + 1), {}),
    (aten.pow.Tensor_Scalar, (rand(3) + 0.5, 2), {}),
    (aten.pow.Tensor_Scalar, (rand(3) + 0.5, -1.5), {}),
    (aten.sum.default, (randn(3, 4),), {}),
    (aten.sum.dim_IntList, (randn(3, 4), [1], True), {}),
    (aten.sum.dim_IntList, (randn(3, 4), []), {}),
    (aten.mean.dim, (randn(3, 4), [0]), {}),
    (aten.mv.default, (randn(5, 3), randn(3)), {}),
    (aten.mm.default, (randn(5, 3), randn(3, 2)), {}),
    (aten.t.default, (randn(5, 3),), {}),
    (aten.permute.default, (randn(2, 3, 4), [2, 0, 1]), {}),
    (aten.view.default, (randn(2, 3), [3, 2]), {}),
    (aten.expand.default, (randn(3, 1), [2, -1, 4]), {}),
    (aten.unsqueeze.default, (randn(3), -1), {}),
    (aten.squeeze.dim, (randn(3, 1), 1), {}),
    (aten.squeeze.dim, (randn(3, 2), 1), {}),
    (aten.slice.Tensor, (randn(5, 4), 1, 1, 3), {}),
    (aten.select.int, (randn(5, 4), 0, 2), {}),
    (aten.split_with_sizes.default, (randn(7), [3, 4]), {}),
    (aten.cat.default, ([randn(2), randn(3)],), {}),
    (aten.stack.default, ([randn(2), randn(2)], 1), {}),
    (aten.where.self, (randn(4) > 0, randn(4), randn(4)), {}),
    (aten.ge.Scalar, (randn(4), 0.0), {}),
    (aten.clamp.default, (randn(6), -0.5, 0.5), {}),
    (aten.clamp_min.default, (randn(6), 0.0), {}),
    (aten._log_softmax.default, (randn(3, 5), 1, False), {}),
    (aten._to_copy.default, (randn(3),), {"dtype": torch.float64}),
]


@pytest.mark.parametrize(("op", "args", "kwargs"), CASES, ids=lambda c: str(c)[:30])
def test_structural_operations_agree_with_torch(op, args, kwargs):
    expected = op(*args, **kwargs)
    numpy_args = torch.utils._pytree.tree_map(
        lambda v: v.numpy() if isinstance(v, torch.Tensor) else v, args
    )
    assert matches(NUMPY_OPS[op](*numpy_args, **kwargs), expected)


def test_log_softmax_backward_agrees_with_torch():
    x = torch.randn(3, 5, requires_grad=True)
    output = torch.log_softmax(x, 1)
    grad = torch.randn(3, 5)
    expected = aten._log_softmax_backward_data.default(grad, output, 1, torch.float32)
    result = NUMPY_OPS[aten._log_softmax_backward_data.default](
        grad.numpy(), output.detach().numpy(), 1, torch.float32
    )
    assert matches(result, expected)


def test_matches_is_strict_about_shape_dtype_and_values():
    expected = torch.tensor([1.0, 2.0])
    assert matches(np.array([1.0, 2.0], np.float32), expected)
    assert not matches(np.array([1.0, 2.0]), expected)  # float64
    assert not matches(np.array([[1.0, 2.0]], np.float32), expected)
    assert not matches(np.array([1.0, 2.1], np.float32), expected)
    assert not matches(None, expected)
    assert matches(np.array([np.nan], np.float32), torch.tensor([float("nan")]))


def test_to_torch_copies_read_only_arrays():
    view = np.broadcast_to(np.arange(3.0), (2, 3))
    tensor = to_torch(view)
    tensor[0, 0] = 5.0
    assert view[0, 0] == 0.0
