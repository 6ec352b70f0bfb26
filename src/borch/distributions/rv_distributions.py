"""The generated random-variable classes, one per ``torch.distributions`` class.

They live here (``borch.distributions.rv_distributions.Normal``, the path users of
the original borch know) and are re-exported from :mod:`borch.distributions`.
"""

from __future__ import annotations

import inspect

import torch.distributions as _torch_distributions

from borch.distributions import point_mass as _point_mass
from borch.distributions.factory import random_variable_class

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

__all__ = [*_GENERATED, "EXCLUDED", "torch_distribution_classes"]
