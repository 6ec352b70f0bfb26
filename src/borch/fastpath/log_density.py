"""Log-densities of the commonest families with as few tensor operations as possible.

A training step evaluates a handful of Normal (and LogNormal) log-densities; each
torch operation costs microseconds on the CPU, in the forward pass and again in the
backward pass, so the operation count is the step's cost on small models.
:func:`log_density` computes the same values as ``distribution.log_prob(value)`` with
fewer operations, and remembers ``log(scale)`` of distributions whose scale is a
constant (priors with number arguments are shared between steps), and the constants
of half-Cauchy and half-Normal priors (the usual priors of scales). At a draw it made
itself (:mod:`borch.fastpath.draws`), a Normal's density comes from the
remembered noise. Distributions that validate their samples, and every other family,
go to ``log_prob`` unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import (
    Categorical,
    Distribution,
    HalfCauchy,
    HalfNormal,
    LogNormal,
    Normal,
)

from borch.compiling import compiling
from borch.fastpath.construction import log_scale_of
from borch.fastpath.draws import log_of, standard_noise
from borch.fastpath.memo import (
    MEMO_KEY,
    constant,
    keep,
    keep_pair,
    kept,
    kept_pair,
    memo,
)

__all__ = ["log_density"]

_HALF_LOG_TWO_PI = 0.5 * math.log(2 * math.pi)
_SQRT_TWO = math.sqrt(2.0)
_LOG_TWO_OVER_PI = math.log(2 / math.pi)


def log_density(distribution: Distribution, value: Tensor) -> Tensor:
    """``distribution.log_prob(value)``, computed with fewer operations where possible.

    Example:
        >>> import torch
        >>> normal = torch.distributions.Normal(1.0, 2.0, validate_args=False)
        >>> value = torch.tensor([0.0, 3.0])
        >>> torch.allclose(log_density(normal, value), normal.log_prob(value))
        True
    """
    kind = type(distribution)
    if kind is Normal and not distribution._validate_args:
        noise = standard_noise(distribution, value)
        if noise is not None:
            return _standard(noise) - log_scale_of(distribution)
        return _normal(distribution, value)
    if kind is LogNormal and not distribution._validate_args:
        log_value = log_of(value)
        if log_value is None:
            log_value = value.log()
        noise = standard_noise(distribution, value)
        if noise is not None:
            base = distribution.base_dist
            return _standard(noise) - (log_scale_of(base) + log_value)
        return _normal(distribution.base_dist, log_value) - log_value
    if (kind is HalfCauchy or kind is HalfNormal) and not distribution._validate_args:
        return _half(distribution, value)
    if kind is Categorical and not distribution._validate_args:
        logits = distribution.logits
        if value.shape == logits.shape[:-1] and value.dim() > 0:
            # torch's logits are normalised: the log-density is a gather, here in one
            # kernel instead of torch's unsqueeze, broadcast, gather, squeeze
            flat = F.nll_loss(
                logits.reshape(-1, logits.shape[-1]),
                value.reshape(-1).long(),
                reduction="none",
            )
            return -flat.reshape(value.shape)
    return distribution.log_prob(value)


def _normal(normal: Normal, value: Tensor) -> Tensor:
    loc, scale = normal.loc, normal.scale
    if scale.requires_grad:
        standardised = (value - loc) / scale
        offset = (-_HALF_LOG_TWO_PI) - log_scale_of(normal)
        return torch.addcmul(offset, standardised, standardised, value=-0.5)
    if scale.dtype != value.dtype:
        # The remembered terms are at the scale's precision; a value of another
        # dtype (a float32 prior of numbers at a float64 draw) takes torch's path.
        return normal.log_prob(value)
    record = normal.__dict__.get(MEMO_KEY)
    if record is not None and record.number_scale is not None:
        number = kept(record.number_scale, scale)
        if number is not None:
            return _number_scale(loc, number, value)
    negative_normaliser, inverse_width, centre = _constant_scale_terms(
        normal, loc, scale
    )
    centred = value if centre is None else value - centre
    return negative_normaliser - (centred * inverse_width).square()


def _number_scale(loc: Tensor, scale: float, value: Tensor) -> Tensor:
    """The log-density at ``value`` of a Normal whose scale is the number
    ``scale`` (a prior such as ``Normal(torch.zeros(3), 1.0)``, whose loc is a new
    tensor every step): its constants are numbers, two operations in all."""
    return _quadratic(
        value - loc, -(math.log(scale) + _HALF_LOG_TWO_PI), -0.5 / (scale * scale)
    )


def _quadratic(centred: Tensor, offset: float, weight: float) -> Tensor:
    """``offset + weight * centred**2`` in one operation (its offset a remembered
    0-d tensor)."""
    offset_tensor = constant(offset, centred.dtype, centred.device)
    return torch.addcmul(offset_tensor, centred, centred, value=weight)


def _half(distribution: HalfCauchy | HalfNormal, value: Tensor) -> Tensor:
    """The log-density of a half-Cauchy or half-Normal of a constant 0-d scale (a
    prior's, ``HalfCauchy(2.5)``): ``c - log1p(k v^2)`` or ``c + k v^2`` with the
    numbers ``c`` and ``k`` remembered, and a test of the sign (``-inf`` off the
    support, below zero or NaN, as torch gives): three operations or one, where
    torch takes eleven or ten. Any other scale, and a compiled step, take torch's
    ``log_prob``."""
    scale = distribution.scale
    if (
        scale.dim() != 0
        or scale.requires_grad
        or scale.dtype != value.dtype
        or compiling()
    ):
        return distribution.log_prob(value)
    normaliser, width = _half_terms(distribution, scale)
    if type(distribution) is HalfCauchy:
        inner = normaliser - _quadratic(value, 0.0, width).log1p()
    else:
        inner = _quadratic(value, normaliser, width)
    on_support = value >= 0  # False for NaN too, as in torch's mask
    if bool(on_support.all() if on_support.dim() else on_support):
        # A value on the support (a posterior's draw always is) needs no mask: a
        # test costs less than a masking operation and its backward.
        return inner
    return torch.where(on_support, inner, -math.inf)


def _half_terms(distribution, scale: Tensor) -> tuple[float, float]:
    """``(c, k)`` of :func:`_half` for the 0-d ``scale``, remembered while it is
    unchanged."""
    record = distribution.__dict__.get(MEMO_KEY)
    terms = None if record is None else kept(record.scale_terms, scale)
    if terms is None:
        number = float(scale)
        log_scale, inverse_square = math.log(number), 1.0 / (number * number)
        if type(distribution) is HalfCauchy:
            terms = (_LOG_TWO_OVER_PI - log_scale, inverse_square)
        else:
            terms = (0.5 * _LOG_TWO_OVER_PI - log_scale, -0.5 * inverse_square)
        memo(distribution).scale_terms = keep(terms, scale)
    return terms


def _standard(noise: Tensor) -> Tensor:
    """The standard Normal log-density of ``noise`` (which carries no gradient), in
    one operation."""
    return _quadratic(noise, -_HALF_LOG_TWO_PI, -0.5)


def _constant_scale_terms(normal: Normal, loc: Tensor, scale: Tensor) -> tuple:
    """``(-log(scale) - log(2 pi) / 2, 1 / (scale sqrt 2), loc or None when it is a
    constant zero)`` of a Normal with a constant scale (a prior's), remembered while
    loc and scale are unchanged."""
    if compiling():  # nothing to remember, and no branch on loc's values
        return -(scale.log() + _HALF_LOG_TWO_PI), (scale * _SQRT_TWO).reciprocal(), loc
    record = normal.__dict__.get(MEMO_KEY)
    if record is not None:
        terms = kept_pair(record.scale_terms, loc, scale)
        if terms is not None:
            return terms
    centre = loc if loc.requires_grad or bool(loc.any()) else None
    terms = (
        -(scale.log() + _HALF_LOG_TWO_PI),
        (scale * _SQRT_TWO).reciprocal(),
        centre,
    )
    memo(normal).scale_terms = keep_pair(terms, loc, scale)
    return terms
