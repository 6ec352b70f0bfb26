"""A posterior whose approximating variables the user sets by hand."""

from __future__ import annotations

from borch.posterior.base import Posterior
from borch.random_variable import RandomVariable


class Manual(Posterior):
    """Approximating variables are whatever you assign to the posterior.

    Set ``posterior.<name> = dist.Normal(...)`` (with parameters you register on the
    posterior) before the model uses ``<name>``; re-assign it each step to rebuild it
    from the current parameters. The approximation's structure may differ from the
    model's, hierarchies included.

    Example:
        >>> import torch
        >>> import borch
        >>> from borch import distributions as dist
        >>> q = Manual()
        >>> q.loc = torch.nn.Parameter(torch.zeros(1))
        >>> q.x = dist.Normal(q.loc, 1.0)
        >>> model = borch.Module(posterior=q)
        >>> model.x = dist.Normal(0.0, 2.0)
        >>> model.y = dist.Normal(0.0, 2.0)
        Traceback (most recent call last):
        ...
        LookupError: the Manual posterior has no approximating variable 'y': set one with `posterior.y = borch.distributions.<Family>(...)` before the model assigns 'y'
    """

    def register_random_variable(
        self, name: str, prior: RandomVariable
    ) -> RandomVariable:
        raise LookupError(
            f"the Manual posterior has no approximating variable '{name}': set one "
            f"with `posterior.{name} = borch.distributions.<Family>(...)` before the "
            f"model assigns '{name}'"
        )


__all__ = ["Manual"]
