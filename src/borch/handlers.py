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
from numbers import Real
from typing import NamedTuple

import torch
from torch import Tensor

from borch.compiling import TracedContextVar, check_in_graph, compiling
from borch.fastpath.shapes import broadcast_shapes
from borch.validation import check_count

__all__ = [
    "NO_CONTEXT",
    "PlateFrame",
    "SiteContext",
    "check_fits",
    "current_context",
    "is_weighted",
    "mask",
    "plate",
    "scale",
    "site_label",
    "weighted",
]


class SiteContext(NamedTuple):
    """The handlers in force when a variable was assigned: see :class:`borch.Site`."""

    scale: float | Tensor = 1.0
    mask: Tensor | None = None
    plates: tuple = ()


#: No handler in force: the context of almost every variable.
NO_CONTEXT = SiteContext()

_CONTEXT: TracedContextVar[SiteContext] = TracedContextVar("borch_handlers", NO_CONTEXT)


#: ``current_context()``: the handlers in force now.
current_context: Callable[[], SiteContext] = _CONTEXT.get


class PlateFrame(NamedTuple):
    """One plate a variable was assigned in: its ``name``, full ``size``, the
    ``subsample`` of indices used in this run, and the batch dimension ``dim``
    (negative, counted from the right of the batch shape) it indexes."""

    name: str
    size: int
    subsample: Tensor
    dim: int

    @property
    def scale(self) -> float:
        """``size / len(subsample)``: the factor of the terms inside the plate."""
        return self.size / len(self.subsample)


class _Handler:
    """A context manager that combines what it adds with the context in force when
    it is entered (not when it is made); ``combine`` returns the new context and
    the value ``with ... as value`` gives."""

    def __init__(self, combine: Callable[[SiteContext], tuple]) -> None:
        self._combine = combine
        self._tokens: list = []

    def __enter__(self) -> object:
        context, value = self._combine(_CONTEXT.get())
        self._tokens.append(_CONTEXT.set(context))
        return value

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
    return _Handler(
        lambda context: (context._replace(scale=context.scale * factor), None)
    )


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
        return context._replace(mask=combined), None

    return _Handler(combine)


def plate(
    name: str,
    size: int,
    subsample: Tensor | None = None,
    subsample_size: int | None = None,
    dim: int = -1,
) -> contextlib.AbstractContextManager[Tensor]:
    """Mark the variables assigned inside as ``size`` conditionally independent
    rows along batch dimension ``dim``, of which this run sees a subsample.

    ``with borch.plate(...) as index`` gives the indices of the subsample: those
    of ``subsample`` if given, else ``subsample_size`` indices drawn without
    replacement (from torch's generator, anew each time the block is entered), else
    all of ``0 .. size - 1``. Every variable assigned inside has its loss terms (its
    likelihood and its divergence) multiplied by ``size / len(index)``, so a
    minibatch gives an unbiased estimate of the whole data set's ELBO; plates nest
    and their factors multiply. Variables inside must have the subsample's length
    along ``dim``. A latent variable whose approximation the posterior family
    creates gets parameters for all ``size`` rows and uses the subsample's rows in
    each run (a local posterior); one given by ``borch.RVPair`` (e.g. computed by an
    encoder) is used as it is.

    Args:
        name: names the plate in errors and on the sites; unique among the plates
            in force.
        size: the number of rows in the whole data set.
        subsample: the indices of this run (a 1-d integer tensor).
        subsample_size: draw this many indices instead.
        dim: the batch dimension the plate indexes, negative.

    Example:
        >>> import torch
        >>> import borch
        >>> from borch import distributions as dist
        >>> class Mean(borch.Module):
        ...     def forward(self, y, index):
        ...         self.mu = dist.Normal(0.0, 10.0)
        ...         with borch.plate("data", 100, subsample=index):
        ...             self.y = dist.Normal(self.mu.expand(len(index)), 1.0)
        >>> model = Mean()
        >>> index = torch.arange(10)
        >>> model.observe(y=torch.zeros(10))
        >>> model(torch.zeros(10), index)
        >>> y = borch.sites(model)[1]
        >>> y.scale, y.plates[0].name
        (10.0, 'data')
    """
    if not isinstance(name, str):
        raise TypeError(f"plate: name must be a str, got {type(name).__name__}")
    size = check_count(f"plate '{name}': size", size)
    if isinstance(dim, bool) or not isinstance(dim, int) or dim >= 0:
        raise ValueError(
            f"plate '{name}': dim must be a negative int (counted from the right of "
            f"the batch shape), got {dim!r}"
        )
    if subsample is not None:
        subsample = _check_subsample(name, size, subsample, subsample_size)
    elif subsample_size is not None:
        subsample_size = check_count(f"plate '{name}': subsample_size", subsample_size)
        if subsample_size > size:
            raise ValueError(
                f"plate '{name}': subsample_size={subsample_size} exceeds size={size}"
            )

    def combine(context: SiteContext) -> tuple[SiteContext, Tensor]:
        for frame in context.plates:
            if frame.name == name:
                raise ValueError(f"plate '{name}' is already in force")
            if frame.dim == dim:
                raise ValueError(
                    f"plate '{name}' indexes dim {dim}, as plate '{frame.name}' "
                    "around it does; give nested plates different dims"
                )
        if subsample is not None:
            index = subsample
        elif subsample_size is not None:
            index = torch.randperm(size)[:subsample_size]
        else:
            index = torch.arange(size)
        frame = PlateFrame(name, size, index, dim)
        factor = frame.scale
        scaled = context.scale if factor == 1.0 else context.scale * factor
        return context._replace(scale=scaled, plates=(*context.plates, frame)), index

    return _Handler(combine)


