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
    key = (type(as_distribution(p)), type(as_distribution(q)))
    # torch's dispatch walks the whole registry (hundreds of issubclass calls), which
    # showed up in every training step; remember the answer per pair of types until
    # someone registers a new KL.
    if len(_kl._KL_REGISTRY) != _exists_cache_registry_size[0]:
        _exists_cache.clear()
        _exists_cache_registry_size[0] = len(_kl._KL_REGISTRY)
    try:
        return _exists_cache[key]
    except KeyError:
        exists = _exists_cache[key] = _kl._dispatch_kl(*key) is not NotImplemented
        return exists


_exists_cache: dict[tuple[type, type], bool] = {}
_exists_cache_registry_size = [0]


__all__ = ["DistributionLike", "as_distribution", "kl_divergence", "kl_exists"]
