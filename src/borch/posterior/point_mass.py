"""Point estimates: the family of MAP estimation and the state MCMC moves."""

from __future__ import annotations

from torch import nn

from borch import distributions as dist
from borch.posterior.approximations import (
    canonical_support,
    float_dtype,
    prior_location,
    to_unconstrained,
    unconstraining_transform,
)
from borch.posterior.base import Posterior
from borch.random_variable import RandomVariable


class PointMass(Posterior):
    """Approximate each continuous prior by a single learnable value.

    The value is a parameter in unconstrained space mapped onto the prior's support,
    so an optimiser (MAP) or a sampler (MCMC) may move it freely. ``borch.sample``
    does not move it: draws are the current value.

    Args:
        loc_at_prior_mean: start at the prior's mean; by default the start is the
            prior's current value (a draw), which breaks the symmetry between the
            weights of a network.

    Example:
        >>> import torch
        >>> import borch
        >>> from borch import distributions as dist
        >>> model = borch.Module(posterior=PointMass(loc_at_prior_mean=True))
        >>> model.rate = dist.Gamma(2.0, 1.0)
        >>> model.rate.item()
        2.0
        >>> borch.sample(model)
        >>> model.rate.item()
        2.0
        >>> [name for name, _ in model.named_parameters()]
        ['posterior.rate.unconstrained_value']
    """

    def __init__(self, loc_at_prior_mean: bool = False) -> None:
        super().__init__()
        self._loc_at_prior_mean = bool(loc_at_prior_mean)

    def register_random_variable(
        self, name: str, prior: RandomVariable
    ) -> RandomVariable:
        prior_dist = prior.distribution
        transform = unconstraining_transform(
            name, prior_dist.support, type(self).__name__, bijective=False
        )
        support = canonical_support(prior_dist.support)
        if self._loc_at_prior_mean:
            start = prior_location(prior_dist)
        else:
            start = prior.tensor.detach()
        unconstrained = to_unconstrained(transform, start.to(float_dtype(prior_dist)))
        return dist.PointMass(nn.Parameter(unconstrained.clone()), support)

    def extra_repr(self) -> str:
        return f"loc_at_prior_mean={self._loc_at_prior_mean}"


__all__ = ["PointMass"]
