"""The simplified graph of a traced potential as one numba-compiled function.

The numpy replay of :mod:`borch.infer.hmc.traced.tracing` runs 40-70 numpy
operations per gradient on small arrays, about a microsecond of Python and ufunc
overhead each. Compiled with numba (an optional dependency, ``pip install
borch[fast]``), the same program runs as machine code, with no interpreter between
the operations. :func:`numba_source` writes the program when every operation it
needs has a numba form in :data:`EXPRESSIONS`, and returns ``None`` otherwise (the
numpy replay is used then). Values of shape ``()`` are numba scalars, every number
is written in the dtype torch computes in (numba would otherwise compute
``float32 * 2.0`` in float64), and the graph's tensor constants are arguments, not
compile-time constants, so the source depends only on the operations and shapes.

:func:`compile_source` compiles it; the source goes to a file in
:func:`cache_directory` named by its hash, so that numba's on-disk cache
(``cache=True``) serves the next process that traces the same model. Set
``BORCH_NUMBA=0`` to use the numpy replay even where numba is installed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import operator
import os
import pathlib
import sys
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.fx import Node

from borch.infer.hmc.traced import numpy_ops

aten = torch.ops.aten


def numba_enabled() -> bool:
    """Whether traced potentials are compiled with numba: numba is installed and
    the environment variable ``BORCH_NUMBA`` is not ``0`` (or ``false``, ``off``).

    Example:
        >>> import os
        >>> os.environ["BORCH_NUMBA"] = "0"
        >>> numba_enabled()
        False
        >>> del os.environ["BORCH_NUMBA"]
    """
    if os.environ.get("BORCH_NUMBA", "").strip().lower() in ("0", "false", "off"):
        return False
    return importlib.util.find_spec("numba") is not None


def cache_directory() -> pathlib.Path:
    """Where compiled programs are kept: ``$BORCH_CACHE_DIR/numba``, else
    ``$XDG_CACHE_HOME/borch/numba``, else ``~/.cache/borch/numba``."""
    root = os.environ.get("BORCH_CACHE_DIR")
    if root is None:
        base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
        root = pathlib.Path(base) / "borch"
    return pathlib.Path(root) / "numba"


class _Writer:
    """Spells the graph's values as Python for one program."""

    def __init__(self, values: dict, constant: dict, alias: dict) -> None:
        self.values, self.constant, self.alias = values, constant, alias
        self.names: dict[Node, str] = {}
        self.constants: list[np.ndarray] = []

    def value(self, node: Node) -> Any:
        return self.values[self.alias.get(node, node)]

    def shape(self, node: Node) -> tuple[int, ...]:
        return tuple(self.value(node).shape)

    def dtype(self, node: Node) -> np.dtype:
        return _numpy_dtype(self.value(node).dtype)

    def scalar(self, node: Any) -> bool:
        return not isinstance(node, Node) or self.shape(node) == ()

    def node(self, node: Node) -> str | None:
        node = self.alias.get(node, node)
        if node in self.names:
            return self.names[node]
        if not self.constant[node]:
            raise KeyError(node)
        value = self.values[node]
        if not isinstance(value, Tensor) or value.device.type != "cpu":
            return None
        if value.dim() == 0:
            name = literal(value.item(), _numpy_dtype(value.dtype))
        else:
            name = f"c{len(self.constants)}"
            self.constants.append(np.ascontiguousarray(value.detach().numpy()))
        self.names[node] = name
        return name

    def render(self, arg: Any, dtype: np.dtype) -> str | None:
        """A node or a number (as a number of ``dtype``) as Python."""
        if isinstance(arg, Node):
            return self.node(arg)
        if isinstance(arg, (bool, int, float)):
            return literal(arg, dtype)
        return None


