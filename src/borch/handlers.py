"""Handlers: context managers that mark the random variables assigned inside them.

A variable assigned to a :class:`borch.Module` (or first read from it) inside
``with borch.scale(factor):`` has its terms in every loss multiplied by ``factor``;
inside ``with borch.mask(keep):`` only the elements where ``keep`` is true count.
What was in force is recorded on the variable's :class:`borch.Site`. Nested handlers
combine: scales multiply, masks are and-ed.

Example:
    >>> import torch
    >>> import borch
    >>> from borch import distributions as dist
    >>> model = borch.Module()
    >>> model.observe(y=torch.tensor([0.0, 1.0, 2.0]))
    >>> with borch.scale(10.0), borch.mask(torch.tensor([True, True, False])):
    ...     model.y = dist.Normal(torch.zeros(3), 1.0)
    >>> site = borch.sites(model)[0]
    >>> site.scale, site.mask
    (10.0, tensor([ True,  True, False]))
    >>> borch.infer.vi_loss(**borch.pq_to_infer(model))  # 10 * (0.919 + 1.419)
    tensor(23.3788)
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from contextvars import ContextVar
from numbers import Real
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "NO_CONTEXT",
    "SiteContext",
    "current_context",
    "is_weighted",
    "mask",
    "scale",
]


class SiteContext(NamedTuple):
    """The handlers in force when a variable was assigned: see :class:`borch.Site`."""

    scale: float | Tensor = 1.0
    mask: Tensor | None = None
    plates: tuple = ()


#: No handler in force: the context of almost every variable.
NO_CONTEXT = SiteContext()

_CONTEXT: ContextVar[SiteContext] = ContextVar("borch_handlers", default=NO_CONTEXT)


#: ``current_context()``: the handlers in force now. The context variable's own
#: ``get``, so that recording a variable's use costs no Python call.
current_context: Callable[[], SiteContext] = _CONTEXT.get


class _Handler:
    """A context manager that combines what it adds with the context in force when
    it is entered (not when it is made)."""

    def __init__(self, combine: Callable[[SiteContext], SiteContext]) -> None:
        self._combine = combine
        self._tokens: list = []

    def __enter__(self) -> None:
        self._tokens.append(_CONTEXT.set(self._combine(_CONTEXT.get())))

    def __exit__(self, *exc_info: object) -> None:
        _CONTEXT.reset(self._tokens.pop())


def scale(factor: float | Tensor) -> contextlib.AbstractContextManager[None]:
    """Multiply the loss terms of the variables assigned inside by ``factor``.

    Args:
        factor: a positive finite number, or a tensor of them broadcastable to the
            batch shape of the variables (one weight per element).

    Example:
        >>> import borch
        >>> with borch.scale(0.5), borch.scale(4.0):
        ...     borch.handlers.current_context().scale
        2.0
        >>> borch.scale(-1.0)
        Traceback (most recent call last):
        ...
        ValueError: scale: factor must be positive and finite, got -1.0
    """
    if isinstance(factor, Tensor):
        if not factor.is_floating_point():
            raise TypeError(
                f"scale: a tensor factor must be floating point, got {factor.dtype}"
            )
        if not bool(torch.isfinite(factor).all()) or bool((factor <= 0).any()):
            raise ValueError(
                f"scale: every element of factor must be positive and finite, got "
                f"{factor}"
            )
        factor = factor.detach()
    elif isinstance(factor, Real) and not isinstance(factor, bool):
        factor = float(factor)
        if not (math.isfinite(factor) and factor > 0):
            raise ValueError(f"scale: factor must be positive and finite, got {factor}")
    else:
        raise TypeError(
            f"scale: factor must be a number or a tensor, got {type(factor).__name__}"
        )
    return _Handler(lambda context: context._replace(scale=context.scale * factor))


def mask(keep: Tensor) -> contextlib.AbstractContextManager[None]:
    """Count only the elements where ``keep`` is true in the loss terms of the
    variables assigned inside (missing observations, padding).

    Args:
        keep: a bool tensor broadcastable to the batch shape of the variables.

    Example:
        >>> import torch
        >>> import borch
        >>> with borch.mask(torch.tensor([True, False])), borch.mask(torch.tensor(True)):
        ...     borch.handlers.current_context().mask
        tensor([ True, False])
    """
    if not isinstance(keep, Tensor) or keep.dtype is not torch.bool:
        kind = keep.dtype if isinstance(keep, Tensor) else type(keep).__name__
        raise TypeError(f"mask: keep must be a bool tensor, got {kind}")

    def combine(context: SiteContext) -> SiteContext:
        combined = keep if context.mask is None else context.mask & keep
        return context._replace(mask=combined)

    return _Handler(combine)


def is_weighted(scale: float | Tensor, mask: Tensor | None) -> bool:
    """Whether a site's scale or mask changes its loss terms."""
    return mask is not None or isinstance(scale, Tensor) or scale != 1.0
