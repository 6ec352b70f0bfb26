"""Argument and value validation: one switch, cheap checks, errors that name things.

Validation is on by default. ``borch.validate_args(False)`` turns it off for a block
of code; a random variable's own ``validate_args=`` wins over the block. Checks run
once per random variable (when it is first assigned or used), not on every log
density, and plain Python numbers are checked without touching a tensor.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from numbers import Number

import numpy as np
import torch
from torch.distributions import constraints

from borch.compiling import TracedContextVar, check_in_graph

_VALIDATE_ARGS: TracedContextVar[bool | None] = TracedContextVar(
    "borch_validate_args", default=None
)
DEFAULT_VALIDATE_ARGS = True


def check_count(
    name: str, value: object, minimum: int = 1, allow_none: bool = False
) -> int | None:
    """``value`` as an int if it is a whole number (Python or numpy, not a bool) of at
    least ``minimum``; ``None`` passes when ``allow_none``. The one validator of
    counts, sizes and seeds in borch.

    Example:
        >>> check_count("num_samples", 10)
        10
        >>> check_count("num_samples", 0)
        Traceback (most recent call last):
        ...
        ValueError: num_samples must be a positive int, got 0
        >>> check_count("warmup", 2.5, minimum=0)
        Traceback (most recent call last):
        ...
        TypeError: warmup must be a non-negative int, got 2.5
    """
    if value is None and allow_none:
        return None
    if minimum == 1:
        wanted = "a positive int"
    elif minimum == 0:
        wanted = "a non-negative int"
    else:
        wanted = f"an int >= {minimum}"
    if allow_none:
        wanted += " or None"
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be {wanted}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be {wanted}, got {value!r}")
    return int(value)


def check_flag(value: object, name: str = "validate_args") -> bool | None:
    """Return ``value`` if it is ``True``, ``False`` or ``None``, else raise."""
    if value is not None and not isinstance(value, bool):
        raise TypeError(f"{name} must be True, False or None, got {value!r}")
    return value


@contextlib.contextmanager
def validate_args(value: bool = True) -> Iterator[None]:
    """Turn argument validation on or off inside a ``with`` block.

    A random variable created with an explicit ``validate_args=True/False`` keeps its
    own setting.

    Example:
        >>> import borch
        >>> from borch import distributions as dist
        >>> with borch.validate_args(False):
        ...     rv = dist.Normal(0.0, -1.0)  # not checked inside the block
        ...     _ = rv.distribution
        >>> model = borch.Module()
        >>> model.x = dist.Normal(0.0, -1.0)
        Traceback (most recent call last):
        ...
        ValueError: random variable 'x' (Normal): argument scale=-1.0 must satisfy GreaterThan(lower_bound=0.0)
    """
    check_flag(value, "validate_args")
    token = _VALIDATE_ARGS.set(value)
    try:
        yield
    finally:
        _VALIDATE_ARGS.reset(token)


def validation_enabled(own: bool | None = None) -> bool:
    """Whether to validate, given a variable's own setting ``own``."""
    if own is not None:
        return own
    ambient = _VALIDATE_ARGS.get()
    return DEFAULT_VALIDATE_ARGS if ambient is None else ambient


def number_satisfies(constraint: constraints.Constraint, value: Number) -> bool | None:
    """Check a Python number against a constraint without building a tensor.

    Returns ``None`` ("cannot tell") for constraints that are not one of the simple
    kinds or whose bounds are tensors; the caller then falls back to
    ``constraint.check`` on a tensor.

    Example:
        >>> from torch.distributions import constraints
        >>> number_satisfies(constraints.positive, -1.0)
        False
        >>> number_satisfies(constraints.unit_interval, 0.25)
        True
    """
    lower = getattr(constraint, "lower_bound", None)
    upper = getattr(constraint, "upper_bound", None)
    if isinstance(lower, torch.Tensor) or isinstance(upper, torch.Tensor):
        return None
    value = float(value)
    check = _NUMBER_CHECKS.get(type(constraint))
    return None if check is None else check(value, lower, upper)