def literal(number: float, dtype: np.dtype) -> str:
    """``number`` as a numba expression of ``dtype``.

    Example:
        >>> literal(2, np.dtype("float32")), literal(-math.inf, np.dtype("float64"))
        ('np.float32(2.0)', 'np.float64(-np.inf)')
    """
    if dtype.kind == "b":
        return repr(bool(number))
    if dtype.kind in "iu":
        if float(number) != int(number):
            raise ValueError(f"{number!r} is not an integer of {dtype}")
        return f"np.{dtype.name}({int(number)})"
    number = float(number)
    if math.isnan(number):
        text = "np.nan"
    elif math.isinf(number):
        text = "np.inf" if number > 0 else "-np.inf"
    else:
        text = repr(number)
    return f"np.{dtype.name}({text})"


def _numpy_dtype(dtype: torch.dtype) -> np.dtype:
    return torch.empty((), dtype=dtype).numpy().dtype


_Expression = Callable[[Node, _Writer], str | None]
#: The numba form of each supported ATen operation: ``(node, writer) -> source``
#: (``None`` where this use of the operation has none).
EXPRESSIONS: dict[Any, _Expression] = {}


def _register(*targets: Any) -> Callable[[_Expression], _Expression]:
    def register(function: _Expression) -> _Expression:
        for target in targets:
            EXPRESSIONS[target] = function
        return function

    return register


def _number_dtype(node: Node, w: _Writer) -> np.dtype | None:
    """The dtype torch computes ``node`` in (where its numbers take it), if floating
    or boolean; ``None`` for integer arithmetic, which is not compiled."""
    inputs = [a for a in node.args if isinstance(a, Node)]
    dtypes = [w.dtype(a) for a in inputs if w.dtype(a).kind == "f"]
    out = w.dtype(node)
    if out.kind == "f":
        return out
    if out.kind == "b" and (dtypes or all(w.dtype(a).kind == "b" for a in inputs)):
        return dtypes[0] if dtypes else out
    return None


def _args(node: Node, w: _Writer, count: int | None = None) -> list[str] | None:
    dtype = _number_dtype(node, w)
    if dtype is None:
        return None
    args = node.args if count is None else node.args[:count]
    rendered = [w.render(a, dtype) for a in args]
    return None if any(r is None for r in rendered) else rendered


_OPERATORS = {
    **{t: op for t, op in numpy_ops.OPERATORS.items() if op != "@"},
    aten.ge.Scalar: ">=",
    aten.ge.Tensor: ">=",
    aten.gt.Scalar: ">",
    aten.gt.Tensor: ">",
    aten.le.Scalar: "<=",
    aten.le.Tensor: "<=",
    aten.lt.Scalar: "<",
    aten.lt.Tensor: "<",
    aten.eq.Scalar: "==",
    aten.eq.Tensor: "==",
    aten.ne.Scalar: "!=",
    aten.ne.Tensor: "!=",
}


@_register(*_OPERATORS)
def _operator(node: Node, w: _Writer) -> str | None:
    args = _args(node, w, 2)
    if args is None or len(node.args) != 2 or set(node.kwargs) - {"alpha"}:
        return None
    a, b = args
    alpha = node.kwargs.get("alpha", 1)
    if alpha != 1:
        b = f"{w.render(alpha, _number_dtype(node, w))} * {b}"
    if node.target in (aten.div.Tensor, aten.div.Scalar) and w.dtype(node).kind != "f":
        return None
    return f"({a} {_OPERATORS[node.target]} {b})"


@_register(aten.rsub.Scalar, aten.rsub.Tensor)
def _rsub(node: Node, w: _Writer) -> str | None:
    args = _args(node, w, 2)
    if args is None or set(node.kwargs) - {"alpha"}:
        return None
    a, b = args
    alpha = node.kwargs.get("alpha", 1)
    if alpha != 1:
        a = f"{w.render(alpha, _number_dtype(node, w))} * {a}"
    return f"({b} - {a})"


def _elementwise(template: str) -> _Expression:
    """An operation written by ``template`` over its rendered positional arguments
    (``{0}``, ``{1}``, ...; ``{one}`` is 1 in the node's dtype, ``{dtype}`` its
    name), for floating results."""

    def expression(node: Node, w: _Writer) -> str | None:
        args = _args(node, w)
        if args is None or node.kwargs or w.dtype(node).kind not in "fb":
            return None
        dtype = _number_dtype(node, w)
        return template.format(*args, one=literal(1, dtype), dtype=dtype.name)

    return expression


