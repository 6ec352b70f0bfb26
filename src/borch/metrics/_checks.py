"""Validation of metric inputs: every error names the argument and what was wrong."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def as_tensor(value: Any, name: str, *, floating: bool = True) -> Tensor:
    """``value`` as a non-empty, finite tensor (float unless ``floating=False``)."""
    if isinstance(value, str | bytes) or value is None:
        raise TypeError(f"{name} must be a tensor or array, got {type(value).__name__}")
    try:
        tensor = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(
            f"{name} must be a tensor or array, got {type(value).__name__}: {error}"
        ) from None
    if tensor.is_complex():
        raise TypeError(f"{name} must be real, got dtype {tensor.dtype}")
    if tensor.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(tensor.shape)})")
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{name} has non-finite values (NaN or inf)")
    if floating and not tensor.is_floating_point():
        tensor = tensor.to(torch.get_default_dtype())
    return tensor


def probabilities(value: Any, name: str, *, simplex: bool = False) -> Tensor:
    """``value`` as probabilities in [0, 1]; with ``simplex`` also summing to one
    along the last dimension."""
    tensor = as_tensor(value, name)
    low, high = tensor.min().item(), tensor.max().item()
    if low < 0 or high > 1:
        raise ValueError(
            f"{name} must be probabilities in [0, 1], got values in [{low}, {high}]"
        )
    if simplex:
        if tensor.dim() == 0:
            raise ValueError(f"{name} needs a class dimension, got a scalar")
        totals = tensor.sum(-1)
        worst = (totals - 1).abs().max().item()
        if worst > 1e-3:
            raise ValueError(
                f"{name} must sum to 1 over its last (class) dimension; a row sums "
                f"to {1 + worst if totals.max() > 1 else 1 - worst}"
            )
    return tensor


def labels(value: Any, name: str, num_classes: int | None = None) -> Tensor:
    """``value`` as integer class labels (long), in ``[0, num_classes)`` if given."""
    tensor = as_tensor(value, name, floating=False)
    if tensor.is_floating_point() and not bool((tensor == tensor.round()).all()):
        raise ValueError(f"{name} must be integer class labels, got fractions")
    tensor = tensor.long()
    if tensor.min().item() < 0:
        raise ValueError(f"{name} must be non-negative labels, got {tensor.min()}")
    if num_classes is not None and tensor.max().item() >= num_classes:
        raise ValueError(
            f"{name} has label {tensor.max().item()}, but there are only "
            f"{num_classes} classes"
        )
    return tensor


def same_shape(first: Tensor, first_name: str, second: Tensor, second_name: str):
    if first.shape != second.shape:
        raise ValueError(
            f"{first_name} has shape {tuple(first.shape)} but {second_name} has "
            f"{tuple(second.shape)}; they must match"
        )


def batch_match(
    predictions: Tensor, predictions_name: str, targets: Tensor, targets_name: str
):
    """``predictions`` of shape ``(*targets.shape, classes)``."""
    if predictions.shape[:-1] != targets.shape:
        raise ValueError(
            f"{predictions_name} has shape {tuple(predictions.shape)}, so "
            f"{targets_name} must have shape {tuple(predictions.shape[:-1])}, got "
            f"{tuple(targets.shape)}"
        )


def dims_at_least(tensor: Tensor, name: str, dims: int, layout: str):
    if tensor.dim() < dims:
        raise ValueError(f"{name} must have shape {layout}, got {tuple(tensor.shape)}")


def torchmetrics_functional():
    """``torchmetrics.functional.classification``, or an error saying how to get it."""
    try:
        from torchmetrics.functional import classification
    except ImportError:  # pragma: no cover - the test environment has it
        raise ImportError(
            "this metric uses torchmetrics: pip install 'borch[metrics]'"
        ) from None
    return classification


__all__ = [
    "as_tensor",
    "batch_match",
    "dims_at_least",
    "labels",
    "probabilities",
    "same_shape",
    "torchmetrics_functional",
]
