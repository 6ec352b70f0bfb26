"""Uncertainty decomposition of predictive distributions.

For classification from class probabilities ``p[s, b, c]`` of posterior draws ``s``:
the entropy of the mean prediction (total) is the mean entropy of the draws
(aleatoric) plus their mutual information with the parameters (epistemic); Depeweg et
al., 2018, "Decomposition of Uncertainty in Bayesian Deep Learning". For regression,
by the law of total variance, the predictive variance is the mean likelihood
variance (aleatoric) plus the variance of the means (epistemic).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from borch.metrics import _checks


def _class_probabilities(probs: Any) -> Tensor:
    probs = _checks.probabilities(probs, "probs", simplex=True)
    _checks.dims_at_least(probs, "probs", 3, "(samples, batch, classes)")
    return probs


def _entropy(probs: Tensor) -> Tensor:
    return -torch.special.xlogy(probs, probs).sum(-1)


def _decompose(probs: Any) -> tuple[Tensor, Tensor]:
    """(aleatoric, epistemic); the total is their sum, so it holds exactly."""
    probs = _class_probabilities(probs)
    aleatoric = _entropy(probs).mean(0)
    return aleatoric, _entropy(probs.mean(0)) - aleatoric


def predictive_entropy(probs: Any) -> Tensor:
    """Entropy of the mean class probabilities, per batch element (in nats).

    Computed as ``aleatoric_uncertainty + epistemic_uncertainty`` so that the
    decomposition holds bit for bit (it differs from the direct entropy by rounding).

    Args:
        probs: class probabilities, shape (samples, batch, classes).

    Example:
        >>> probs = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
        >>> predictive_entropy(probs)
        tensor([0.6931])
    """
    aleatoric, epistemic = _decompose(probs)
    return aleatoric + epistemic


def aleatoric_uncertainty(probs: Any) -> Tensor:
    """The expected entropy of the class probabilities over draws, per batch element.

    Example:
        >>> aleatoric_uncertainty(torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]]))
        tensor([0.])
    """
    return _decompose(probs)[0]


def epistemic_uncertainty(probs: Any) -> Tensor:
    """The mutual information of prediction and parameters, per batch element: the
    entropy of the mean prediction minus the mean entropy.

    Example:
        >>> epistemic_uncertainty(torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]]))
        tensor([0.6931])
    """
    return _decompose(probs)[1]


class RegressionUncertainty(NamedTuple):
    """Predictive variance split by the law of total variance; ``total`` equals
    ``aleatoric + epistemic``."""

    total: Tensor
    aleatoric: Tensor
    epistemic: Tensor


def regression_uncertainty(means: Any, scales: Any) -> RegressionUncertainty:
    """Aleatoric (mean likelihood variance) and epistemic (variance of the means)
    predictive variance, per batch element.

    Args:
        means: the likelihood's mean per posterior draw, shape ``(samples, *batch)``.
        scales: its standard deviation per draw, broadcastable to ``means``.

    Example:
        >>> means = torch.tensor([[0.0], [2.0]])
        >>> regression_uncertainty(means, torch.tensor([[1.0], [3.0]]))
        RegressionUncertainty(total=tensor([6.]), aleatoric=tensor([5.]), epistemic=tensor([1.]))
    """
    means = _checks.as_tensor(means, "means")
    scales = _checks.as_tensor(scales, "scales")
    _checks.dims_at_least(means, "means", 1, "(samples, *batch)")
    if bool((scales < 0).any()):
        raise ValueError("scales must be non-negative standard deviations")
    try:
        scales = scales.expand_as(means)
    except RuntimeError:
        raise ValueError(
            f"scales has shape {tuple(scales.shape)}, which does not broadcast to "
            f"the shape of means {tuple(means.shape)}"
        ) from None
    aleatoric = scales.pow(2).mean(0)
    epistemic = means.var(0, correction=0)
    return RegressionUncertainty(aleatoric + epistemic, aleatoric, epistemic)


__all__ = [
    "RegressionUncertainty",
    "aleatoric_uncertainty",
    "epistemic_uncertainty",
    "predictive_entropy",
    "regression_uncertainty",
]
