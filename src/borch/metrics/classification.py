"""Metrics of class predictions: accuracy, confusion matrix, ROC AUC, calibration."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from borch.metrics import _checks
from borch.validation import check_count


def accuracy(predictions: Any, targets: Any) -> Tensor:
    """The fraction of predicted labels equal to the targets.

    Args:
        predictions: predicted class labels, any shape.
        targets: true labels, the same shape.

    Returns:
        A scalar tensor in [0, 1].

    Example:
        >>> accuracy(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 1, 2]))
        tensor(0.7500)
    """
    predictions = _checks.labels(predictions, "predictions")
    targets = _checks.labels(targets, "targets")
    _checks.same_shape(predictions, "predictions", targets, "targets")
    return (predictions == targets).to(torch.get_default_dtype()).mean()


def accuracy_logit(logits: Any, targets: Any) -> Tensor:
    """Accuracy of the most likely class of ``logits`` (..., classes).

    Example:
        >>> accuracy_logit(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]))
        tensor(0.5000)
    """
    logits = _checks.as_tensor(logits, "logits")
    _checks.dims_at_least(logits, "logits", 1, "(..., classes)")
    targets = _checks.labels(targets, "targets", logits.shape[-1])
    _checks.batch_match(logits, "logits", targets, "targets")
    return (logits.argmax(-1) == targets).to(logits.dtype).mean()


def confusion_matrix(
    predictions: Any, targets: Any, num_classes: int | None = None
) -> Tensor:
    """Counts ``C[i, j]`` of targets of class ``i`` predicted as class ``j``.

    Args:
        predictions: predicted labels, any shape.
        targets: true labels, the same shape.
        num_classes: the number of classes; by default one more than the largest
            label seen.

    Example:
        >>> confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 0, 1]))
        tensor([[1, 1],
                [0, 1]])
    """
    num_classes = check_count("num_classes", num_classes, allow_none=True)
    predictions = _checks.labels(predictions, "predictions", num_classes)
    targets = _checks.labels(targets, "targets", num_classes)
    _checks.same_shape(predictions, "predictions", targets, "targets")
    if num_classes is None:
        num_classes = int(max(predictions.max(), targets.max())) + 1
    index = targets.flatten() * num_classes + predictions.flatten()
    counts = torch.bincount(index, minlength=num_classes**2)
    return counts.reshape(num_classes, num_classes)


def binary_roc_auc(scores: Any, targets: Any) -> Tensor:
    """The area under the ROC curve of scores for the positive class (torchmetrics).

    Args:
        scores: probabilities or any scores (higher means positive), any shape.
        targets: 0/1 labels of the same shape, both classes present.

    Example:
        >>> binary_roc_auc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1]))
        tensor(0.7500)
    """
    scores = _checks.as_tensor(scores, "scores")
    targets = _checks.labels(targets, "targets", 2)
    _checks.same_shape(scores, "scores", targets, "targets")
    if targets.min() == targets.max():
        raise ValueError(
            f"targets are all {targets.min().item()}; ROC AUC needs both classes"
        )
    functional = _checks.torchmetrics_functional()
    if scores.min() < 0 or scores.max() > 1:
        # torchmetrics would apply a sigmoid, which saturates into ties; AUC only
        # depends on the order, which this affine map keeps.
        scores = scores.double()
        scores = (scores - scores.min()) / (scores.max() - scores.min())
    return functional.binary_auroc(scores.flatten(), targets.flatten())


def expected_calibration_error(probs: Any, targets: Any, n_bins: int = 15) -> Tensor:
    """Expected calibration error of the top-class confidence (torchmetrics).

    Predictions are binned by their largest probability into ``n_bins`` equal-width
    bins; the ECE is the average over bins, weighted by their counts, of
    ``|accuracy - mean confidence|`` (Guo et al., 2017, "On Calibration of Modern
    Neural Networks").

    Args:
        probs: class probabilities, shape (batch, classes), rows summing to one.
        targets: true labels, shape (batch,).
        n_bins: the number of confidence bins.

    Example:
        >>> probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.2, 0.8]])
        >>> expected_calibration_error(probs, torch.tensor([0, 1, 1]))
        tensor(0.3333)
    """
    probs = _checks.probabilities(probs, "probs", simplex=True)
    if probs.dim() != 2:
        raise ValueError(
            f"probs must have shape (batch, classes), got {tuple(probs.shape)}"
        )
    targets = _checks.labels(targets, "targets", probs.shape[-1])
    _checks.batch_match(probs, "probs", targets, "targets")
    n_bins = check_count("n_bins", n_bins)
    functional = _checks.torchmetrics_functional()
    return functional.multiclass_calibration_error(
        probs, targets, num_classes=probs.shape[-1], n_bins=n_bins, norm="l1"
    )


__all__ = [
    "accuracy",
    "accuracy_logit",
    "binary_roc_auc",
    "confusion_matrix",
    "expected_calibration_error",
]
