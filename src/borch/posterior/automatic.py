"""The default family: the prior's own family with learnable arguments, hierarchy kept."""

from __future__ import annotations

from typing import Any

from borch.posterior.approximations import linked_approximation, relink
from borch.posterior.base import Posterior
from borch.random_variable import RandomVariable


class Automatic(Posterior):
    """Approximate each prior by a variable of the same family with learnable arguments.

    Arguments given as constants become parameters in unconstrained space, starting at
    the prior's values. Arguments computed from other random variables keep that
    dependence: on every assignment the approximation is re-linked to the prior's
    current arguments, so the posterior keeps the hierarchy of the model. Discrete
    priors get discrete approximations, learned with score-function gradients.

    Example:
        >>> import borch
        >>> from borch import distributions as dist
        >>> class Model(borch.Module):
        ...     def __init__(self):
        ...         super().__init__(posterior=Automatic())
        ...         self.mu = dist.StudentT(3.0, 3.0, 4.0)
        ...     def forward(self):
        ...         self.y = dist.Normal(self.mu, 1.0)
        ...         return self.y
        >>> model = Model()
        >>> _ = model()
        >>> type(model.posterior.mu).__name__
        'StudentT'
        >>> bool(model.posterior.mu.loc == model.prior.mu.loc)
        True
        >>> model.posterior.y.loc is model.mu  # linked to the current draw of mu
        True
        >>> borch.sample(model)
        >>> _ = model()
        >>> model.posterior.y.loc is model.mu
        True
    """

    def __init__(self) -> None:
        super().__init__()
        self.__dict__["_links"] = {}

    def register_random_variable(
        self, name: str, prior: RandomVariable
    ) -> RandomVariable:
        approximation, links = linked_approximation(name, prior)
        self._links[name] = links
        return approximation

    def update_random_variable(self, name: str, prior: RandomVariable) -> None:
        relink(self.approximation(name), prior, self._links.get(name))

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("_links", {})
        super().__setstate__(state)


__all__ = ["Automatic"]