for _target, _template in {
    aten.neg.default: "(-{0})",
    aten.reciprocal.default: "({one} / {0})",
    aten.pow.Tensor_Tensor: "({0} ** {1})",
    aten.pow.Scalar: "({0} ** {1})",
    aten.exp.default: "np.exp({0})",
    aten.expm1.default: "np.expm1({0})",
    aten.log.default: "np.log({0})",
    aten.log1p.default: "np.log1p({0})",
    aten.sqrt.default: "np.sqrt({0})",
    aten.rsqrt.default: "({one} / np.sqrt({0}))",
    aten.abs.default: "np.abs({0})",
    aten.sign.default: "np.sign({0})",
    aten.sgn.default: "np.sign({0})",  # sign, for real numbers
    aten.sin.default: "np.sin({0})",
    aten.cos.default: "np.cos({0})",
    aten.tanh.default: "np.tanh({0})",
    aten.floor.default: "np.floor({0})",
    aten.sigmoid_backward.default: "({0} * ({one} - {1}) * {1})",
    aten.tanh_backward.default: "({0} * ({one} - {1} * {1}))",
    aten.maximum.default: "np.maximum({0}, {1})",
    aten.minimum.default: "np.minimum({0}, {1})",
    aten.clamp_min.default: "np.maximum({0}, {1})",
    aten.clamp_max.default: "np.minimum({0}, {1})",
    aten.relu.default: "np.maximum({0}, np.{dtype}(0))",
    aten.logical_and.default: "np.logical_and({0}, {1})",
    aten.logical_or.default: "np.logical_or({0}, {1})",
    aten.logical_not.default: "np.logical_not({0})",
}.items():
    EXPRESSIONS[_target] = _elementwise(_template)


@_register(aten.pow.Tensor_Scalar)
def _pow(node: Node, w: _Writer) -> str | None:
    args = _args(node, w)
    if args is None or node.kwargs:
        return None
    if node.args[1] == 2 and not isinstance(node.args[1], bool):
        return f"({args[0]} * {args[0]})"
    return f"({args[0]} ** {args[1]})"


@_register(aten.clamp.default)
def _clamp(node: Node, w: _Writer) -> str | None:
    args = _args(node, w)
    if args is None or node.kwargs:
        return None
    out = args[0]
    if len(args) > 1 and node.args[1] is not None:
        out = f"np.maximum({out}, {args[1]})"
    if len(args) > 2 and node.args[2] is not None:
        out = f"np.minimum({out}, {args[2]})"
    return out


@_register(aten.where.self)
def _where(node: Node, w: _Writer) -> str | None:
    args = _args(node, w)
    if args is None:
        return None
    condition, a, b = args
    if w.scalar(node):
        return f"({a} if {condition} else {b})"
    if w.scalar(node.args[0]):
        return None
    # numba's np.where needs both branches of the result's dtype
    return f"np.where({condition}, {a}, {b})"


def _kernel(name: str) -> _Expression:
    """A function of :mod:`~borch.infer.hmc.traced.numba_kernels`: ``name_scalar``
    for a scalar (its result cast to the node's dtype: the kernels may compute in
    float64), ``name`` for an array."""

    def expression(node: Node, w: _Writer) -> str | None:
        args = _args(node, w)
        if args is None or len(args) != 1 or node.kwargs:
            return None
        if w.dtype(node).kind != "f":
            return None
        if w.scalar(node):
            return f"np.{w.dtype(node).name}({name}_scalar({args[0]}))"
        return f"{name}({args[0]})"

    return expression


for _name in ("sigmoid", "lgamma", "digamma", "erf", "erfc"):
    EXPRESSIONS[getattr(aten, _name).default] = _kernel(_name)


