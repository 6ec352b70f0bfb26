"""Summed log densities of values under distributions."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from borch.distributions.kl import DistributionLike, as_distribution


def log_prob(p_dists: Sequence[DistributionLike], values: Sequence[Tensor]) -> Tensor:
    """``sum_i log p_i(x_i)`` over every element of every value.

    Example:
        >>> import torch
        >>> import torch.distributions as td
        >>> log_prob([td.Normal(0.0, 1.0)] * 2, [torch.tensor(0.0)] * 2)
        tensor(-1.8379)
    """
    if len(p_dists) != len(values):
        raise ValueError(
            f"log_prob: {len(p_dists)} distributions but {len(values)} values"
        )
    total = torch.zeros(())
    for p_dist, value in zip(p_dists, values):
        total = total + as_distribution(p_dist).log_prob(value).sum()
    return total


def negative_log_prob(
    p_dists: Sequence[DistributionLike], values: Sequence[Tensor]
) -> Tensor:
    """``-log_prob(p_dists, values)``: the negative log likelihood of observations.

    Example:
        >>> import torch
        >>> import torch.distributions as td
        >>> negative_log_prob([td.Normal(0.0, 1.0)], [torch.tensor(0.0)])
        tensor(0.9189)
    """
    return -log_prob(p_dists, values)
