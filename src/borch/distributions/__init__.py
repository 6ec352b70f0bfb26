"""Random variables for every ``torch.distributions`` distribution, plus ``Delta``
and ``PointMass``.

Each class has the name and constructor arguments of its torch counterpart (plus
``validate_args``), and is a :class:`borch.RandomVariable`: a module, a tensor and a
distribution at once.

Example:
    >>> import torch
    >>> from borch import distributions as dist
    >>> rv = dist.Gamma(2.0, 1.0)
    >>> rv.support
    GreaterThanEq(lower_bound=0.0)
    >>> bool(rv > 0)
    True
"""

from __future__ import annotations

from borch.distributions.factory import random_variable_class
from borch.distributions.kl import as_distribution, kl_divergence, kl_exists
from borch.distributions.rv_distributions import *  # noqa: F403 - the generated classes
from borch.distributions.rv_distributions import (
    _GENERATED,
    EXCLUDED,
    torch_distribution_classes,
)

__all__ = [
    *_GENERATED,
    "EXCLUDED",
    "as_distribution",
    "kl_divergence",
    "kl_exists",
    "random_variable_class",
    "torch_distribution_classes",
]


def __dir__() -> list[str]:
    return sorted(__all__)