@_register(aten.softplus.default)
def _softplus(node: Node, w: _Writer) -> str | None:
    args = _args(node, w)
    if args is None or node.kwargs or len(args) > 3:
        return None
    dtype = w.dtype(node)
    beta, threshold = (args + [literal(1, dtype), literal(20, dtype)][len(args) - 1 :])[
        1:
    ]
    if w.scalar(node):
        return f"np.{dtype.name}(softplus_scalar({args[0]}, {beta}, {threshold}))"
    return f"softplus({args[0]}, {beta}, {threshold})"


@_register(aten.binary_cross_entropy_with_logits.default)
def _bce_with_logits(node: Node, w: _Writer) -> str | None:
    args = _args(node, w, 2)
    options = dict(zip(("weight", "pos_weight", "reduction"), node.args[2:]))
    options |= node.kwargs
    if args is None or w.dtype(node).kind != "f" or w.scalar(node.args[0]):
        return None
    if options.get("weight") is not None or options.get("pos_weight") is not None:
        return None
    shape = w.shape(node.args[0])
    if shape != w.shape(node.args[1]):
        return None
    loss = f"bce_with_logits({args[0]}, {args[1]})"
    reduction = options.get("reduction", 1)
    if reduction == 0:
        return loss
    if reduction == 2:
        return f"np.sum({loss})"
    if reduction == 1:
        return f"(np.sum({loss}) / {literal(math.prod(shape), w.dtype(node))})"
    return None


def _reduce(node: Node, w: _Writer, mean: bool) -> str | None:
    if node.kwargs.get("dtype") is not None or w.dtype(node).kind != "f":
        return None
    (x,) = _args(node, w, 1) or (None,)
    if x is None:
        return None
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    keepdim = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
    shape = w.shape(node.args[0])
    if not shape:
        return x
    ndim = len(shape)
    dims = sorted({d % ndim for d in dim}) if dim else list(range(ndim))
    count = math.prod(shape[d] for d in dims)
    if len(dims) == ndim:
        total = f"np.sum({x})"
    elif len(dims) == 1:
        total = f"np.sum({x}, axis={dims[0]})"
    else:
        return None
    if mean:
        total = f"({total} / {literal(count, w.dtype(node))})"
    out = w.shape(node)
    if keepdim and out != ():
        if len(dims) == ndim:
            return f"np.full({out!r}, {total})"
        return f"{total}.reshape({out!r})"
    return total


EXPRESSIONS[aten.sum.default] = EXPRESSIONS[aten.sum.dim_IntList] = lambda node, w: (
    _reduce(node, w, mean=False)
)
EXPRESSIONS[aten.mean.default] = EXPRESSIONS[aten.mean.dim] = lambda node, w: _reduce(
    node, w, mean=True
)


def _contiguous(node: Node, w: _Writer) -> str | None:
    """The rendered node, made C-contiguous unless it is a constant (an argument,
    contiguous already)."""
    text = w.node(node)
    if text is None or w.constant[w.alias.get(node, node)]:
        return text
    return f"np.ascontiguousarray({text})"


@_register(aten.mv.default, aten.mm.default, aten.dot.default)
def _matmul(node: Node, w: _Writer) -> str | None:
    if w.dtype(node).kind != "f" or node.kwargs:
        return None
    a, b = (_contiguous(arg, w) for arg in node.args)
    if a is None or b is None:
        return None
    return f"np.dot({a}, {b})" if node.target is aten.dot.default else f"({a} @ {b})"


@_register(
    aten.view.default,
    aten._unsafe_view.default,
    aten.reshape.default,
    aten.unsqueeze.default,
    aten.squeeze.dim,
    aten.squeeze.dims,
    aten.squeeze.default,
    aten.expand.default,
)
def _reshape(node: Node, w: _Writer) -> str | None:
    """Any change of shape, to the traced shape of the result."""
    source = node.args[0]
    x = w.node(source)
    if x is None:
        return None
    before, after = w.shape(source), w.shape(node)
    if node.target is aten.expand.default and math.prod(before) != math.prod(after):
        if w.scalar(source):
            return f"np.full({after!r}, {x})"
        return f"np.broadcast_to({x}, {after!r})"
    if after == ():
        return f"{x}[{', '.join(['0'] * len(before))}]" if before else x
    if before == ():
        return f"np.full({after!r}, {x})"
    return f"{_contiguous(source, w)}.reshape({after!r})"


