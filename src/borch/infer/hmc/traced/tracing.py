"""Record a potential's value and gradient once, replay them as straight-line code.

Running a borch model builds modules, distributions and an autograd graph on every
call; for a fixed model the torch operations are the same each time. Tracing them with
``torch.fx``'s ``make_fx`` (forward and backward pass) gives a graph of ATen
operations; this module simplifies it (constants computed once, identities and dead
code dropped) and compiles it to a Python function that calls the operations directly.

Tracing refuses what it cannot replay faithfully: control flow that depends on tensor
values (``make_fx`` raises), in-place changes to the input or to captured tensors, and
results that differ from the eager potential at check points (:func:`disagreement`),
and torch versions outside :data:`TESTED_TORCH_VERSIONS` (the simplifications rely on
how ``make_fx`` records ATen graphs); callers then fall back to the eager potential.
Graphs that change their own intermediate tensors in place (some
``torch.distributions`` transforms do) are replayed as recorded, unsimplified.
"""

from __future__ import annotations

import logging
import math
import operator
import re
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.fx import GraphModule, Node
from torch.fx.experimental.proxy_tensor import make_fx
from torch.fx.node import map_arg
from torch.utils._pytree import tree_map

from borch.infer.hmc.potential import to_numpy
from borch.infer.hmc.traced import numba_program
from borch.infer.hmc.traced.numpy_ops import (
    INLINE_NAMESPACE,
    NUMPY_OPS,
    inline,
    matches,
    to_torch,
)
from borch.validation import validate_args

aten = torch.ops.aten
logger = logging.getLogger(__name__)

#: The torch versions ``(major, minor)`` tracing was tested on, both ends included;
#: widen it after the tests pass on another version.
TESTED_TORCH_VERSIONS = ((2, 13), (2, 13))

#: Operations whose result depends only on the shape of their tensor argument.
_SHAPE_ONLY = {aten.zeros_like.default, aten.ones_like.default, aten.full_like.default}
#: Operations that return their (first) argument when the shape is unchanged.
_SAME_SHAPE_IDENTITY = {
    aten.view.default,
    aten._unsafe_view.default,
    aten.reshape.default,
    aten.expand.default,
    aten.squeeze.dim,
    aten.squeeze.dims,
    aten.squeeze.default,
    aten.clone.default,
    aten.alias.default,
    aten.detach.default,
    aten.lift_fresh_copy.default,
    aten._to_copy.default,
    aten.contiguous.default,
}
_TIMES_ONE = {aten.mul.Tensor, aten.mul.Scalar, aten.div.Tensor, aten.div.Scalar}
_PLUS_ZERO = {aten.add.Tensor, aten.add.Scalar, aten.sub.Tensor, aten.sub.Scalar}


class TraceError(RuntimeError):
    """The potential cannot be replayed from a trace."""


class UntestedTorchError(TraceError):
    """Tracing is off because the installed torch is outside the tested versions."""


def check_torch_version(version: str | None = None) -> None:
    """Raise :class:`UntestedTorchError` if ``version`` (by default the installed
    ``torch.__version__``) is outside :data:`TESTED_TORCH_VERSIONS`.

    Example:
        >>> check_torch_version("2.13.0+cpu")
        >>> check_torch_version("2.2.1")
        Traceback (most recent call last):
        ...
        borch.infer.hmc.traced.tracing.UntestedTorchError: the traced potential was tested on torch 2.13, not on torch 2.2.1: ...
    """
    version = str(torch.__version__ if version is None else version)
    found = re.match(r"(\d+)\.(\d+)", version)
    low, high = TESTED_TORCH_VERSIONS
    if found is None or not low <= (int(found[1]), int(found[2])) <= high:
        tested = ".".join(map(str, low))
        if high != low:
            tested += " to " + ".".join(map(str, high))
        raise UntestedTorchError(
            f"the traced potential was tested on torch {tested}, not on torch "
            f"{version}: evaluating the model "
            "eagerly instead (correct, but slower). Pass trace=False to choose that "
            "without this warning."
        )


