"""Choosing a prior precision from validation log densities.

Every value of :data:`VALIDATION_GRID` scores each validation point by its log
predictive density; a rule turns the ``(grid, points)`` table into one value.
``"best"`` takes the highest total. ``"one_standard_error"`` (the default) takes the
widest prior whose total is within one standard error of the best one: the scores
of two precisions are compared on the same points, so the error of their difference
is ``sqrt(points) * std(per-point differences)``. Among the priors the validation
data cannot tell apart from the best, it keeps the one with the most predictive
uncertainty, the safer choice for inputs unlike the validation data (the
one-standard-error rule of cross-validation, Breiman et al. 1984, applied to
uncertainty rather than to model size).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

#: The prior precisions ``method="validation"`` searches, widest prior first.
VALIDATION_GRID = torch.logspace(-4, 4, 33, dtype=torch.float64)

RULES = ("one_standard_error", "best")


def check_rule(rule: str) -> None:
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")


def choose(log_densities: Tensor, rule: str) -> int:
    """The index of the chosen grid value.

    Args:
        log_densities: ``(grid, points)``: each validation point's log predictive
            density under each grid value, ordered from the widest prior to the
            narrowest (``VALIDATION_GRID``'s order).
        rule: ``"one_standard_error"`` or ``"best"``.

    Example:
        >>> scores = torch.tensor([[-9.0, -9.0], [-1.2, -0.9], [-1.0, -1.0]])
        >>> choose(scores, "best"), choose(scores, "one_standard_error")
        (2, 1)
    """
    check_rule(rule)
    totals = log_densities.sum(-1)
    totals = totals.masked_fill(totals.isnan(), -math.inf)
    best = int(totals.argmax())
    if not math.isfinite(float(totals[best])):
        raise ValueError(
            "prior_precision='validation': the validation log density is not finite "
            f"at any grid value (totals {totals.tolist()})"
        )
    if rule == "best":
        return best
    points = log_densities.shape[-1]
    if points < 2:
        raise ValueError(
            "rule='one_standard_error' needs at least 2 validation points for a "
            f"standard error, got {points}; use rule='best'"
        )
    differences = log_densities - log_densities[best]
    standard_errors = differences.std(-1) * math.sqrt(points)
    within = differences.sum(-1) >= -standard_errors  # NaN or -inf: not within
    return int(within.nonzero()[0])


__all__ = ["RULES", "VALIDATION_GRID", "choose"]