@_register(aten.t.default, aten.transpose.int, aten.permute.default)
def _transpose(node: Node, w: _Writer) -> str | None:
    x = w.node(node.args[0])
    ndim = len(w.shape(node.args[0]))
    if x is None or ndim < 2 or node.kwargs:
        return None
    if node.target is aten.t.default:
        return f"{x}.T"
    if node.target is aten.transpose.int:
        return f"np.swapaxes({x}, {node.args[1] % ndim}, {node.args[2] % ndim})"
    axes = tuple(d % ndim for d in node.args[1])
    return f"np.transpose({x}, {axes!r})"


def _index(shape: tuple[int, ...], dim: int, item: str) -> str:
    parts = [":"] * len(shape)
    parts[dim % len(shape)] = item
    return ", ".join(parts)


@_register(aten.slice.Tensor)
def _slice(node: Node, w: _Writer) -> str | None:
    x = w.node(node.args[0])
    shape = w.shape(node.args[0])
    if x is None or node.kwargs or not shape:
        return None
    dim, start, end, step = (
        list(node.args[1:]) + [0, None, None, 1][len(node.args) - 1 :]
    )[:4]
    start, end, step = slice(start, end, step).indices(shape[dim % len(shape)])
    return f"{x}[{_index(shape, dim, f'{start}:{end}:{step}')}]"


@_register(aten.select.int)
def _select(node: Node, w: _Writer) -> str | None:
    x = w.node(node.args[0])
    shape = w.shape(node.args[0])
    if x is None or node.kwargs:
        return None
    dim, index = node.args[1], node.args[2]
    index %= shape[dim % len(shape)]
    return f"{x}[{_index(shape, dim, str(index))}]"


@_register(aten.flip.default)
def _flip(node: Node, w: _Writer) -> str | None:
    x = w.node(node.args[0])
    shape = w.shape(node.args[0])
    if x is None or node.kwargs or not shape:
        return None
    parts = [":"] * len(shape)
    for dim in node.args[1]:
        parts[dim % len(shape)] = "::-1"
    return f"{x}[{', '.join(parts)}]"


def _embed(node: Node, w: _Writer, grad: str, start: int, stop: int) -> str | None:
    """``grad`` placed at ``start:stop`` along ``dim`` of zeros of ``input_sizes``
    (the arguments after the gradient of a ``slice``/``select`` backward)."""
    sizes, dim = tuple(node.args[1]), node.args[2] % len(node.args[1])
    dtype = w.dtype(node).name
    pieces = []
    for low, high in ((0, start), (None, None), (stop, sizes[dim])):
        if low is None:
            pieces.append(grad)
        elif high > low:
            shape = (*sizes[:dim], high - low, *sizes[dim + 1 :])
            pieces.append(f"np.zeros({shape!r}, np.{dtype})")
    items = "".join(piece + ", " for piece in pieces)
    return f"np.concatenate(({items}), axis={dim})"


@_register(aten.slice_backward.default)
def _slice_backward(node: Node, w: _Writer) -> str | None:
    grad = w.node(node.args[0])
    if grad is None or node.kwargs or len(node.args) != 6 or node.args[5] != 1:
        return None
    sizes, dim, start, end = node.args[1:5]
    start, end, _ = slice(start, end).indices(sizes[dim % len(sizes)])
    return _embed(node, w, grad, start, end)