def tolerance(dtype: torch.dtype | np.dtype) -> float:
    """The relative agreement asked of a traced potential: ``sqrt(eps)`` of ``dtype``.

    The traced program and the model do the same operations in a possibly different
    order and grouping (numpy or torch kernels, folded constants), so they agree to
    rounding error, a modest multiple of ``eps``; a wrong trace (a branch taken
    differently, randomness) is wrong in the leading digits. Half the significant
    digits separates the two for any dtype.

    Example:
        >>> f"{tolerance(torch.float32):.2e}", f"{tolerance(np.float64):.2e}"
        ('3.45e-04', '1.49e-08')
    """
    if isinstance(dtype, torch.dtype):
        eps = torch.finfo(dtype).eps
    else:
        eps = float(np.finfo(dtype).eps)
    return math.sqrt(eps)


def disagreement(
    energy: float,
    grad: np.ndarray,
    expected_energy: float,
    expected_grad: np.ndarray,
    dtype: torch.dtype | np.dtype,
) -> str | None:
    """How a traced ``(energy, grad)`` differs from the eager one, or ``None`` if it
    agrees within :func:`tolerance` relative to ``max(1, magnitude)`` (energies are log
    densities: differences far below 1 do not change a sampler's decisions).

    Example:
        >>> g = np.array([1.0, -2.0])
        >>> disagreement(3.0, g, 3.0 + 1e-12, g, np.float64) is None
        True
        >>> disagreement(3.0, g, 3.5, g, np.float64)
        'energy 3 instead of 3.5'
    """
    if not (math.isfinite(energy) and math.isfinite(expected_energy)):
        if math.isfinite(energy) == math.isfinite(expected_energy):
            return None
        return f"energy {energy:.8g} instead of {expected_energy:.8g}"
    rtol = tolerance(dtype)
    if abs(energy - expected_energy) > rtol * max(1.0, abs(expected_energy)):
        return f"energy {energy:.8g} instead of {expected_energy:.8g}"
    grad = np.asarray(grad, dtype=np.float64)
    expected_grad = np.asarray(expected_grad, dtype=np.float64)
    scale = max(1.0, float(np.abs(expected_grad).max(initial=0.0)))
    error = np.abs(grad - expected_grad).max(initial=0.0)
    if not error <= rtol * scale:  # NaN included
        return f"gradient off by up to {error:.3g} (largest component {scale:.3g})"
    return None


def trace_value_and_grad(
    evaluate: Callable[[Tensor], Tensor], example: Tensor, numpy_input: bool = False
) -> Callable[[Any], tuple[Any, Any]]:
    """Compile ``position -> (evaluate(position), d evaluate / d position)``.

    ``evaluate`` maps a flat position to a scalar tensor. Validation is off while
    tracing (it reads tensor values); run ``evaluate`` once eagerly first to check the
    model. With ``numpy_input`` (CPU only) the program takes a numpy vector and
    returns the energy (a numpy or torch scalar) and a numpy gradient. Raises
    :class:`TraceError` if the trace cannot be replayed faithfully.

    Example:
        >>> import torch
        >>> program = trace_value_and_grad(lambda q: (q**2).sum() * 1.0, torch.ones(2))
        >>> program(torch.tensor([1.0, 2.0]))
        (tensor(5.), tensor([2., 4.]))
    """

    graph = record_value_and_grad(evaluate, example)
    return compile_graph(graph, example.detach(), numpy_input)


def record_value_and_grad(
    evaluate: Callable[[Tensor], Tensor], example: Tensor
) -> GraphModule:
    """The ATen graph of ``position -> (evaluate(position), gradient)``, recorded by
    ``make_fx`` at ``example`` with validation off; :class:`TraceError` if it cannot
    be recorded.

    Example:
        >>> import torch
        >>> graph = record_value_and_grad(lambda q: (q**2).sum(), torch.ones(2))
        >>> graph(torch.tensor([1.0, 2.0]))
        (tensor(5.), tensor([2., 4.]))
    """

    def value_and_grad(position: Tensor) -> tuple[Tensor, Tensor]:
        position = position.detach().requires_grad_(True)
        energy = evaluate(position)
        (grad,) = torch.autograd.grad(energy, position)
        return energy.detach(), grad

    default_validation = torch.distributions.Distribution._validate_args
    try:
        torch.distributions.Distribution.set_default_validate_args(False)
        with validate_args(False), torch.enable_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return make_fx(value_and_grad)(example.detach())
    except Exception as error:
        raise TraceError(f"the potential could not be traced: {error}") from error
    finally:
        torch.distributions.Distribution.set_default_validate_args(default_validation)


