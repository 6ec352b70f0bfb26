"""Compiling a training step with ``torch.compile``.

borch's eager fast paths remember facts between steps, keyed on tensors' version
counters and object ids; inside a compiled step (``torch.compiler.is_compiling()``)
they take the plain path instead, which dynamo traces into one graph. Draws,
distributions and the record of use are rebuilt on every step there: the graph does
that work without Python overhead.

:func:`compile_step` is the way to compile: it runs the first call eagerly (lazily
created parameters and approximations exist before anything is traced), compiles
the step for later calls and warns, naming the reasons, when the compiled step breaks
into several graphs. Given the optimiser, it makes the whole training step and
compiles the optimiser's update as well.

Checks of tensor *values* (a distribution's arguments inside their constraints, an
observed value inside the support of its prior, plate indices in range) branch on
data in eager code; inside a compiled step they are made in the graph by
:func:`check_in_graph` and fail with a ``RuntimeError`` carrying the same message,
without the offending values. :meth:`borch.Module.observe` checks the data it is
given (finite) in Python: call it outside the compiled function.
"""

from __future__ import annotations

import functools
import types
import warnings
from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import Any, Generic, TypeVar

import torch

__all__ = ["TracedContextVar", "check_in_graph", "compile_step", "compiling"]

T = TypeVar("T")

#: ``compiling()``: whether dynamo is tracing the code now (then fast paths keyed on
#: Python-side state step aside). A constant to the tracer; in eager code a call
#: that returns ``False`` (cheaper than ``torch.compiler.is_compiling``).
compiling: Callable[[], bool] = torch.compiler.is_dynamo_compiling


def check_in_graph(ok: torch.Tensor, message: str) -> None:
    """Raise ``RuntimeError(message)`` when the one-element boolean ``ok`` is false,
    as an operation of the traced graph (no Python branch on the data).

    Example:
        >>> check_in_graph(torch.tensor(True), "never raised")
    """
    torch._assert_async(ok, message)


class _StepState:
    """While :func:`compile_step` traces a step, ``owners`` lists the objects that
    hold state of this step only, released (``release_step_state()``) at its end
    so that it does not leave the graph; ``None`` otherwise."""

    __slots__ = ("owners",)

    def __init__(self) -> None:
        self.owners: list | None = None


_STEP_STATE = _StepState()


def note_step_state(owner: Any) -> None:
    """Have ``owner.release_step_state()`` called at the end of the step that
    :func:`compile_step` traces now (nothing otherwise)."""
    owners = _STEP_STATE.owners
    if owners is not None:
        owners.append(owner)


def _releasing_step_state(fn: Callable[..., Any]) -> Callable[..., Any]:
    step_state = _STEP_STATE

    def traced(*args: Any, **kwargs: Any) -> Any:
        outer = step_state.owners
        step_state.owners = []
        try:
            result = fn(*args, **kwargs)
            for owner in step_state.owners:
                owner.release_step_state()
        finally:
            step_state.owners = outer
        return result

    # dynamo looks the globals of a function it inlines up in the module named by
    # them; for a step whose globals are not its module's (a doctest, exec'd code)
    # they must be those of the frame it compiles. traced reads no globals.
    namespace = getattr(fn, "__globals__", None)
    if namespace is not None:
        traced = types.FunctionType(
            traced.__code__, namespace, traced.__name__, None, traced.__closure__
        )
    return functools.wraps(fn)(traced)


class TracedContextVar(Generic[T]):
    """A ``ContextVar`` that compiled code can read.

    dynamo cannot trace ``ContextVar.get``; while tracing, the value set last (in any
    thread) is read from a plain attribute instead, which dynamo guards on, so a
    change recompiles. Eager code reads the context variable itself.

    Example:
        >>> flag = TracedContextVar("flag", False)
        >>> token = flag.set(True)
        >>> flag.get(), flag.reset(token), flag.get()
        (True, None, False)
    """

    __slots__ = ("_last", "_var")

    def __init__(self, name: str, default: T) -> None:
        self._var: ContextVar[T] = ContextVar(name, default=default)
        self._last = default

    def get(self) -> T:
        if compiling():
            return self._last
        return self._var.get()

    def set(self, value: T) -> Token | _TracedToken:
        previous, self._last = self._last, value
        if compiling():  # handlers entered inside the compiled step
            return _TracedToken(previous)
        return self._var.set(value)

    def reset(self, token: Token | _TracedToken) -> None:
        if isinstance(token, _TracedToken):
            self._last = token.previous
            return
        self._var.reset(token)
        self._last = self._var.get()


class _TracedToken:
    """What :meth:`TracedContextVar.set` returns while tracing: the value to restore."""

    __slots__ = ("previous",)

    def __init__(self, previous: Any) -> None:
        self.previous = previous