@_register(aten.select_backward.default)
def _select_backward(node: Node, w: _Writer) -> str | None:
    grad = w.node(node.args[0])
    if grad is None or node.kwargs:
        return None
    sizes, dim, index = node.args[1:4]
    dim %= len(sizes)
    index %= sizes[dim]
    shape = (*sizes[:dim], 1, *sizes[dim + 1 :])
    if w.scalar(node.args[0]):
        grad = f"np.full({shape!r}, {grad})"
    else:
        grad = f"{_contiguous(node.args[0], w)}.reshape({shape!r})"
    return _embed(node, w, grad, index, index + 1)


@_register(aten.threshold_backward.default)
def _threshold_backward(node: Node, w: _Writer) -> str | None:
    args = _args(node, w)
    if args is None or node.kwargs:
        return None
    grad, x, threshold = args
    zero = literal(0, w.dtype(node))
    if w.scalar(node):
        return f"({zero} if {x} <= {threshold} else {grad})"
    return f"np.where({x} <= {threshold}, {zero}, {grad})"


@_register(aten.softplus_backward.default)
def _softplus_backward(node: Node, w: _Writer) -> str | None:
    args = _args(node, w)
    if args is None or node.kwargs or len(args) != 4:
        return None
    grad, x, beta, threshold = args
    if w.scalar(node):
        slope = f"np.{w.dtype(node).name}(sigmoid_scalar({x} * {beta}))"
        return f"({grad} if {x} * {beta} > {threshold} else {grad} * {slope})"
    return (
        f"np.where({x} * {beta} > {threshold}, {grad}, {grad} * sigmoid({x} * {beta}))"
    )


@_register(aten.split_with_sizes.default)
def _split(node: Node, w: _Writer) -> str | None:
    x = w.node(node.args[0])
    shape = w.shape(node.args[0])
    if x is None or node.kwargs:
        return None
    dim = node.args[2] if len(node.args) > 2 else 0
    pieces, start = [], 0
    for size in node.args[1]:
        pieces.append(f"{x}[{_index(shape, dim, f'{start}:{start + size}')}]")
        start += size
    return "(" + "".join(piece + ", " for piece in pieces) + ")"


@_register(aten.cat.default, aten.stack.default)
def _join(node: Node, w: _Writer) -> str | None:
    parts = [w.node(part) for part in node.args[0]]
    if any(p is None for p in parts) or node.kwargs:
        return None
    if any(w.scalar(part) for part in node.args[0]):
        return None
    if any(w.dtype(part) != w.dtype(node) for part in node.args[0]):
        return None
    dim = node.args[1] if len(node.args) > 1 else 0
    dim %= len(w.shape(node))
    function = "concatenate" if node.target is aten.cat.default else "stack"
    items = "".join(p + ", " for p in parts)
    return f"np.{function}(({items}), axis={dim})"


@_register(aten._to_copy.default)
def _to_copy(node: Node, w: _Writer) -> str | None:
    x = w.node(node.args[0])
    if x is None or len(node.args) > 1:
        return None
    for key, value in node.kwargs.items():
        on_cpu = key == "device" and torch.device(value).type == "cpu"
        if value is not None and key not in ("dtype", "layout") and not on_cpu:
            return None
    dtype = w.dtype(node)
    if dtype == w.dtype(node.args[0]):
        return x
    if dtype.kind not in "fb":
        return None
    return f"np.{dtype.name}({x})" if w.scalar(node) else f"{x}.astype(np.{dtype.name})"


@_register(aten.alias.default, aten.detach.default, aten.clone.default)
def _identity(node: Node, w: _Writer) -> str | None:
    return w.node(node.args[0])