def compile_graph(
    graph_module: GraphModule,
    example: Tensor,
    numpy_input: bool = False,
    inline_numpy: bool = True,
    numba: bool = False,
) -> Callable[[Any], Any]:
    """Simplify a one-input graph of ATen operations and compile it to Python.

    With ``numpy_input`` the program takes a numpy vector and returns the energy and
    a numpy gradient (see :func:`_generate`); ``inline_numpy=False`` calls a function
    for every numpy operation instead of writing it out (the same values, slower; for
    comparison). With ``numba`` (and ``numpy_input``) the program is compiled by
    numba where every operation it needs has a numba form
    (:mod:`~borch.infer.hmc.traced.numba_program`), else it is the numpy replay; the
    program's ``backend`` attribute says which (``"numba"``, ``"numpy"``).
    """
    nodes = list(graph_module.graph.nodes)
    mutations = [
        node for node in nodes if node.op == "call_function" and _mutates(node.target)
    ]
    for node in mutations:
        _check_mutation(node)
    if mutations:
        # Values seen while evaluating would be those after later in-place changes,
        # so nothing is folded or substituted: every node is recomputed per call.
        values = {
            node: _attribute(graph_module, node.target).detach()
            for node in nodes
            if node.op == "get_attr"
        }
        constant = {node: node in values for node in nodes}
        return _generate(
            nodes,
            values,
            constant,
            {},
            roots=mutations,
            fast=False,
            numpy_input=numpy_input,
        )
    values = _evaluate(graph_module, nodes, example)
    constant = _constant_nodes(nodes)
    alias: dict[Node, Node] = {}
    for node in nodes:
        if node.op == "call_function" and not constant[node]:
            source = _identity_source(node, values, constant)
            if source is not None:
                alias[node] = alias.get(source, source)
    if numba and numpy_input:
        program = _numba_or_none(nodes, values, constant, alias, example)
        if program is not None:
            return program
    return _generate(
        nodes,
        values,
        constant,
        alias,
        numpy_input=numpy_input,
        inline_numpy=inline_numpy,
    )


def _numba_or_none(
    nodes: list[Node], values: dict, constant: dict, alias: dict, example: Tensor
) -> Callable[[Any], Any] | None:
    """The numba-compiled program, compiled for ``example``; ``None`` (logged) where
    an operation has no numba form or numba fails to compile it."""
    written = numba_program.numba_source(
        nodes, values, constant, alias, _needed(nodes, constant, alias, set())
    )
    if written is None:
        logger.info("the traced potential has operations numba cannot run")
        return None
    program = numba_program.numba_program(*written)
    try:
        numba_program.compile_now(program, example.numpy())
    except Exception as error:
        logger.info("numba could not compile the traced potential: %s", error)
        return None
    program.backend = "numba"
    return program


def _check_mutation(node: Node) -> None:
    """Refuse in-place changes to the input or captured tensors (or views of them)."""
    schema = node.target._schema
    for index, argument in enumerate(schema.arguments):
        if argument.alias_info is None or not argument.alias_info.is_write:
            continue
        if argument.kwarg_only or index >= len(node.args):
            target = node.kwargs.get(argument.name)
        else:
            target = node.args[index]
        base = target
        while isinstance(base, Node) and _is_view(base.target):
            base = base.args[0]
        if isinstance(base, Node) and base.op in ("placeholder", "get_attr"):
            raise TraceError(
                f"the potential changes a tensor it did not create in place "
                f"({node.target}); it cannot be replayed from a trace"
            )


def _is_view(target: Any) -> bool:
    schema = getattr(target, "_schema", None)
    if schema is None or not schema.returns:
        return False
    alias = schema.returns[0].alias_info
    return alias is not None and not alias.is_write


def _evaluate(graph_module: GraphModule, nodes: list[Node], example: Tensor) -> dict:
    values: dict[Node, Any] = {}
    for node in nodes:
        if node.op == "placeholder":
            values[node] = example
        elif node.op == "get_attr":
            values[node] = _attribute(graph_module, node.target).detach()
        elif node.op == "call_function":
            args = map_arg(node.args, values.__getitem__)
            kwargs = map_arg(node.kwargs, values.__getitem__)
            values[node] = node.target(*args, **kwargs)
        elif node.op == "output":
            values[node] = None
        else:
            raise TraceError(f"unexpected graph node {node.op} {node.target}")
    return values


