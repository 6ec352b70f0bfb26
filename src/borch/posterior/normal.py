"""Normal approximations in unconstrained space: ``Normal`` and ``ScaledNormal``."""

from __future__ import annotations

import math

import torch

from borch.posterior.approximations import (
    normal_approximation,
    prior_location,
    prior_spread,
    require_density,
    unconstraining_transform,
)
from borch.posterior.base import Posterior
from borch.random_variable import RandomVariable


class Normal(Posterior):
    """Approximate each continuous prior by a Normal with a learnable loc and scale.

    The loc starts at the prior's mean (its current value with
    ``loc_at_prior_mean=False``), the scale at ``exp(log_scale)``. A narrow start gives
    low-variance gradients early in training; the scale widens as the fit needs. On a
    constrained support the Normal lives in unconstrained space and is pushed through
    ``transform_to(support)``. The hierarchy of the model is not kept.

    Args:
        log_scale: initial log of the scale.
        loc_at_prior_mean: start the loc at the prior's mean rather than at its
            current value.

    Example:
        >>> import borch
        >>> from borch import distributions as dist
        >>> model = borch.Module(posterior=Normal(log_scale=0.0))
        >>> model.t = dist.StudentT(3.0, 3.0, 4.0)
        >>> model.posterior.t.distribution
        Normal(loc: 3.0, scale: 1.0)
        >>> model.g = dist.Gamma(2.0, 2.0)
        >>> type(model.posterior.g).__name__  # a Normal pushed onto (0, inf)
        'TransformedDistribution'
        >>> model.k = dist.Poisson(3.0)
        Traceback (most recent call last):
        ...
        ValueError: posterior.Normal cannot approximate random variable 'k': its prior has discrete support IntegerGreaterThan(lower_bound=0). Use posterior.Automatic(), posterior.AsPrior() or posterior.Manual() (they learn discrete variables with score-function gradients), or pair it with an approximation of your own through borch.RVPair.
    """

    def __init__(self, log_scale: float = -3.0, loc_at_prior_mean: bool = True) -> None:
        super().__init__()
        log_scale = float(log_scale)
        if not math.isfinite(log_scale):
            raise ValueError(f"log_scale must be finite, got {log_scale}")
        self._log_scale = log_scale
        self._loc_at_prior_mean = bool(loc_at_prior_mean)

    def _location(self, prior: RandomVariable):
        if not self._loc_at_prior_mean:
            return prior.tensor.detach()
        location = prior_location(prior.distribution)
        value = prior.last_value  # never draws: the user's generator stays as it is
        if value is not None and location.shape != value.shape:
            # A prior of numbers whose value has a shape (borch.nn's priors hold
            # their parameter's value): one location per element of the value.
            location = torch.broadcast_to(location, value.shape).clone()
        return location

    def register_random_variable(
        self, name: str, prior: RandomVariable
    ) -> RandomVariable:
        prior_dist = prior.distribution
        require_density(name, prior_dist, type(self).__name__)
        unconstraining_transform(name, prior_dist.support, type(self).__name__)
        return normal_approximation(
            name,
            prior_dist,
            self._location(prior),
            math.exp(self._log_scale),
            type(self).__name__,
        )

    def extra_repr(self) -> str:
        return (
            f"log_scale={self._log_scale}, loc_at_prior_mean={self._loc_at_prior_mean}"
        )


class ScaledNormal(Normal):
    """A :class:`Normal` approximation whose scale starts at ``scaling`` times the
    prior's spread.

    The spread is the prior's standard deviation (for StudentT and Cauchy priors,
    whose variance may be infinite, their ``scale``), measured in unconstrained space
    for constrained priors.

    Args:
        scaling: initial scale as a fraction of the prior's spread.
        loc_at_prior_mean: start the loc at the prior's mean rather than at its
            current value.

    Example:
        >>> import borch
        >>> from borch import distributions as dist
        >>> model = borch.Module(posterior=ScaledNormal(scaling=0.1))
        >>> model.t = dist.StudentT(3.0, 3.0, 4.0)
        >>> round(float(model.posterior.t.scale), 2)
        0.4
        >>> model.n = dist.Normal(0.0, 2.0)
        >>> round(float(model.posterior.n.scale), 2)
        0.2
    """

    def __init__(self, scaling: float = 0.01, loc_at_prior_mean: bool = True) -> None:
        scaling = float(scaling)
        if not (math.isfinite(scaling) and scaling > 0):
            raise ValueError(f"scaling must be a positive number, got {scaling}")
        super().__init__(
            log_scale=math.log(scaling), loc_at_prior_mean=loc_at_prior_mean
        )
        self._scaling = scaling

    def register_random_variable(
        self, name: str, prior: RandomVariable
    ) -> RandomVariable:
        prior_dist = prior.distribution
        family = type(self).__name__
        require_density(name, prior_dist, family)
        transform = unconstraining_transform(name, prior_dist.support, family)
        location = self._location(prior)
        spread = prior_spread(prior_dist, transform, location)
        return normal_approximation(
            name, prior_dist, location, self._scaling * spread, family
        )

    def extra_repr(self) -> str:
        return f"scaling={self._scaling}, loc_at_prior_mean={self._loc_at_prior_mean}"


__all__ = ["Normal", "ScaledNormal"]
