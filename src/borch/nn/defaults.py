"""What a :mod:`borch.nn` layer uses unless told otherwise: its posterior family, its
priors, and which layers keep deterministic parameters.

* **Posterior**: ``borch.posterior.Normal(log_scale=DEFAULT_LOG_SCALE,
  loc_at_prior_mean=False)``: a mean-field Normal whose loc starts at the layer's
  current weights (torch's initialisation for a new layer, the trained weights for a
  converted one) and whose scale starts small, so the network starts out predicting
  as its deterministic twin would and learns how uncertain each weight may be.
* **Priors**: :func:`borch.rv_factories.default_rv_factory`: ``Normal(0, sqrt(2 /
  fan_in))`` for weights (He et al., 2015), ``Normal(0, 1)`` for vectors.
  Embedding tables get ``Normal(0, 1)``, the spread of torch's own initialisation of
  them, as they have no fan-in in the usual sense.
* **Normalisation layers** (batch, instance, layer, group and RMS norm, including lazy
  and synchronised variants: every class defined in torch's ``batchnorm``,
  ``instancenorm`` and ``normalization`` modules) keep their affine parameters as
  ordinary ``nn.Parameter``s, learned as point estimates. They have few parameters,
  their scale and shift are well determined by the data, and noise in them mostly
  slows training. Give one a prior by keyword (``nn.LayerNorm(8, weight=dist.Normal(1.0,
  0.1))``) or pass an ``rv_factory`` to make them random.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from borch.posterior import Normal, Posterior
from borch.random_variable import RandomVariable
from borch.rv_factories import default_rv_factory, parameter_to_normal_rv

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

#: Classes whose parameters get ``Normal(0, 1)`` priors (torch initialises them so).
STANDARD_NORMAL_PRIOR = (nn.Embedding, nn.EmbeddingBag)


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
    if isinstance(module, STANDARD_NORMAL_PRIOR):
        with torch.no_grad():
            return parameter_to_normal_rv(name, parameter)
    return default_rv_factory(name, parameter)


__all__ = [
    "DEFAULT_LOG_SCALE",
    "NORMALIZATION_MODULES",
    "STANDARD_NORMAL_PRIOR",
    "default_posterior",
    "is_normalization",
    "layer_prior",
]
