"""Kullback-Leibler divergences between random variables or torch distributions."""

from __future__ import annotations

from torch import Tensor
from torch.distributions import Distribution
from torch.distributions import kl as _kl

from borch.random_variable import RandomVariable

DistributionLike = Distribution | RandomVariable


def as_distribution(value: DistributionLike) -> Distribution:
    """The ``torch.distributions`` object of a random variable (or the object itself)."""
    if isinstance(value, RandomVariable):
        return value.distribution
    if isinstance(value, Distribution):
        return value
    raise TypeError(
        f"expected a random variable or a torch distribution, got {type(value).__name__}"
    )


def kl_divergence(p: DistributionLike, q: DistributionLike) -> Tensor:
    """``KL(p || q)``, analytically, for random variables or torch distributions.

    Raises ``NotImplementedError`` when torch has no closed form for the pair.

    Example:
        >>> from borch import distributions as dist
        >>> kl_divergence(dist.Normal(0.0, 1.0), dist.Normal(1.0, 1.0))
        tensor(0.5000)
    """
    return _kl.kl_divergence(as_distribution(p), as_distribution(q))


def kl_exists(p: DistributionLike, q: DistributionLike) -> bool:
    """Whether a closed-form ``KL(p || q)`` is registered for the pair of types.

    Example:
        >>> from borch import distributions as dist
        >>> kl_exists(dist.Normal(0.0, 1.0), dist.Normal(1.0, 1.0))
        True
        >>> kl_exists(dist.Normal(0.0, 1.0), dist.StudentT(3.0))
        False
    """
    p_type = type(as_distribution(p))
    q_type = type(as_distribution(q))
    return _kl._dispatch_kl(p_type, q_type) is not NotImplemented
