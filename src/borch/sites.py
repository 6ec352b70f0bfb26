"""The one record of a model run: a :class:`Site` per random variable used.

Every :class:`borch.Module` records which of its variables the model assigned or
read since the last :func:`borch.sample`, and which handlers
(:mod:`borch.handlers`) were in force. :func:`sites` reads that record across a
whole network; every loss, predictive sampling, MCMC, the Laplace approximation and
the non-finite guard read :func:`sites` and nothing else.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor, nn

from borch.module import named_borch_modules
from borch.random_variable import RandomVariable

__all__ = ["Site", "sites"]


class Site(NamedTuple):
    """One random variable as the model used it in this run.

    Attributes:
        name: the qualified name, ``"layer.weight"`` for variable ``weight`` of
            submodule ``layer`` (the names :func:`borch.condition` and MCMC samples
            use).
        prior: the prior random variable (the likelihood, if observed).
        approximation: the approximating random variable; ``None`` when observed.
        observed: whether the value is data (observed, conditioned on, or simulated
            under :func:`borch.simulate_observed`).
        value: the tensor the model used.
        scale: the factor of its loss terms (:func:`borch.scale`): a number, or a
            tensor broadcastable to the batch shape of its log density.
        mask: ``None``, or a bool tensor broadcastable to that batch shape; only
            elements where it is true count (:func:`borch.mask`).
        plates: the plates it was assigned in, outermost first.
    """

    name: str
    prior: RandomVariable
    approximation: RandomVariable | None
    observed: bool
    value: Tensor
    scale: float | Tensor = 1.0
    mask: Tensor | None = None
    plates: tuple = ()


def sites(module: nn.Module) -> list[Site]:
    """The sites of every variable ``module`` (and its submodules) used since the
    last :func:`borch.sample`, module by module in the order of ``named_modules``
    and, within a module, in the order of first use.

    A latent variable without an approximation yet (its posterior family was
    replaced, an observation forgotten) gets one here.

    Example:
        >>> import torch
        >>> import borch
        >>> from borch import distributions as dist
        >>> class Layer(borch.Module):
        ...     def forward(self, x):
        ...         self.weight = dist.Normal(0.0, 1.0)
        ...         return x * self.weight
        >>> class Model(borch.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.layer = Layer()
        ...     def forward(self, x):
        ...         self.y = dist.Normal(self.layer(x), 1.0)
        ...         return self.y
        >>> model = Model()
        >>> model.observe(y=torch.ones(2))
        >>> _ = model(torch.ones(2))
        >>> [(site.name, site.observed) for site in borch.sites(model)]
        [('y', True), ('layer.weight', False)]
        >>> borch.sample(model)
        >>> borch.sites(model)
        []
    """
    if not isinstance(module, nn.Module):
        raise TypeError(
            f"sites: module must be a torch.nn.Module, got {type(module).__name__}"
        )
    found = []
    new_site = tuple.__new__  # Site's own constructor, without a Python-level call
    for path, borch_module in named_borch_modules(module):
        if path:
            prefix = path + "."
            for used in borch_module.used():
                found.append(new_site(Site, (prefix + used[0], *used[1:])))
        else:
            for used in borch_module.used():
                found.append(new_site(Site, used))
    return found
