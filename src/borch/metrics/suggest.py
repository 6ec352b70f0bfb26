"""Suggest metrics for each observed variable of a model from its likelihood."""

from __future__ import annotations

from collections.abc import Callable

from torch import distributions as torch_dist
from torch import nn
from torch.distributions import constraints

from borch.metrics import classification, regression, uncertainty
from borch.sites import sites

CLASSIFICATION = {
    "accuracy": classification.accuracy,
    "confusion_matrix": classification.confusion_matrix,
    "expected_calibration_error": classification.expected_calibration_error,
    "predictive_entropy": uncertainty.predictive_entropy,
    "aleatoric_uncertainty": uncertainty.aleatoric_uncertainty,
    "epistemic_uncertainty": uncertainty.epistemic_uncertainty,
}
BINARY = {
    "accuracy": classification.accuracy,
    "binary_roc_auc": classification.binary_roc_auc,
    "confusion_matrix": classification.confusion_matrix,
}
REGRESSION = {
    "mean_squared_error": regression.mean_squared_error,
    "r2_score": regression.r2_score,
    "log_predictive_density": regression.log_predictive_density,
    "interval_coverage": regression.interval_coverage,
    "regression_uncertainty": uncertainty.regression_uncertainty,
}
COUNTS = {
    "mean_squared_error": regression.mean_squared_error,
    "log_predictive_density": regression.log_predictive_density,
    "interval_coverage": regression.interval_coverage,
}


def metrics_for(distribution: torch_dist.Distribution) -> dict[str, Callable]:
    """Metrics suited to data from ``distribution``, by its support.

    Categorical labels get classification metrics, Bernoulli ones binary metrics,
    counts (non-negative integers) count metrics and continuous data regression
    metrics; other supports (simplexes, matrices, ...) get the log predictive density
    only.
    """
    support = distribution.support
    if isinstance(distribution, torch_dist.Categorical | torch_dist.OneHotCategorical):
        return dict(CLASSIFICATION)
    if support is constraints.boolean:
        return dict(BINARY)
    if support.is_discrete:
        return dict(COUNTS)
    if support.event_dim == 0:
        return dict(REGRESSION)
    return {"log_predictive_density": regression.log_predictive_density}


def module_metrics(module: nn.Module) -> dict[str, dict[str, Callable]]:
    """``{qualified name: {metric name: function}}`` for every observed variable the
    model used in its last run (run the model once first).

    Example:
        >>> import torch
        >>> import borch
        >>> from borch import distributions as dist
        >>> model = borch.Module()
        >>> model.observe(label=torch.tensor([0, 1]), y=torch.tensor([0.5, 1.0]))
        >>> model.label = dist.Categorical(logits=torch.zeros(2, 3))
        >>> model.y = dist.Normal(torch.zeros(2), 1.0)
        >>> {name: sorted(found)[:2] for name, found in module_metrics(model).items()}
        {'label': ['accuracy', 'aleatoric_uncertainty'], 'y': ['interval_coverage', 'log_predictive_density']}
    """
    if not isinstance(module, nn.Module):
        raise TypeError(
            f"module_metrics: module must be a torch.nn.Module, got "
            f"{type(module).__name__}"
        )
    found = {
        site.name: metrics_for(site.prior.distribution)
        for site in sites(module)
        if site.observed
    }
    if not found:
        raise ValueError(
            "module_metrics: the model used no observed variable since the last "
            "borch.sample; observe data and run the model once first"
        )
    return found


__all__ = ["metrics_for", "module_metrics"]
