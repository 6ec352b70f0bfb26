"""Priors for the parameters of a network: functions ``factory(name, parameter)``.

A factory receives a parameter's name and its current value and returns a prior
random variable. The prior's current value is set to the parameter's value
(``rv.tensor = parameter.detach()``), so a posterior that starts at the prior's
current value (``borch.posterior.Normal(loc_at_prior_mean=False)``, the default of
:mod:`borch.nn`) starts at the weights the network already has: torch's
initialisation for a new layer, the trained weights for a converted network.

Factories are what :func:`borch.nn.borchify_module`, :func:`borch.nn.borchify_network`
and the ``rv_factory=`` argument of every :mod:`borch.nn` layer take.

Example:
    >>> import torch
    >>> from borch import rv_factories
    >>> weight = torch.nn.Parameter(torch.full((3, 50), 0.1))
    >>> prior = rv_factories.kaiming_normal_rv("weight", weight)
    >>> prior
    Normal(loc=0.0, scale=0.2)
    >>> bool((prior.tensor == weight).all())
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor
from torch.nn import init

from borch import distributions as dist
from borch.random_variable import RandomVariable

#: ``factory(name, parameter) -> prior`` (``None``: keep the parameter)
RVFactory = Callable[[str, Tensor], RandomVariable | None]


def _with_value(prior: RandomVariable, parameter: Tensor) -> RandomVariable:
    """``prior`` with its current value set to the parameter's value."""
    prior.tensor = parameter.detach().clone()
    return prior


def _fan_in(parameter: Tensor) -> int:
    """torch's fan-in of a weight (inputs times receptive field); 1 for vectors."""
    if parameter.dim() < 2:
        return 1
    fan_in, _ = init._calculate_fan_in_and_fan_out(parameter)
    return max(int(fan_in), 1)


def _fan_out(parameter: Tensor) -> int:
    if parameter.dim() < 2:
        return 1
    _, fan_out = init._calculate_fan_in_and_fan_out(parameter)
    return max(int(fan_out), 1)


def _check_positive(name: str, value: float) -> float:
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value}")
    return value


def parameter_to_normal_rv(
    name: str, parameter: Tensor, prior_mean: float = 0.0, prior_sd: float = 1.0
) -> RandomVariable:
    """A ``Normal(prior_mean, prior_sd)`` prior for every element of the parameter.

    Example:
        >>> import torch
        >>> parameter_to_normal_rv("bias", torch.zeros(4), prior_sd=0.5)
        Normal(loc=0.0, scale=0.5)
    """
    prior_sd = _check_positive("prior_sd", prior_sd)
    return _with_value(dist.Normal(float(prior_mean), prior_sd), parameter)


def parameter_to_scaled_normal_rv(
    name: str,
    parameter: Tensor,
    std_fn: Callable[[Tensor], float] | None = None,
    std_scale: float = 1.0,
) -> RandomVariable:
    """A zero-mean Normal prior whose scale is ``std_scale * std_fn(parameter)``.

    Args:
        name: the parameter's name.
        parameter: its value.
        std_fn: the standard deviation for this parameter (default:
            ``1 / sqrt(fan_in)``, LeCun et al., 1998, "Efficient BackProp", which
            keeps the variance of a linear layer's output equal to its input's).
        std_scale: a factor on that standard deviation.

    Example:
        >>> import torch
        >>> parameter_to_scaled_normal_rv("weight", torch.zeros(2, 25), std_scale=2.0)
        Normal(loc=0.0, scale=0.4)
    """
    std_scale = _check_positive("std_scale", std_scale)
    if std_fn is None:
        std = 1.0 / math.sqrt(_fan_in(parameter))
    else:
        std = _check_positive(f"std_fn({name!r})", std_fn(parameter))
    return _with_value(dist.Normal(0.0, std * std_scale), parameter)


def kaiming_normal_rv(name: str, parameter: Tensor) -> RandomVariable:
    """``Normal(0, sqrt(2 / fan_in))``: He et al., 2015, "Delving Deep into
    Rectifiers". Weights drawn from it keep the scale of activations through ReLU
    layers.

    Example:
        >>> import torch
        >>> kaiming_normal_rv("weight", torch.zeros(8, 2))
        Normal(loc=0.0, scale=1.0)
    """
    return _with_value(dist.Normal(0.0, math.sqrt(2.0 / _fan_in(parameter))), parameter)


