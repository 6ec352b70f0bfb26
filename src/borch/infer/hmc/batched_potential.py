"""Potentials of many chains at once: what vectorised NUTS moves on.

A *batched potential* is ``potential(positions) -> (energies, gradients)`` on a
``(chains, dim)`` tensor: ``energies`` is a ``(chains,)`` tensor of negative log
densities (``inf`` where the density is zero or undefined) and ``gradients`` a
``(chains, dim)`` tensor, both on the device and in the dtype of ``positions``.
:func:`borch.infer.hmc.traced.batched.batched_traced_potential` gives one that
evaluates every chain in one call; :class:`RowwisePotential` evaluates a
single-position :class:`~borch.infer.hmc.potential.Potential` chain by chain, for
models that cannot be traced.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from borch.infer.hmc.potential import Potential, to_numpy


class BatchedPotential(Protocol):
    """``potential(positions) -> (energies, gradients)``; see the module docstring."""

    def __call__(self, positions: Tensor) -> tuple[Tensor, Tensor]: ...


class RowwisePotential:
    """A batched potential that evaluates ``potential`` (numpy, one position) on each
    row in turn.

    Example:
        >>> import numpy as np
        >>> import torch
        >>> potential = RowwisePotential(lambda q: (0.5 * float(q @ q), q.copy()))
        >>> energies, grads = potential(torch.tensor([[1.0, 0.0], [2.0, 2.0]]))
        >>> energies
        tensor([0.5000, 4.0000])
    """

    def __init__(self, potential: Potential) -> None:
        self.potential = potential

    def __call__(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        rows = to_numpy(positions)
        energies = np.empty(len(rows), dtype=np.float64)
        grads = np.empty_like(rows)
        for row, position in enumerate(rows):
            energies[row], grads[row] = self.potential(np.ascontiguousarray(position))
        as_tensor = {"device": positions.device, "dtype": positions.dtype}
        return (
            torch.as_tensor(energies, **as_tensor),
            torch.as_tensor(grads, **as_tensor),
        )


__all__ = ["BatchedPotential", "RowwisePotential"]
