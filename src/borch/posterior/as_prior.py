"""A copy of the prior family with every argument learnable, hierarchy not kept."""

from __future__ import annotations

from borch.posterior.approximations import approximation_like
from borch.posterior.base import Posterior
from borch.random_variable import RandomVariable


class AsPrior(Posterior):
    """Approximate each prior by a variable of the same family, all arguments learnable.

    Unlike :class:`Automatic`, arguments computed from other random variables are
    turned into independent parameters, initialised at their values when the variable
    is first assigned: the approximation is mean-field.

    Example:
        >>> import borch
        >>> from borch import distributions as dist
        >>> model = borch.Module(posterior=AsPrior())
        >>> model.mu = dist.Normal(0.0, 1.0)
        >>> model.y = dist.Gamma(2.0, model.mu.exp())
        >>> type(model.posterior.y).__name__
        'Gamma'
        >>> sorted(name for name, _ in model.posterior.y.named_parameters())
        ['concentration.unconstrained', 'rate.unconstrained']
    """

    def register_random_variable(
        self, name: str, prior: RandomVariable
    ) -> RandomVariable:
        return approximation_like(name, prior, keep_links=False)


__all__ = ["AsPrior"]
