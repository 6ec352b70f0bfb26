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

import inspect

import torch.distributions as _torch_distributions

from borch.distributions import point_mass as _point_mass
from borch.distributions.factory import random_variable_class
from borch.distributions.kl import as_distribution, kl_divergence, kl_exists

#: torch.distributions classes that are abstract bases, not distributions to use.
EXCLUDED = {
    "Distribution": "abstract base class of all distributions",
    "ExponentialFamily": "abstract base class of exponential-family distributions",
}


def torch_distribution_classes() -> dict[str, type]:
    """Every instantiable distribution class torch exports, by name."""
    return {
        name: cls
        for name in _torch_distributions.__all__
        if inspect.isclass(cls := getattr(_torch_distributions, name))
        and issubclass(cls, _torch_distributions.Distribution)
        and name not in EXCLUDED
    }


def _generate() -> list[str]:
    names = []
    sources = {
        **torch_distribution_classes(),
        "Delta": _point_mass.Delta,
        "PointMass": _point_mass.PointMass,
    }
    for name, cls in sources.items():
        globals()[name] = random_variable_class(cls, name=name, module=__name__)
        names.append(name)
    return names


_GENERATED = _generate()

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
