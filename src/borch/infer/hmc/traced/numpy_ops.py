"""numpy implementations of common ATen operations, for replaying traced potentials.

A traced log density is mostly small elementwise operations and reductions; numpy
runs each in about a microsecond, torch in several. :mod:`borch.infer.hmc.traced.tracing` uses an
entry of :data:`NUMPY_OPS` for a node of a traced graph only after checking that it
reproduces torch's result at the traced point; everything else runs in torch. The
formulas are the numerically stable ones (``logaddexp`` for softplus and sigmoid), so
they hold far from the traced point too.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

aten = torch.ops.aten


def _add(a, b, alpha=1):
    return a + b if alpha == 1 else a + alpha * b


def _sub(a, b, alpha=1):
    return a - b if alpha == 1 else a - alpha * b


def _rsub(a, b, alpha=1):
    return b - a if alpha == 1 else b - alpha * a


def _pow(a, exponent):
    return a * a if exponent == 2 else np.power(a, exponent)


def _sum(x, dim=None, keepdim=False, dtype=None):
    if dtype is not None:
        return None  # unsupported: torch handles it
    axis = None if dim is None or len(dim) == 0 else tuple(dim)
    # np.add.reduce skips np.sum's dispatch layers (a few microseconds a call).
    return np.add.reduce(x, axis=axis, keepdims=keepdim)


def _mean(x, dim=None, keepdim=False, dtype=None):
    if dtype is not None:
        return None
    axis = None if dim is None or len(dim) == 0 else tuple(dim)
    return np.mean(x, axis=axis, keepdims=keepdim)


def _expand(x, size, implicit=False):
    x = np.asarray(x)
    lead = len(size) - x.ndim
    shape = [x.shape[i - lead] if s == -1 else s for i, s in enumerate(size)]
    return np.broadcast_to(x, shape)


def _squeeze_dims(x, dims):
    x = np.asarray(x)
    if isinstance(dims, int):
        dims = [dims]
    keep = tuple(d % max(x.ndim, 1) for d in dims if x.ndim and x.shape[d] == 1)
    return np.squeeze(x, keep) if keep else x


def _slice(x, dim=0, start=None, end=None, step=1):
    index = [slice(None)] * np.ndim(x)
    index[dim] = slice(start, end, step)
    return np.asarray(x)[tuple(index)]


def _split_with_sizes(x, sizes, dim=0):
    return np.split(x, np.cumsum(sizes)[:-1], axis=dim)


def _cat(tensors, dim=0):
    return np.concatenate([np.asarray(t) for t in tensors], axis=dim)


def _stack(tensors, dim=0):
    return np.stack([np.asarray(t) for t in tensors], axis=dim)


def _sigmoid(x):
    return np.exp(-np.logaddexp(0, -x))


def _softplus(x, beta=1, threshold=20):
    return np.logaddexp(0, x * beta) / beta


def _bce_with_logits(x, target, weight=None, pos_weight=None, reduction=1):
    softplus = np.logaddexp(0, -x)
    if pos_weight is None:
        loss = (1 - target) * x + softplus
    else:
        loss = (1 - target) * x + ((pos_weight - 1) * target + 1) * softplus
    if weight is not None:
        loss = loss * weight
    if reduction == 0:
        return loss
    return np.sum(loss) if reduction == 2 else np.mean(loss)


def _log_softmax(x, dim, half_to_float=False):
    return x - np.logaddexp.reduce(x, axis=dim, keepdims=True)


def _log_softmax_backward(grad, output, dim, input_dtype=None):
    return grad - np.exp(output) * np.sum(grad, axis=dim, keepdims=True)


def _to_copy(x, dtype=None, **kwargs):
    if any(value is not None for key, value in kwargs.items() if key != "layout"):
        return None
    if dtype is None:
        return np.array(x)
    return np.asarray(x).astype(torch.empty((), dtype=dtype).numpy().dtype)


def _clamp(x, min=None, max=None):
    return np.clip(x, min, max)


def _where(condition, a, b):
    return np.where(condition, a, b)


def _scipy_special(name: str) -> Callable | None:
    try:
        from scipy import special
    except ImportError:
        return None
    return getattr(special, name)


NUMPY_OPS: dict[Any, Callable] = {
    aten.add.Tensor: _add,
    aten.add.Scalar: _add,
    aten.sub.Tensor: _sub,
    aten.sub.Scalar: _sub,
    aten.rsub.Scalar: _rsub,
    aten.rsub.Tensor: _rsub,
    aten.mul.Tensor: np.multiply,
    aten.mul.Scalar: np.multiply,
    aten.div.Tensor: np.true_divide,
    aten.div.Scalar: np.true_divide,
    aten.neg.default: np.negative,
    aten.reciprocal.default: np.reciprocal,
    aten.pow.Tensor_Scalar: _pow,
    aten.pow.Tensor_Tensor: np.power,
    aten.pow.Scalar: np.power,
    aten.exp.default: np.exp,
    aten.expm1.default: np.expm1,
    aten.log.default: np.log,
    aten.log1p.default: np.log1p,
    aten.sqrt.default: np.sqrt,
    aten.rsqrt.default: lambda x: 1 / np.sqrt(x),
    aten.abs.default: np.abs,
    aten.sign.default: np.sign,
    aten.sin.default: np.sin,
    aten.cos.default: np.cos,
    aten.tanh.default: np.tanh,
    aten.floor.default: np.floor,
    aten.sigmoid.default: _sigmoid,
    aten.softplus.default: _softplus,
    aten.relu.default: lambda x: np.maximum(x, 0),
    aten.sigmoid_backward.default: lambda grad, out: grad * (1 - out) * out,
    aten.tanh_backward.default: lambda grad, out: grad * (1 - out * out),
    aten.maximum.default: np.maximum,
    aten.minimum.default: np.minimum,
    aten.clamp.default: _clamp,
    aten.clamp_min.default: lambda x, low: np.maximum(x, low),
    aten.clamp_max.default: lambda x, high: np.minimum(x, high),
    aten.where.self: _where,
    aten.ge.Scalar: np.greater_equal,
    aten.ge.Tensor: np.greater_equal,
    aten.gt.Scalar: np.greater,
    aten.gt.Tensor: np.greater,
    aten.le.Scalar: np.less_equal,
    aten.le.Tensor: np.less_equal,
    aten.lt.Scalar: np.less,
    aten.lt.Tensor: np.less,
    aten.eq.Scalar: np.equal,
    aten.eq.Tensor: np.equal,
    aten.ne.Scalar: np.not_equal,
    aten.ne.Tensor: np.not_equal,
    aten.logical_and.default: np.logical_and,
    aten.logical_or.default: np.logical_or,
    aten.logical_not.default: np.logical_not,
    aten.sum.default: _sum,
    aten.sum.dim_IntList: _sum,
    aten.mean.default: _mean,
    aten.mean.dim: _mean,
    aten.mv.default: np.matmul,
    aten.mm.default: np.matmul,
    aten.bmm.default: np.matmul,
    aten.dot.default: np.dot,
    aten.t.default: np.transpose,
    aten.transpose.int: np.swapaxes,
    aten.permute.default: np.transpose,
    aten.view.default: np.reshape,
    aten._unsafe_view.default: np.reshape,
    aten.reshape.default: np.reshape,
    aten.expand.default: _expand,
    aten.unsqueeze.default: np.expand_dims,
    aten.squeeze.dim: _squeeze_dims,
    aten.squeeze.dims: _squeeze_dims,
    aten.squeeze.default: np.squeeze,
    aten.slice.Tensor: _slice,
    aten.select.int: lambda x, dim, index: np.take(x, index, axis=dim),
    aten.split_with_sizes.default: _split_with_sizes,
    aten.cat.default: _cat,
    aten.stack.default: _stack,
    aten.binary_cross_entropy_with_logits.default: _bce_with_logits,
    aten._log_softmax.default: _log_softmax,
    aten._log_softmax_backward_data.default: _log_softmax_backward,
    aten._to_copy.default: _to_copy,
    aten.alias.default: lambda x: x,
    aten.detach.default: lambda x: x,
    aten.clone.default: lambda x, memory_format=None: np.array(x),
}

for _name, _special in (
    ("lgamma", "gammaln"),
    ("digamma", "digamma"),
    ("erf", "erf"),
    ("erfc", "erfc"),
):
    _function = _scipy_special(_special)
    if _function is not None:
        NUMPY_OPS[getattr(aten, _name).default] = _function


#: The names the expressions of :func:`inline` use, for the program's namespace.
INLINE_NAMESPACE: dict[str, Any] = {
    "add_reduce": np.add.reduce,
    "broadcast_to": np.broadcast_to,
}

#: The operations written as a Python operator (here and in the numba program).
OPERATORS = {
    aten.add.Tensor: "+",
    aten.add.Scalar: "+",
    aten.sub.Tensor: "-",
    aten.sub.Scalar: "-",
    aten.mul.Tensor: "*",
    aten.mul.Scalar: "*",
    aten.div.Tensor: "/",
    aten.div.Scalar: "/",
    aten.mv.default: "@",
    aten.mm.default: "@",
    aten.bmm.default: "@",
}
_RESHAPES = {aten.view.default, aten._unsafe_view.default, aten.reshape.default}


def inline(
    target: Any,
    args: tuple,
    kwargs: dict,
    render: Callable[[Any], str],
    shape: Callable[[Any], tuple[int, ...]],
) -> str | None:
    """A Python expression doing what ``NUMPY_OPS[target](*args, **kwargs)`` does, by
    the same numpy operations without the Python function around them (operators,
    slices, ``np.add.reduce``), so the same values; ``None`` where there is none.

    ``render`` spells an argument (a graph node or a literal) as Python; ``shape``
    gives the traced shape of a node, or of the result for ``None``. A result of
    shape ``()`` is a numpy scalar rather than a 0-d array: arithmetic on numpy
    scalars skips the ufunc machinery and rounds the same way.

    Example:
        >>> inline(aten.sub.Tensor, ("a", "b"), {}, str, lambda node: (3,))
        '(a - b)'
        >>> inline(aten.sum.dim_IntList, ("a", [1], True), {}, str, lambda node: ())
        'add_reduce(a, axis=(1,), keepdims=True)'
    """
    x = render(args[0]) if args else ""
    if target in OPERATORS:
        if kwargs.get("alpha", 1) != 1 or len(args) != 2:
            return None
        return f"({x} {OPERATORS[target]} {render(args[1])})"
    if target in (aten.rsub.Scalar, aten.rsub.Tensor):
        if kwargs.get("alpha", 1) != 1 or len(args) != 2:
            return None
        return f"({render(args[1])} - {x})"
    if target is aten.neg.default:
        return f"(-{x})"
    if target is aten.pow.Tensor_Scalar and not kwargs and _is_number(args[1], 2):
        return f"({x} * {x})"
    if target in (aten.sum.default, aten.sum.dim_IntList):
        if kwargs.get("dtype") is not None:
            return None
        dim = args[1] if len(args) > 1 else kwargs.get("dim")
        keepdim = args[2] if len(args) > 2 else kwargs.get("keepdim", False)
        axis = None if not dim else tuple(dim)
        return f"add_reduce({x}, axis={axis!r}, keepdims={bool(keepdim)!r})"
    if target in _RESHAPES and not kwargs:
        end = "[()]" if shape(None) == () else ""
        return f"{x}.reshape({tuple(args[1])!r}){end}"
    if target is aten.expand.default:
        return f"broadcast_to({x}, {shape(None)!r})"
    if target is aten.split_with_sizes.default and not kwargs:
        dim = (args[2] if len(args) > 2 else 0) % len(shape(args[0]))
        bounds = np.cumsum([0, *args[1]]).tolist()
        lead = ":, " * dim
        pieces = [f"{x}[{lead}{a}:{b}]" for a, b in itertools.pairwise(bounds)]
        return "(" + "".join(piece + ", " for piece in pieces) + ")"
    return None


def _is_number(value: Any, number: float) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and (value == number)
    )


def to_torch(value: Any) -> torch.Tensor:
    """A tensor for a numpy value (shares memory where numpy allows writing)."""
    array = np.asarray(value)
    if not array.flags.writeable:
        array = array.copy()
    return torch.from_numpy(array)


def matches(result: Any, expected: Any) -> bool:
    """Whether a numpy result reproduces torch's (shape, dtype, values within float
    rounding; NaNs and infinities in the same places)."""
    if isinstance(expected, (list, tuple)):
        return (
            isinstance(result, (list, tuple))
            and len(result) == len(expected)
            and all(matches(r, e) for r, e in zip(result, expected))
        )
    if not isinstance(expected, torch.Tensor) or result is None:
        return False
    result = np.asarray(result)
    reference = expected.detach().cpu().numpy()
    if result.shape != reference.shape or result.dtype != reference.dtype:
        return False
    if reference.dtype.kind not in "fc":
        return bool(np.array_equal(result, reference))
    tolerance = 1e-5 if reference.dtype == np.float32 else 1e-12
    return bool(
        np.allclose(result, reference, rtol=tolerance, atol=tolerance, equal_nan=True)
    )


__all__ = [
    "INLINE_NAMESPACE",
    "NUMPY_OPS",
    "OPERATORS",
    "inline",
    "matches",
    "to_torch",
]