def xavier_normal_rv(name: str, parameter: Tensor) -> RandomVariable:
    """``Normal(0, sqrt(2 / (fan_in + fan_out)))``: Glorot & Bengio, 2010,
    "Understanding the difficulty of training deep feedforward neural networks".

    Example:
        >>> import torch
        >>> xavier_normal_rv("weight", torch.zeros(3, 5))
        Normal(loc=0.0, scale=0.5)
    """
    fan_in, fan_out = _fan_in(parameter), _fan_out(parameter)
    return _with_value(dist.Normal(0.0, math.sqrt(2.0 / (fan_in + fan_out))), parameter)


def parameter_to_maxwidth_uniform(name: str, parameter: Tensor) -> RandomVariable:
    """A ``Uniform(-w, w)`` prior as wide as the parameter's largest magnitude
    (``w = max |parameter|``, or 1 for an all-zero parameter), so the parameter's
    current value lies inside its support.

    The bounds are widened by a relative ``1e-6`` so the largest value itself is in
    the open support.

    Example:
        >>> import torch
        >>> prior = parameter_to_maxwidth_uniform("weight", torch.tensor([-0.5, 0.25]))
        >>> round(float(prior.high), 4)
        0.5
    """
    width = float(parameter.detach().abs().max()) if parameter.numel() else 0.0
    if not math.isfinite(width):
        raise ValueError(
            f"parameter {name!r} has non-finite values; a uniform prior needs finite "
            "bounds"
        )
    width = width * (1 + 1e-6) if width > 0 else 1.0
    return _with_value(dist.Uniform(-width, width), parameter)


def delta_rv(name: str, parameter: Tensor) -> RandomVariable:
    """A ``Delta`` prior at the parameter's value: the parameter stays fixed.

    Example:
        >>> import torch
        >>> prior = delta_rv("weight", torch.ones(2))
        >>> prior.tensor
        tensor([1., 1.])
    """
    return _with_value(dist.Delta(parameter.detach().clone()), parameter)


def default_rv_factory(name: str, parameter: Tensor) -> RandomVariable:
    """The prior :mod:`borch.nn` layers use unless told otherwise: ``Normal(0, 1)``
    for every parameter, weights and vectors alike.

    It is the default of bayesian-torch's and TensorFlow Probability's Bayesian
    layers and the prior of Wenzel et al., 2020 ("How Good is the Bayes Posterior in
    Deep Neural Networks Really?"). Priors scaled to the fan-in (He's ``sqrt(2 /
    fan_in)``, :func:`kaiming_normal_rv`) are tight enough that the exact ELBO pulls
    a mean-field posterior's weights towards zero: on scikit-learn's digits a
    64-128-10 MLP trained on the exact ELBO under them reached accuracy 0.94-0.96 and
    ECE 0.13-0.16, against 0.96-0.98 and 0.016-0.019 under ``Normal(0, 1)``, level
    with bayesian-torch and the deterministic twin (``benchmarks/bnn_defaults.py``,
    ``benchmarks/README.md``). Torch's initialisation of any layer lies well inside
    it.

    Example:
        >>> import torch
        >>> default_rv_factory("weight", torch.zeros(4, 32))
        Normal(loc=0.0, scale=1.0)
        >>> default_rv_factory("bias", torch.zeros(4))
        Normal(loc=0.0, scale=1.0)
    """
    return parameter_to_normal_rv(name, parameter)


def check_rv_factory(rv_factory: object) -> RVFactory:
    """``rv_factory`` if it is callable; a ``TypeError`` naming it otherwise."""
    if not callable(rv_factory):
        raise TypeError(
            "rv_factory must be a callable factory(name, parameter) -> RandomVariable, "
            f"got {type(rv_factory).__name__}"
        )
    return rv_factory


def apply_rv_factory(
    rv_factory: RVFactory, name: str, parameter: Tensor
) -> RandomVariable | None:
    """Call a factory and check what it returns: a random variable, or ``None`` to
    keep the parameter as it is."""
    with torch.no_grad():
        prior = rv_factory(name, parameter)
    if prior is not None and not isinstance(prior, RandomVariable):
        raise TypeError(
            f"rv_factory {getattr(rv_factory, '__name__', rv_factory)!r} returned "
            f"{type(prior).__name__} for parameter {name!r}; expected a "
            "borch RandomVariable (or None to keep the parameter)"
        )
    return prior


__all__ = [
    "RVFactory",
    "apply_rv_factory",
    "check_rv_factory",
    "default_rv_factory",
    "delta_rv",
    "kaiming_normal_rv",
    "parameter_to_maxwidth_uniform",
    "parameter_to_normal_rv",
    "parameter_to_scaled_normal_rv",
    "xavier_normal_rv",
]