def _attribute(module: torch.nn.Module, target: str) -> Any:
    for part in target.split("."):
        module = getattr(module, part)
    return module


def _mutates(target: Any) -> bool:
    schema = getattr(target, "_schema", None)
    return schema is not None and schema.is_mutable


def _random(target: Any) -> bool:
    return torch.Tag.nondeterministic_seeded in getattr(target, "tags", ())


def _constant_nodes(nodes: list[Node]) -> dict[Node, bool]:
    """Which nodes do not depend on the input (and are not random)."""
    constant: dict[Node, bool] = {}
    for node in nodes:
        if node.op == "get_attr":
            constant[node] = True
        elif node.op == "call_function" and not _random(node.target):
            inputs = node.all_input_nodes
            constant[node] = node.target in _SHAPE_ONLY or all(
                constant[n] for n in inputs
            )
        else:
            constant[node] = False
    return constant


def _identity_source(node: Node, values: dict, constant: dict) -> Node | None:
    """The input ``node`` merely returns (same shape, dtype and values), if any."""
    target, args = node.target, node.args
    out = values[node]
    if not isinstance(out, Tensor):
        return None

    def same_as(arg: Any) -> bool:
        if not isinstance(arg, Node):
            return False
        value = values[arg]
        return (
            isinstance(value, Tensor)
            and value.shape == out.shape
            and value.dtype == out.dtype
            and value.device == out.device
        )

    first = args[0] if args else None
    if target in _SAME_SHAPE_IDENTITY and same_as(first):
        return first
    if target is aten.t.default and same_as(first) and values[first].dim() <= 1:
        return first
    if target is aten.pow.Tensor_Scalar and args[1] == 1 and same_as(first):
        return first
    if target in _TIMES_ONE or target in _PLUS_ZERO:
        neutral = 1 if target in _TIMES_ONE else 0
        second = args[1] if len(args) > 1 else None
        if _equals(second, neutral, values, constant) and same_as(first):
            return first
        commutes = target in (aten.mul.Tensor, aten.add.Tensor)
        plain_add = node.kwargs.get("alpha", 1) == 1
        if commutes and plain_add and _equals(first, neutral, values, constant):
            return second if same_as(second) else None
    return None


def _equals(arg: Any, number: float, values: dict, constant: dict) -> bool:
    if isinstance(arg, (int, float)) and not isinstance(arg, bool):
        return arg == number
    if isinstance(arg, Node) and constant[arg]:
        value = values[arg]
        return (
            isinstance(value, Tensor)
            and value.numel() <= 1_000_000
            and bool((value == number).all())
        )
    return False


