"""Metrics of predictions: accuracy and error, calibration, uncertainty, coverage.

Every function takes tensors (or arrays), checks them (mismatched shapes,
probabilities outside [0, 1] and empty inputs raise errors naming the argument) and
returns tensors. ROC AUC and the calibration error use torchmetrics (the ``metrics``
extra), imported when first used.
"""

from borch.metrics.classification import (
    accuracy,
    accuracy_logit,
    binary_roc_auc,
    confusion_matrix,
    expected_calibration_error,
)
from borch.metrics.regression import (
    interval_coverage,
    log_predictive_density,
    mean_squared_error,
    r2_score,
)
from borch.metrics.suggest import metrics_for, module_metrics
from borch.metrics.uncertainty import (
    RegressionUncertainty,
    aleatoric_uncertainty,
    epistemic_uncertainty,
    predictive_entropy,
    regression_uncertainty,
)

__all__ = [
    "RegressionUncertainty",
    "accuracy",
    "accuracy_logit",
    "aleatoric_uncertainty",
    "binary_roc_auc",
    "confusion_matrix",
    "epistemic_uncertainty",
    "expected_calibration_error",
    "interval_coverage",
    "log_predictive_density",
    "mean_squared_error",
    "metrics_for",
    "module_metrics",
    "predictive_entropy",
    "r2_score",
    "regression_uncertainty",
]