_NUMBER_CHECKS = {
    constraints._Real: lambda v, lo, hi: not math.isnan(v),
    constraints._GreaterThan: lambda v, lo, hi: v > lo,
    constraints._GreaterThanEq: lambda v, lo, hi: v >= lo,
    constraints._LessThan: lambda v, lo, hi: v < hi,
    constraints._Interval: lambda v, lo, hi: lo <= v <= hi,
    constraints._HalfOpenInterval: lambda v, lo, hi: lo <= v < hi,
    constraints._IntegerInterval: lambda v, lo, hi: v.is_integer() and lo <= v <= hi,
    constraints._IntegerGreaterThan: lambda v, lo, hi: v.is_integer() and v >= lo,
    constraints._Boolean: lambda v, lo, hi: v in (0.0, 1.0),
}


def check_arguments_in_graph(
    distribution_cls: type, arguments: dict[str, object], who: str
) -> None:
    """The check of a distribution's tensor arguments against their constraints, as
    operations of a compiled graph (:func:`borch.compiling.check_in_graph`); numbers
    are checked in Python before.

    Example:
        >>> import torch
        >>> check_arguments_in_graph(
        ...     torch.distributions.Normal, {"loc": torch.zeros(2), "scale": 1.0}, "x"
        ... )
    """
    arg_constraints = getattr(distribution_cls, "arg_constraints", None)
    if not isinstance(arg_constraints, dict):
        return
    for name, constraint in arg_constraints.items():
        value = arguments.get(name)
        if isinstance(value, torch.Tensor) and not isinstance(
            constraint, constraints._Dependent
        ):
            # the message must be a constant while tracing: the constraint's kind
            kind = type(constraint).__name__.lstrip("_")
            check_in_graph(
                constraint.check(value).all(),
                f"{who}: argument {name} must satisfy the constraint {kind}",
            )


def violated_arguments(
    distribution_cls: type, arguments: dict[str, object]
) -> list[str]:
    """Name the tensor/number arguments that break their own constraint.

    Used only after a distribution's constructor has failed, to say which of the
    user's arguments is at fault: some torch distributions build an inner one first
    (``Beta`` builds a ``Dirichlet``) and report its argument's name, and some factor
    a matrix before validating (``LowRankMultivariateNormal``), failing with a
    linear-algebra error instead of a ``ValueError``.

    Example:
        >>> import torch
        >>> violated_arguments(torch.distributions.Beta,
        ...                    {"concentration1": torch.tensor(-1.0),
        ...                     "concentration0": torch.tensor(1.0)})
        ['concentration1=tensor(-1.)']
    """
    found = []
    arg_constraints = getattr(distribution_cls, "arg_constraints", None)
    if not isinstance(arg_constraints, dict):
        return found  # a property that needs an instance: cannot tell
    for name, constraint in arg_constraints.items():
        value = arguments.get(name)
        if isinstance(constraint, constraints._Dependent) or value is None:
            continue
        if isinstance(value, Number) and not isinstance(value, bool):
            value = torch.tensor(float(value))
        if not isinstance(value, torch.Tensor):
            continue
        try:
            ok = bool(constraint.check(value.detach()).all())
        except (RuntimeError, ValueError):  # shapes the constraint cannot read
            continue
        if not ok:
            found.append(f"{name}={_short(value)}")
    return found


def _short(value: torch.Tensor) -> str:
    text = repr(value.detach())
    return text if len(text) <= 60 else f"tensor of shape {tuple(value.shape)}"


def check_observed_value(name: str, value: torch.Tensor) -> None:
    """Reject an infinite observation with an error naming it.

    NaN marks missing data: it is accepted here and must be masked
    (:func:`borch.mask`) where the variable is assigned, which is checked then.
    """
    if value.numel() and value.is_floating_point():
        # Finite extremes prove every element finite at a quarter of the cost of
        # isinf().any(); only data with NaN or inf take the elementwise check.
        low, high = (bound.item() for bound in torch.aminmax(value.detach()))
        if math.isfinite(low) and math.isfinite(high):
            return
    if value.is_floating_point() or value.is_complex():
        infinite = torch.isinf(value)
        if bool(infinite.any()):
            bad = value[infinite].flatten()[:5].tolist()
            raise ValueError(
                f"observed value for '{name}' contains non-finite entries (e.g. "
                f"{bad}); clean the data (mark missing entries NaN and mask them "
                "with borch.mask), or wrap the call in "
                "`with borch.validate_args(False):` to accept it"
            )


__all__ = [
    "DEFAULT_VALIDATE_ARGS",
    "check_count",
    "check_flag",
    "check_observed_value",
    "number_satisfies",
    "validate_args",
    "validation_enabled",
    "violated_arguments",
]