def numba_source(
    nodes: list[Node],
    values: dict,
    constant: dict,
    alias: dict[Node, Node],
    needed: set[Node],
) -> tuple[str, list[np.ndarray]] | None:
    """The numba program for the nodes of a simplified graph (the output needs
    ``needed``; ``alias`` maps a node to the one it returns unchanged) and the
    constants it takes after the position; ``None`` if an operation it needs has no
    form in :data:`EXPRESSIONS` here.

    The program's signature is ``program(position, c0, c1, ...) -> (energy,
    gradient)``.
    """
    w = _Writer(values, constant, alias)
    lines = []
    for index, node in enumerate(nodes):
        if node.op == "placeholder":
            if node is not nodes[0]:
                return None
            w.names[node] = "position"
        elif node not in needed or node in alias or constant[node]:
            continue
        elif node.op == "call_function":
            if node.target is operator.getitem:
                source = w.node(node.args[0])
                expression = None if source is None else f"{source}[{node.args[1]!r}]"
            elif node.target in EXPRESSIONS:
                try:
                    expression = EXPRESSIONS[node.target](node, w)
                except (TypeError, ValueError, IndexError, KeyError):
                    expression = None
            else:
                expression = None
            if expression is None:
                return None
            w.names[node] = f"v{index}"
            lines.append(f"    v{index} = {expression}")
        elif node.op == "output":
            energy, grad = node.args[0]
            if not isinstance(energy, Node) or not isinstance(grad, Node):
                return None
            energy, grad = w.node(energy), w.node(grad)
            if energy is None or grad is None:
                return None
            lines.append(f"    return {energy}, {grad}")
        else:
            return None
    arguments = "".join(f", c{i}" for i in range(len(w.constants)))
    source = (
        "import numpy as np\n\n"
        "from borch.infer.hmc.traced.numba_kernels import (\n"
        "    bce_with_logits, digamma, digamma_scalar, erf, erf_scalar, erfc,\n"
        "    erfc_scalar, lgamma, lgamma_scalar, sigmoid, sigmoid_scalar, softplus,\n"
        "    softplus_scalar,\n"
        ")\n\n\n"
        f"def program(position{arguments}):\n" + "\n".join(lines) + "\n"
    )
    return source, w.constants


#: The programs compiled in this process, by their module's name.
_COMPILED: dict[str, Callable] = {}


def compile_source(source: str) -> Callable:
    """The ``program`` of ``source`` compiled by numba (compiled on its first call),
    through numba's on-disk cache where :func:`cache_directory` is writable; one
    dispatcher per source in a process."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:24]
    name = f"borch_traced_{digest}"
    if name not in _COMPILED:
        _COMPILED[name] = _compile(source, name)
    return _COMPILED[name]


def _compile(source: str, name: str) -> Callable:
    import numba

    try:
        directory = cache_directory()
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{name}.py"
        if not path.exists():
            # written under another name and renamed, so that a process reading
            # it never sees half a file (and numba's stamp of it never changes)
            partial = directory / f"{name}.{os.getpid()}.tmp"
            partial.write_text(source)
            os.replace(partial, path)
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        # numba's cache finds the function's module by name when it loads
        sys.modules[name] = module
        spec.loader.exec_module(module)
        cache = True
    except OSError:
        module = type(sys)(name)
        exec(compile(source, f"<{name}>", "exec"), module.__dict__)
        cache = False
    # fastmath off: it would let LLVM reassociate sums and assume no NaN or inf,
    # and the program must round as the model's operations do (within
    # tracing.tolerance) and keep a non-finite energy non-finite (a divergence)
    return numba.njit(cache=cache, fastmath=False)(module.program)


def numba_program(source: str, constants: list[np.ndarray]) -> Callable:
    """``position -> (energy, gradient)`` from :func:`numba_source`'s program and
    constants, compiled at once (numba's warnings, e.g. on read-only arrays, are
    not the user's concern)."""
    compiled = compile_source(source)
    bound = tuple(constants)

    def program(position: np.ndarray) -> tuple[Any, np.ndarray]:
        flags = position.flags
        if not (flags.c_contiguous and flags.writeable):
            # another array type for numba: it would compile the program again
            position = position.copy()
        return compiled(position, *bound)

    program.source = source
    program.compiled = compiled
    return program


def compile_now(program: Callable, example: np.ndarray) -> None:
    """Compile ``program`` for ``example``'s type (and load or fill the cache)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program(example)


__all__ = [
    "EXPRESSIONS",
    "cache_directory",
    "compile_source",
    "literal",
    "numba_enabled",
    "numba_program",
    "numba_source",
]
