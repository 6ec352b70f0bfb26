"""Metrics of real-valued predictions and of predictive samples."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from borch.metrics import _checks


def mean_squared_error(predictions: Any, targets: Any) -> Tensor:
    """The mean of ``(predictions - targets) ** 2``.

    Example:
        >>> mean_squared_error(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 4.0]))
        tensor(2.)
    """
    predictions = _checks.as_tensor(predictions, "predictions")
    targets = _checks.as_tensor(targets, "targets")
    _checks.same_shape(predictions, "predictions", targets, "targets")
    return (predictions - targets).pow(2).mean()


def r2_score(predictions: Any, targets: Any) -> Tensor:
    """The coefficient of determination ``1 - SS_res / SS_tot``, over all elements.

    Example:
        >>> r2_score(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 4.0]))
        tensor(0.7857)
    """
    predictions = _checks.as_tensor(predictions, "predictions")
    targets = _checks.as_tensor(targets, "targets")
    _checks.same_shape(predictions, "predictions", targets, "targets")
    total = (targets - targets.mean()).pow(2).sum()
    if total == 0:
        raise ValueError("targets are all equal: r2_score is undefined")
    return 1 - (targets - predictions).pow(2).sum() / total


def log_predictive_density(log_likelihoods: Any) -> Tensor:
    """``log mean_s p(y | theta_s)`` per data point, from per-draw log likelihoods.

    Args:
        log_likelihoods: ``log p(y_i | theta_s)``, shape ``(samples, *batch)``.

    Returns:
        Shape ``(*batch)``; sum it for the log pointwise predictive density (Gelman,
        Hwang and Vehtari, 2014, "Understanding predictive information criteria").

    Example:
        >>> log_predictive_density(torch.log(torch.tensor([[0.2], [0.4]])))
        tensor([-1.2040])
    """
    values = _checks.as_tensor(log_likelihoods, "log_likelihoods")
    _checks.dims_at_least(values, "log_likelihoods", 1, "(samples, *batch)")
    return torch.logsumexp(values, 0) - math.log(values.shape[0])


def interval_coverage(samples: Any, targets: Any, level: float = 0.9) -> Tensor:
    """The fraction of targets inside the central ``level`` predictive interval.

    Args:
        samples: predictive draws, shape ``(samples, *batch)``.
        targets: observed values, shape ``(*batch)``.
        level: the probability mass of the interval, in (0, 1).

    Example:
        >>> draws = torch.linspace(0.0, 1.0, 101)[:, None].expand(101, 3)
        >>> interval_coverage(draws, torch.tensor([0.5, 0.02, 0.97]), level=0.9)
        tensor(0.3333)
    """
    samples = _checks.as_tensor(samples, "samples")
    targets = _checks.as_tensor(targets, "targets")
    if samples.shape[1:] != targets.shape:
        raise ValueError(
            f"samples has shape {tuple(samples.shape)}, so targets must have shape "
            f"{tuple(samples.shape[1:])}, got {tuple(targets.shape)}"
        )
    if not isinstance(level, float | int) or not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    tails = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=samples.dtype)
    low, high = torch.quantile(samples, tails.to(samples.device), dim=0)
    inside = (targets >= low) & (targets <= high)
    return inside.to(samples.dtype).mean()


__all__ = [
    "interval_coverage",
    "log_predictive_density",
    "mean_squared_error",
    "r2_score",
]