def _check_subsample(
    name: str, size: int, subsample: Tensor, subsample_size: int | None
) -> Tensor:
    if not isinstance(subsample, Tensor) or subsample.dtype not in (
        torch.int64,
        torch.int32,
    ):
        kind = subsample.dtype if isinstance(subsample, Tensor) else type(subsample)
        raise TypeError(
            f"plate '{name}': subsample must be a 1-d integer tensor of indices, got "
            f"{kind}"
        )
    if subsample.dim() != 1 or len(subsample) == 0:
        raise ValueError(
            f"plate '{name}': subsample must be a non-empty 1-d tensor of indices, "
            f"got shape {tuple(subsample.shape)}"
        )
    if compiling():
        outside = ((subsample < 0) | (subsample >= size)).any()
        check_in_graph(
            ~outside, f"plate '{name}': subsample indices must be in [0, {size})"
        )
    else:
        low, high = (bound.item() for bound in torch.aminmax(subsample))  # one pass
        if low < 0 or high >= size:
            raise ValueError(
                f"plate '{name}': subsample indices must be in [0, {size}), got "
                f"{low} .. {high}"
            )
    if subsample_size is not None and subsample_size != len(subsample):
        raise ValueError(
            f"plate '{name}': subsample has {len(subsample)} indices but "
            f"subsample_size={subsample_size}"
        )
    return subsample.long()


def site_label(where: str | int) -> str:
    """How an error names a site: by its index in a loss's input lists, or as given."""
    return f"variable {where}" if isinstance(where, int) else where


def check_fits(name: str, weight, shape: torch.Size, where: str | int) -> None:
    """Raise naming the site if a tensor ``weight`` (its mask or scale) does not
    broadcast to the batch shape ``shape`` of its log density."""
    if not isinstance(weight, Tensor) or weight.dim() == 0:
        return
    try:
        fits = broadcast_shapes(weight.shape, shape) == shape
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(
            f"{site_label(where)}: its {name} of shape {tuple(weight.shape)} does not "
            f"broadcast to the batch shape {tuple(shape)} of its log density"
        )


def weighted(
    term: Tensor, scale: float | Tensor, mask: Tensor | None, where: str | int
) -> Tensor:
    """``term`` with masked elements zeroed and the rest multiplied by ``scale``."""
    for name, weight in (("mask", mask), ("scale", scale)):
        check_fits(name, weight, term.shape, where)
    if mask is not None:
        term = torch.where(mask, term, 0.0)
    if isinstance(scale, Tensor) or scale != 1.0:
        term = term * scale
    return term


def is_weighted(scale: float | Tensor, mask: Tensor | None) -> bool:
    """Whether a site's scale or mask changes its loss terms."""
    return mask is not None or isinstance(scale, Tensor) or scale != 1.0
