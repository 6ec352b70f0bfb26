"""A traced potential replayed on many positions at once.

The ATen graph of the potential's value and gradient
(:func:`~borch.infer.hmc.traced.tracing.record_value_and_grad`) is mapped over a
leading chain dimension with ``torch.func.vmap`` and recorded again, so the program
replayed is a plain graph of batched ATen operations (the cost of ``vmap`` is paid
once, at tracing). It runs torch operations only, so it works on any device.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor
from torch.fx.experimental.proxy_tensor import make_fx

from borch.infer.hmc.potential import Potential, to_numpy
from borch.infer.hmc.traced.tracing import (
    TraceError,
    check_torch_version,
    compile_graph,
    disagreement,
    record_value_and_grad,
)


class BatchedTracedPotential:
    """A batched potential (see :mod:`borch.infer.hmc.batched_potential`) replayed
    from a trace recorded for ``chains`` positions; non-finite energies become
    ``inf``."""

    def __init__(self, program: Callable[[Tensor], tuple[Tensor, Tensor]], chains: int):
        self.program = program
        self.chains = chains

    def __call__(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        if positions.shape[0] != self.chains:
            raise ValueError(
                f"this potential was traced for {self.chains} chains, got positions "
                f"of shape {tuple(positions.shape)}"
            )
        energies, grads = self.program(positions)
        energies = torch.where(torch.isfinite(energies), energies, math.inf)
        return energies, grads


def batched_traced_potential(
    evaluate: Callable[[Tensor], Tensor],
    eager: Potential,
    points: np.ndarray,
    device: torch.device,
    dtype: torch.dtype,
) -> BatchedTracedPotential:
    """Trace ``evaluate`` (one position, a tensor) batched over the rows of
    ``points`` ``(chains, dim)``, and check every row against ``eager``.

    Raises :class:`~borch.infer.hmc.traced.tracing.TraceError` when tracing fails or
    a row differs from ``eager``, and
    :class:`~borch.infer.hmc.traced.tracing.UntestedTorchError` on an untested torch
    version.

    Example:
        >>> import numpy as np
        >>> import torch
        >>> eager = lambda q: (0.5 * float(q @ q), q.copy())
        >>> points = np.array([[1.0, 0.0], [2.0, 2.0]])
        >>> potential = batched_traced_potential(
        ...     lambda q: 0.5 * (q**2).sum(), eager, points, torch.device("cpu"),
        ...     torch.float64,
        ... )
        >>> potential(torch.from_numpy(points))[0]
        tensor([0.5000, 4.0000], dtype=torch.float64)
    """
    check_torch_version()
    batch = torch.as_tensor(np.ascontiguousarray(points)).to(device, dtype)
    graph = record_value_and_grad(evaluate, batch[0])
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            batched_graph = make_fx(torch.func.vmap(graph))(batch)
    except Exception as error:
        raise TraceError(
            f"the traced potential could not be batched over chains: {error}"
        ) from error
    potential = BatchedTracedPotential(compile_graph(batched_graph, batch), len(batch))
    energies, grads = potential(batch)
    found = differences(to_numpy(energies), to_numpy(grads), eager, points)
    for row, difference in enumerate(found):
        if difference is not None:
            raise TraceError(
                f"the batched traced potential differs from the model's at chain "
                f"{row} ({difference}; is the model random, or does it branch on "
                "tensor values?)"
            )
    return potential


def differences(
    energies: np.ndarray, grads: np.ndarray, reference: Potential, points: np.ndarray
) -> list[str | None]:
    """How each row of batched ``energies`` and ``grads`` differs from
    ``reference`` at that row of ``points`` (:func:`disagreement`; ``None`` where
    they agree)."""
    found = []
    for row, point in enumerate(points):
        expected_energy, expected_grad = reference(np.ascontiguousarray(point))
        found.append(
            disagreement(
                float(energies[row]),
                grads[row],
                expected_energy,
                expected_grad,
                grads.dtype,
            )
        )
    return found


__all__ = ["BatchedTracedPotential", "batched_traced_potential", "differences"]