def _generate(
    nodes: list[Node],
    values: dict,
    constant: dict,
    alias: dict[Node, Node],
    roots: Iterable[Node] = (),
    fast: bool = True,
    numpy_input: bool = False,
    inline_numpy: bool = True,
) -> Callable[[Any], Any]:
    """Straight-line Python for the nodes the output (and ``roots``) need.

    Constant nodes become bound values. With ``fast``, operations run through
    :func:`_fast_callable`, else through their ATen operator. With ``numpy_input``
    the program takes and returns numpy arrays and, where ``fast``, runs each
    operation that :data:`NUMPY_OPS` reproduces in numpy, converting values between
    numpy and torch where the two meet; with ``inline_numpy`` those operations that
    :func:`~borch.infer.hmc.traced.numpy_ops.inline` can write as an expression are
    written out, numpy constants of shape ``()`` are numpy scalars (not arrays of
    shape ``(1,)``) and each intermediate value is released after its last use.
    """
    needed = _needed(nodes, constant, alias, set(roots))
    namespace: dict[str, Any] = {"to_torch": to_torch, **INLINE_NAMESPACE}
    names: dict[Node, str] = {}
    kinds: dict[Node, str] = {}
    converted: dict[tuple[Node, str], str] = {}
    lines = []

    def bind(value: Any) -> str:
        name = f"k{len(namespace)}"
        namespace[name] = value
        return name

    def name_in(node: Node, kind: str) -> str:
        node = alias.get(node, node)
        if kinds[node] == kind:
            return names[node]
        if (node, kind) not in converted:
            if constant[node]:
                value = values[node]
                if isinstance(value, Tensor) and kind == "numpy":
                    if inline_numpy and value.dim() == 0:
                        # (np.ascontiguousarray would make it shape (1,))
                        value = value.numpy()[()]
                    else:
                        value = np.ascontiguousarray(value.numpy())
                converted[node, kind] = bind(value)
            else:
                variable = f"{kind[0]}_{names[node]}"
                convert = "to_torch({})" if kind == "torch" else "{}.numpy()"
                lines.append(f"    {variable} = {convert.format(names[node])}")
                converted[node, kind] = variable
        return converted[node, kind]

    def render(arg: Any, kind: str) -> str:
        if isinstance(arg, Node):
            return name_in(arg, kind)
        if isinstance(arg, (list, tuple)):
            items = ", ".join(render(a, kind) for a in arg)
            return f"[{items}]" if isinstance(arg, list) else f"({items},)"
        if arg is None or isinstance(arg, (bool, int, str)):
            return repr(arg)
        return bind(arg)

    for index, node in enumerate(nodes):
        if node.op == "placeholder":
            names[node], kinds[node] = "position", "numpy" if numpy_input else "torch"
        elif node not in needed or node in alias:
            continue
        elif constant[node]:
            value = values[node]
            if isinstance(value, Tensor):
                value = value.detach().contiguous()
            names[node] = bind(value)
            kinds[node] = "torch"
        elif node.op == "call_function":
            if node.target is operator.getitem:
                source = alias.get(node.args[0], node.args[0])
                function, kind = operator.getitem, kinds[source]
            elif not fast:
                function, kind = _plain_callable(node.target), "torch"
            elif numpy_input:
                function, kind = _quicker(node, values, constant, alias, kinds)
            else:
                function, kind = _fast_callable(node, values), "torch"
            expression = None
            if inline_numpy and kind == "numpy":
                expression = _inline(node, function, values, render)
            if expression is None:
                args = ", ".join(
                    [render(a, kind) for a in node.args]
                    + [f"{k}={render(v, kind)}" for k, v in node.kwargs.items()]
                )
                expression = f"{bind(function)}({args})"
            names[node], kinds[node] = f"v{index}", kind
            lines.append(f"    v{index} = {expression}")
        elif node.op == "output":
            energy, grad = node.args[0]
            energy = names[alias.get(energy, energy)]
            grad = render(grad, "numpy" if numpy_input else "torch")
            lines.append(f"    return {energy}, {grad}")
    if inline_numpy:
        lines = _release_dead(lines)
    source = "def program(position):\n" + "\n".join(lines) + "\n"
    exec(compile(source, "<borch traced potential>", "exec"), namespace)
    program = namespace["program"]
    program.source = source
    program.backend = "numpy" if numpy_input else "torch"
    return program


_VARIABLE = re.compile(r"\b(?:[tn]_)?v\d+\b")


def _release_dead(lines: list[str]) -> list[str]:
    """``lines`` with a ``del`` after the last use of each intermediate value.

    Without it every intermediate array lives until the program returns; released
    at once, numpy reuses their memory for the next ones (fewer allocations, warmer
    caches).
    """
    last: dict[str, int] = {}
    for index, line in enumerate(lines):
        for name in _VARIABLE.findall(line):
            last[name] = index
    dead: dict[int, list[str]] = {}
    for name, index in last.items():
        if not lines[index].lstrip().startswith("return"):
            dead.setdefault(index, []).append(name)
    released = []
    for index, line in enumerate(lines):
        released.append(line)
        if index in dead:
            released.append("    del " + ", ".join(sorted(dead[index])))
    return released


def _inline(
    node: Node, function: Callable, values: dict, render: Callable
) -> str | None:
    """The expression for a numpy ``node`` run by ``function``, if it has one."""
    if function is operator.getitem:
        return f"{render(node.args[0], 'numpy')}[{node.args[1]!r}]"
    if function is not NUMPY_OPS.get(node.target):
        return None

    def shape(arg: Node | None) -> tuple[int, ...]:
        return tuple(values[node if arg is None else arg].shape)

    return inline(
        node.target, node.args, node.kwargs, lambda a: render(a, "numpy"), shape
    )


