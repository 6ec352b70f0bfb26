"""Operations on the batch of a torch distribution: selecting rows, filling masked
elements.

torch distributions hold their parameters at their batch shape (``Normal``
broadcasts ``loc`` and ``scale``; ``MultivariateNormal`` keeps ``loc`` at ``batch +
event``), so rows of a batch dimension are rows of every tensor attribute whose
leading dimensions are the batch shape. Attributes with other shapes (an
unbroadcast scale shared by every row) are shared by the selected rows too.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor
from torch.distributions import Distribution

from borch.fastpath.memo import detached_vars

__all__ = ["fill_masked", "select_batch"]


def select_batch(
    distribution: Distribution, axis: int, index: int | Tensor
) -> Distribution:
    """The distribution of some rows of batch dimension ``axis`` (counted from the
    left of the batch shape): an int drops the dimension, a 1-d index tensor keeps
    it with ``len(index)`` rows. Gradients flow to the original's parameters.

    Example:
        >>> import torch
        >>> normal = torch.distributions.Normal(torch.arange(6.0).reshape(3, 2), 1.0)
        >>> select_batch(normal, 0, torch.tensor([2, 0])).loc
        tensor([[4., 5.],
                [0., 1.]])
        >>> select_batch(normal, 1, 1).batch_shape
        torch.Size([3])
    """
    batch = distribution.batch_shape
    if not 0 <= axis < len(batch):
        raise ValueError(
            f"select_batch: axis {axis} is not a batch dimension of "
            f"{type(distribution).__name__} with batch shape {tuple(batch)}"
        )
    rank = len(batch)
    clone = copy.copy(distribution)
    state = clone.__dict__
    state.clear()
    for key, value in detached_vars(distribution).items():
        if isinstance(value, Distribution):
            value = select_batch(value, axis, index)
        elif (
            isinstance(value, Tensor)
            and value.dim() >= rank
            and value.shape[:rank] == batch
        ):
            if isinstance(index, Tensor):
                value = value.index_select(axis, index.to(value.device))
            else:
                value = value.select(axis, index)
        state[key] = value
    if isinstance(index, Tensor):
        state["_batch_shape"] = torch.Size(
            (*batch[:axis], len(index), *batch[axis + 1 :])
        )
    else:
        state["_batch_shape"] = torch.Size((*batch[:axis], *batch[axis + 1 :]))
    return clone


def fill_masked(distribution: Distribution, value: Tensor, mask: Tensor) -> Tensor:
    """``value`` with the elements ``mask`` drops replaced by a draw from
    ``distribution`` (a point of its support), so that missing data (NaN) in masked
    places gives finite log-densities and gradients; ``mask`` is over the batch
    shape.

    Example:
        >>> import torch
        >>> normal = torch.distributions.Normal(torch.zeros(3), 1.0)
        >>> value = torch.tensor([1.0, float("nan"), 2.0])
        >>> filled = fill_masked(normal, value, torch.tensor([True, False, True]))
        >>> bool(filled.isfinite().all()), filled[0].item(), filled[2].item()
        (True, 1.0, 2.0)
    """
    events = len(distribution.event_shape)
    keep = mask.reshape(*mask.shape, *([1] * events)) if events else mask
    with torch.no_grad():
        fill = distribution.sample()
    return torch.where(keep, value, fill)
