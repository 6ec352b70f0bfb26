"""Summed log densities of values under distributions (log likelihoods)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from borch.distributions.kl import DistributionLike, as_distribution
from borch.handlers import weighted

__all__ = ["log_prob", "negative_log_prob"]


def log_prob(
    p_dists: Sequence[DistributionLike],
    values: Sequence[Tensor],
    scales: Sequence | None = None,
    masks: Sequence | None = None,
) -> Tensor:
    """``sum_i log p_i(x_i)`` over every element of every value.

    ``scales`` and ``masks`` (one per value, as :func:`borch.pq_to_infer` gives them
    under :func:`borch.scale` and :func:`borch.mask`) weight the terms.

    Example:
        >>> import torch
        >>> import torch.distributions as td
        >>> log_prob([td.Normal(0.0, 1.0)] * 2, [torch.tensor(0.0)] * 2)
        tensor(-1.8379)
        >>> log_prob([td.Normal(0.0, 1.0)], [torch.zeros(2)], masks=[torch.tensor([True, False])])
        tensor(-0.9189)
    """
    for name, items in (("scales", scales), ("masks", masks)):
        if items is not None and len(items) != len(values):
            raise ValueError(f"log_prob: {len(values)} values but {len(items)} {name}")
    if len(p_dists) != len(values):
        raise ValueError(
            f"log_prob: {len(p_dists)} distributions but {len(values)} values"
        )
    total = torch.zeros(())
    for index, (p_dist, value) in enumerate(zip(p_dists, values)):
        term = as_distribution(p_dist).log_prob(value)
        scale = 1.0 if scales is None else scales[index]
        mask = None if masks is None else masks[index]
        total = total + weighted(term, scale, mask, f"value {index}").sum()
    return total


def negative_log_prob(
    p_dists: Sequence[DistributionLike],
    values: Sequence[Tensor],
    scales: Sequence | None = None,
    masks: Sequence | None = None,
) -> Tensor:
    """``-log_prob(p_dists, values, scales, masks)``: the negative log likelihood of
    observations.

    Example:
        >>> import torch
        >>> import torch.distributions as td
        >>> negative_log_prob([td.Normal(0.0, 1.0)], [torch.tensor(0.0)])
        tensor(0.9189)
    """
    return -log_prob(p_dists, values, scales, masks)
