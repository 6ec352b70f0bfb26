"""What a :mod:`borch.nn` layer uses unless told otherwise: its posterior family, its
priors, and which layers keep deterministic parameters.

* **Posterior**: ``borch.posterior.Normal(log_scale=DEFAULT_LOG_SCALE,
  loc_at_prior_mean=False)``: a mean-field Normal whose loc starts at the layer's
  current weights (torch's initialisation for a new layer, the trained weights for a
  converted one) and whose scale starts small, so the network starts out predicting
  as its deterministic twin would and learns how uncertain each weight may be.
  Larger starting scales (bayesian-torch's ``softplus(-3) = 0.049``) left the
  exact-ELBO fit under-confident in the same measurements.
* **Priors**: :func:`borch.rv_factories.default_rv_factory`: ``Normal(0, 1)`` for
  every weight, bias and embedding table, the prior of bayesian-torch's and
  TensorFlow Probability's Bayesian layers. Fan-in scaled priors (He's ``sqrt(2 /
  fan_in)``, the default before) made networks trained on the exact ELBO badly
  under-confident; ``benchmarks/README.md`` has the measurements.
* **Normalisation layers** (batch, instance, layer, group and RMS norm, including lazy
  and synchronised variants: every class defined in torch's ``batchnorm``,
  ``instancenorm`` and ``normalization`` modules) keep their affine parameters as
  ordinary ``nn.Parameter``s, learned as point estimates. They have few parameters,
  their scale and shift are well determined by the data, and noise in them mostly
  slows training. Give one a prior by keyword (``nn.LayerNorm(8, weight=dist.Normal(1.0,
  0.1))``) or pass an ``rv_factory`` to make them random.
"""

from __future__ import annotations

from torch import Tensor, nn

from borch.posterior import Normal, Posterior
from borch.random_variable import RandomVariable
from borch.rv_factories import default_rv_factory

#: Initial log scale of the default Normal posterior (scale ``exp(-5) = 0.0067``).
DEFAULT_LOG_SCALE = -5.0

#: torch modules whose classes keep deterministic parameters by default.
NORMALIZATION_MODULES = frozenset(
    {
        "torch.nn.modules.batchnorm",
        "torch.nn.modules.instancenorm",
        "torch.nn.modules.normalization",
    }
)


def default_posterior() -> Posterior:
    """The posterior a :mod:`borch.nn` layer gets when none is given.

    Example:
        >>> default_posterior()
        Normal(log_scale=-5.0, loc_at_prior_mean=False)
    """
    return Normal(log_scale=DEFAULT_LOG_SCALE, loc_at_prior_mean=False)


def is_normalization(cls: type) -> bool:
    """Whether torch defines ``cls`` (or a base) among its normalisation layers.

    Example:
        >>> import torch
        >>> is_normalization(torch.nn.BatchNorm2d), is_normalization(torch.nn.Linear)
        (True, False)
    """
    return any(
        getattr(base, "__module__", None) in NORMALIZATION_MODULES
        for base in cls.__mro__
    )


def layer_prior(
    module: nn.Module, name: str, parameter: Tensor
) -> RandomVariable | None:
    """The default prior of one parameter of ``module``; ``None`` keeps it
    deterministic."""
    if is_normalization(type(module)):
        return None
    return default_rv_factory(name, parameter)


__all__ = [
    "DEFAULT_LOG_SCALE",
    "NORMALIZATION_MODULES",
    "default_posterior",
    "is_normalization",
    "layer_prior",
]