def _quicker(
    node: Node, values: dict, constant: dict, alias: dict, kinds: dict
) -> tuple[Callable, str]:
    """numpy or torch for ``node``: numpy where it reproduces torch's result at the
    traced values and the cost model (:func:`_cost`) expects it to be quicker,
    counting the conversions of its inputs.

    The choice depends on shapes only (not on timings), so the same model always
    compiles to the same program and a seed gives the same draws on every run.
    """
    torch_function = _fast_callable(node, values)
    numpy_function = NUMPY_OPS.get(node.target)
    if numpy_function is None:
        return torch_function, "torch"
    numpy_cost, torch_cost = _cost(node, values, "numpy"), _cost(node, values, "torch")
    for arg in node.all_input_nodes:
        arg = alias.get(arg, arg)
        if not constant[arg]:
            if kinds[arg] == "torch":
                numpy_cost += _CONVERSION_COST
            else:
                torch_cost += _CONVERSION_COST
    if numpy_cost >= torch_cost:
        return torch_function, "torch"
    args = tree_map(_as_numpy, map_arg(node.args, values.__getitem__))
    kwargs = tree_map(_as_numpy, map_arg(node.kwargs, values.__getitem__))
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("error")
            reproduces = matches(numpy_function(*args, **kwargs), values[node])
    except Exception:
        reproduces = False
    return (numpy_function, "numpy") if reproduces else (torch_function, "torch")


# A rough cost model in microseconds, measured on a slow CPU: a torch call costs
# about 4 us before any work, a numpy call about 1 us; numpy's elementwise
# transcendental functions are not vectorised and cost ~30 ns an element.
_CONVERSION_COST = 1.5
_CALL_COST = {"numpy": 1.0, "torch": 4.0}
_ELEMENT_COST = {"numpy": 0.003, "torch": 0.003}
_SLOW_ELEMENT_COST = {"numpy": 0.03, "torch": 0.005}
_SLOW_IN_NUMPY = {
    aten.sigmoid.default,
    aten.softplus.default,
    aten.binary_cross_entropy_with_logits.default,
    aten.log1p.default,
    aten.expm1.default,
    aten.tanh.default,
    aten.sin.default,
    aten.cos.default,
    aten.lgamma.default,
    aten.digamma.default,
    aten.erf.default,
    aten.erfc.default,
    aten._log_softmax.default,
}


def _cost(node: Node, values: dict, backend: str) -> float:
    sizes = [
        value.numel()
        for value in [values[node], *(values[n] for n in node.all_input_nodes)]
        if isinstance(value, Tensor)
    ]
    elements = max(sizes, default=1)
    slow = node.target in _SLOW_IN_NUMPY
    per_element = (_SLOW_ELEMENT_COST if slow else _ELEMENT_COST)[backend]
    return _CALL_COST[backend] + per_element * elements


def _as_numpy(value: Any) -> Any:
    return value.numpy() if isinstance(value, Tensor) else value


def _needed(
    nodes: list[Node], constant: dict, alias: dict[Node, Node], roots: set[Node]
) -> set[Node]:
    needed: set[Node] = set(roots)
    for node in reversed(nodes):
        if node.op != "output" and node not in needed:
            continue
        needed.add(node)
        if node in alias:
            needed.add(alias[node])
        elif not constant[node]:
            for arg in node.all_input_nodes:
                needed.add(alias.get(arg, arg))
                needed.add(arg)
    return needed


def _plain_callable(target: Any) -> Callable:
    return target._op if isinstance(target, torch._ops.OpOverload) else target


def _fast_callable(node: Node, values: dict) -> Callable:
    """The quickest callable that computes ``node`` (checked on the traced values).

    The Python bindings ``torch.<op>`` and ``Tensor.<op>`` parse their arguments with
    less overhead than an ATen operator object; they are used where they give exactly
    the traced result.
    """
    target = node.target
    if not isinstance(target, torch._ops.OpOverload):
        return target
    fallback = _plain_callable(target)
    if _random(target) or target.namespace != "aten":
        return fallback
    name = target.overloadpacket.__name__
    args = map_arg(node.args, values.__getitem__)
    kwargs = map_arg(node.kwargs, values.__getitem__)
    expected = values[node]
    for candidate in (getattr(torch, name, None), getattr(torch.Tensor, name, None)):
        if candidate is None or not callable(candidate):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                result = candidate(*args, **kwargs)
        except Exception:
            continue
        if _identical(result, expected):
            return candidate
    return fallback


