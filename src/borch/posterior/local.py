"""Local posteriors: approximations of every row of a subsampled plate.

A latent variable assigned inside ``borch.plate(name, size, subsample=index)`` has
one row per data point along the plate's dimension, and a run sees only the rows
``index``. The posterior family creates its approximation once, for all ``size``
rows (from the prior's first row, or the row the run gives, as the initial value
of each), and each run uses a :class:`LocalRows` view of the subsample's rows: its
draws, log-densities and KL divergences are those of these rows only, and its
gradients reach the full approximation's parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Distribution

from borch.distributions.batch import select_batch
from borch.random_variable import RandomVariable

__all__ = ["LocalRows", "full_size_prior", "plate_axes"]


def plate_axes(name: str, batch_shape: torch.Size, plates: Sequence) -> list[int]:
    """The batch dimension (from the left) each plate indexes; an error naming the
    variable if its batch shape does not have the subsample's size there."""
    axes = []
    for frame in plates:
        axis = len(batch_shape) + frame.dim
        if axis < 0 or batch_shape[axis] != len(frame.subsample):
            raise ValueError(
                f"random variable '{name}' is assigned inside plate '{frame.name}' "
                f"(dim {frame.dim}, a subsample of {len(frame.subsample)} of "
                f"{frame.size}) but its terms have batch shape {tuple(batch_shape)}: "
                f"give its prior (or its data, or its approximation) "
                f"{len(frame.subsample)} rows in dim {frame.dim}"
            )
        axes.append(axis)
    return axes


def full_size_prior(prior: RandomVariable, plates: Sequence) -> RandomVariable:
    """A prior of the same family with all ``size`` rows along each plate's dim:
    the rows of the subsample where the run gives them, the first row elsewhere.
    It is only what the posterior family builds the approximation from."""
    distribution = prior.distribution
    axes = plate_axes(prior.name or "?", distribution.batch_shape, plates)
    for frame, axis in zip(plates, axes):
        source = torch.zeros(frame.size, dtype=torch.long)
        source[frame.subsample.cpu()] = torch.arange(len(frame.subsample))
        distribution = select_batch(distribution, axis, source)
    arguments = {}
    for name, value in prior.arguments.items():
        full = getattr(distribution, name, None)
        arguments[name] = full.detach() if isinstance(full, Tensor) else value
    full_prior = type(prior)(**arguments, validate_args=False)
    full_prior.__dict__["_name"] = prior.name
    return full_prior


class LocalRows(RandomVariable):
    """The rows of a full-size approximation that one run of a plate uses.

    Args:
        full: the approximation of every row (held by the posterior).
        selections: ``(axis, index)`` per plate: the batch dimension (from the left)
            and the subsample's indices.
    """

    distribution_cls = Distribution  # the distribution is built by _distribution
    arg_names = ("full",)
    distribution_args = frozenset({"full"})

    def __init__(
        self, full: RandomVariable, selections: Sequence[tuple[int, Tensor]]
    ) -> None:
        super().__init__({"full": full})
        self.__dict__["_selections"] = tuple(selections)
        self.__dict__["_name"] = full.name

    def _distribution(self) -> Distribution:
        distribution = self._arg("full").distribution
        for axis, index in self._selections:
            distribution = select_batch(distribution, axis, index)
        return distribution

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError(
            "LocalRows is a view made in each run of a plate and is not saved; save "
            "the model, whose posterior holds the approximation of every row"
        )