def compile_step(
    fn: Callable[..., Any],
    optimizer: torch.optim.Optimizer | None = None,
    **compile_kwargs: Any,
) -> Callable[..., Any]:
    """``fn`` compiled with ``torch.compile(fn, **compile_kwargs)``, its first call
    run eagerly; with an ``optimizer``, a whole training step.

    The first call creates what a borch model creates lazily (approximating
    variables and their parameters, layers' posteriors), so that the traced step sees
    the model as it will stay. The second call compiles; if the compiled step breaks
    into several graphs, a :class:`UserWarning` names why (with ``fullgraph=True``
    torch raises instead). With the default inductor backend and neither ``mode``
    nor ``options`` given, draws use torch's random-number kernels
    (``options={"fallback_random": True}``): the same numbers as eager from the same
    seed, and faster on the CPU.

    Without ``optimizer``, the step returns what ``fn`` returns: call
    ``loss.backward()`` and the optimiser after it. With ``optimizer``, each call
    is ``optimizer.zero_grad()``, ``loss = fn(...)``, ``loss.backward()`` and
    ``optimizer.step()``, and returns the detached loss; ``optimizer.step`` is
    compiled too (its first step, which creates the optimiser's state, is eager),
    its elementwise operations fused. The learning rate is then a constant of the
    compiled update: give the optimiser ``lr=torch.tensor(...)`` if a scheduler
    changes it, or every change recompiles. ``fullgraph`` applies to ``fn`` only
    (torch's optimisers break their graph on purpose).

    At the end of each compiled call, the random variables that drew or built a
    distribution in it keep their draw without its autograd graph and drop the
    distribution, so that only what ``fn`` returns leaves the graph with
    gradients (an eager use after the step draws anew in any case).

    Each step compiled for another model or optimiser adds an entry to dynamo's
    caches of the same functions (this step's, the optimiser's ``step``): past
    ``torch._dynamo.config.recompile_limit`` (8 by default) torch warns and runs
    the later ones eagerly. Raise the limit in a process that compiles steps for
    many models.

    Example:
        >>> import torch
        >>> import borch
        >>> from borch import distributions as dist
        >>> model = borch.Module()
        >>> model.observe(y=torch.tensor([0.5, 1.0]))
        >>> def loss_fn():
        ...     borch.sample(model)
        ...     model.mu = dist.Normal(0.0, 1.0)
        ...     model.y = dist.Normal(model.mu, 1.0)
        ...     return borch.infer.vi_loss(**borch.pq_to_infer(model))
        >>> step = compile_step(loss_fn, backend="eager")
        >>> step().backward()  # eager: creates the approximation of mu
        >>> step().backward()  # compiled
    """
    if compile_kwargs.get("backend", "inductor") == "inductor" and not (
        {"mode", "options"} & compile_kwargs.keys()
    ):
        # inductor's own CPU random-number kernels are several times slower than
        # torch's and give other numbers (benchmarks/README.md): keep torch's.
        compile_kwargs["options"] = {"fallback_random": True}
    loss_stage = _Stage(
        fn,
        torch.compile(_releasing_step_state(fn), **compile_kwargs),
        getattr(fn, "__qualname__", repr(fn)),
    )
    if optimizer is None:

        @functools.wraps(fn)
        def step(*args: Any, **kwargs: Any) -> Any:
            return loss_stage(*args, **kwargs)

        return step

    # torch's optimisers break the graph on purpose around their update (so that
    # it traces without gradients): no warning, and fullgraph is for the loss only.
    update_kwargs = {k: v for k, v in compile_kwargs.items() if k != "fullgraph"}
    update_stage = _Stage(
        optimizer.step, torch.compile(optimizer.step, **update_kwargs), None
    )

    @functools.wraps(fn)
    def training_step(*args: Any, **kwargs: Any) -> torch.Tensor:
        optimizer.zero_grad()
        loss = loss_stage(*args, **kwargs)
        loss.backward()
        update_stage()
        return loss.detach()

    return training_step


class _Stage:
    """One compiled part of a step: eager on its first call, compiled after; with a
    ``name``, a warning names the graph breaks of the compiling call."""

    __slots__ = ("calls", "compiled", "fn", "name")

    def __init__(
        self, fn: Callable[..., Any], compiled: Callable[..., Any], name: str | None
    ) -> None:
        self.fn = fn
        self.compiled = compiled
        self.name = name
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        calls = self.calls
        if calls > 1:
            return self.compiled(*args, **kwargs)
        self.calls = calls + 1
        if calls == 0:
            return self.fn(*args, **kwargs)
        if self.name is None:
            return self.compiled(*args, **kwargs)
        before = _graph_breaks()
        result = self.compiled(*args, **kwargs)
        _warn_graph_breaks(self.name, _graph_breaks() - before)
        return result


def _graph_breaks() -> Any:
    from torch._dynamo.utils import counters

    return counters["graph_break"].copy()


def _warn_graph_breaks(name: str, breaks: Any) -> None:
    if not breaks:
        return
    reasons = "; ".join(f"{reason} ({count}x)" for reason, count in breaks.items())
    warnings.warn(
        f"compile_step({name}): the compiled step breaks into several graphs, so it "
        f"runs partly in Python: {reasons}",
        UserWarning,
        stacklevel=4,  # the caller of the step
    )
