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

__all__ = ["construct", "log_scale_of", "remember_log_scale"]


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
    """The tensor of a tensor argument (``None`` for anything else)."""
    if type(value) is Tensor or isinstance(value, Parameter):
        return value
    return None


def remember_log_scale(normal: Normal, scale_argument: Any) -> None:
    """Keep ``log_scale`` on a Normal whose scale argument is ``exp(log_scale)`` (a
    ``borch.Transform``), so that log-densities and KL divergences use it instead of
    taking the log of the exponential (an operation and its backward on every step)."""
    exp_argument = getattr(scale_argument, "exp_argument", None)
    if exp_argument is None:
        return
    log_scale = exp_argument()
    if log_scale is not None and log_scale.shape == normal.scale.shape:
        normal.__dict__["_borch_log_scale"] = log_scale


def log_scale_of(normal: Normal) -> Tensor:
    """``normal.scale.log()``, or the ``log_scale`` it was built from."""
    log_scale = normal.__dict__.get("_borch_log_scale")
    return normal.scale.log() if log_scale is None else log_scale