def _identical(result: Any, expected: Any) -> bool:
    if isinstance(expected, Tensor):
        return (
            isinstance(result, Tensor)
            and result.dtype == expected.dtype
            and result.shape == expected.shape
            and result.device == expected.device
            and bool(torch.equal(result, expected))
        )
    if isinstance(expected, (list, tuple)):
        return (
            isinstance(result, (list, tuple))
            and len(result) == len(expected)
            and all(_identical(r, e) for r, e in zip(result, expected))
        )
    return result == expected


class TracedPotential:
    """A potential (numpy in, numpy out) replayed from a trace of its value and
    gradient; ``device`` and ``dtype`` are those the trace was recorded with."""

    def __init__(
        self,
        program: Callable[[Any], tuple[Any, Any]],
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        self.program = program
        self.backend = getattr(program, "backend", "torch")
        self.device, self.dtype = device, dtype
        self.numpy_input = device.type == "cpu"
        self.numpy_dtype = torch.empty((), dtype=dtype).numpy().dtype

    # The decorator form of np.errstate costs half of a `with` block (per gradient).
    @np.errstate(all="ignore")
    def __call__(self, position: np.ndarray) -> tuple[float, np.ndarray]:
        if self.numpy_input:
            energy, grad = self.program(position.astype(self.numpy_dtype, copy=False))
        else:
            tensor = torch.from_numpy(position).to(self.device, self.dtype)
            energy, grad = self.program(tensor)
            grad = to_numpy(grad)
        value = float(energy)
        return (value if math.isfinite(value) else math.inf), grad


def traced_potential(
    evaluate: Callable[[Tensor], Tensor],
    eager: Callable[[np.ndarray], tuple[float, np.ndarray]],
    points: Iterable[np.ndarray],
    device: torch.device,
    dtype: torch.dtype,
    numba: bool | None = None,
) -> TracedPotential:
    """Trace ``evaluate`` (on tensors) and check the result against the ``eager``
    potential (on numpy vectors) at ``points``.

    On the CPU the program is compiled with numba where ``numba`` (by default
    :func:`~borch.infer.hmc.traced.numba_program.numba_enabled`: numba installed and
    ``BORCH_NUMBA`` not ``0``) and it can be; if that program differs from ``eager``
    the numpy replay is checked in its place. Raises :class:`TraceError` when tracing
    fails or the results differ (:func:`disagreement`), and
    :class:`UntestedTorchError` on an untested torch version.
    """
    check_torch_version()
    points = [np.ascontiguousarray(point) for point in points]
    example = torch.from_numpy(points[0]).to(device=device, dtype=dtype)
    graph = record_value_and_grad(evaluate, example)
    numpy_input = example.device.type == "cpu"
    if numba is None:
        numba = numba_program.numba_enabled()
    backends = [True, False] if numba and numpy_input else [False]
    for use_numba in backends:
        program = compile_graph(graph, example.detach(), numpy_input, numba=use_numba)
        potential = TracedPotential(program, example.device, dtype)
        difference = _difference(potential, eager, points, dtype)
        if difference is None:
            return potential
        if potential.backend == "numba":
            logger.info(
                "the numba program differs from the model (%s): using the numpy replay",
                difference,
            )
        else:
            break
    raise TraceError(
        f"the traced potential differs from the model's ({difference}; is "
        "the model random, or does it branch on tensor values?)"
    )


def _difference(
    potential: TracedPotential, eager: Callable, points: list, dtype: torch.dtype
) -> str | None:
    """How ``potential`` differs from ``eager`` at the first of ``points`` where it
    does (:func:`disagreement`, and a gradient of another dtype than the trace's)."""
    for point in points:
        expected_energy, expected_grad = eager(point)
        energy, grad = potential(point)
        if potential.numpy_input and grad.dtype != potential.numpy_dtype:
            return (
                f"a gradient of dtype {grad.dtype} instead of {potential.numpy_dtype}"
            )
        difference = disagreement(energy, grad, expected_energy, expected_grad, dtype)
        if difference is not None:
            return difference
    return None


__all__ = [
    "TESTED_TORCH_VERSIONS",
    "TraceError",
    "TracedPotential",
    "UntestedTorchError",
    "check_torch_version",
    "compile_graph",
    "disagreement",
    "record_value_and_grad",
    "tolerance",
    "trace_value_and_grad",
    "traced_potential",
]
