"""Build torch distributions from arguments that are already checked and aligned.

torch's ``Normal`` broadcasts its arguments on construction (Python checks and one
operation, with a view per argument in the backward pass). borch rebuilds a
posterior's ``Normal`` on every draw, from a location and a scale that usually have
the same shape already; then the broadcast has nothing to do and is skipped.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor
from torch.distributions import Distribution, Normal
from torch.nn import Parameter

__all__ = ["construct"]


def construct(cls: type[Distribution], kwargs: dict[str, Any], validate: bool):
    """``cls(**kwargs, validate_args=validate)``, without a no-op broadcast.

    Example:
        >>> import torch
        >>> normal = construct(Normal, {"loc": torch.zeros(2), "scale": torch.ones(2)}, False)
        >>> normal.batch_shape, normal.rsample().shape
        (torch.Size([2]), torch.Size([2]))
    """
    if cls is Normal and not validate and len(kwargs) == 2:
        loc, scale = _plain(kwargs.get("loc")), _plain(kwargs.get("scale"))
        if (
            loc is not None
            and scale is not None
            and loc.shape == scale.shape
            and loc.dtype == scale.dtype
            and loc.device == scale.device
        ):
            normal = Normal.__new__(Normal)
            normal.loc, normal.scale = loc, scale
            Distribution.__init__(normal, loc.shape, validate_args=False)
            return normal
    return cls(**kwargs, validate_args=validate)


def _plain(value: Any) -> Tensor | None:
    """A plain tensor for a tensor argument (a parameter is viewed, as torch's
    broadcast would, so the distribution never holds the parameter itself)."""
    if type(value) is Tensor:
        return value
    if isinstance(value, Parameter):
        return value.view_as(value)
    return None
