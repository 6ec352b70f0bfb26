"""One run of a model with its linear layers watched, and the Jacobian pieces of
its likelihoods' output parameters.

For a linear layer ``y = a W^T + b`` the gradient of any output with respect to
``W`` is, row by row, ``g a^T`` with ``g`` the gradient at ``y``: so one backward
pass to the layers' outputs gives every row's Jacobian (the trick of BackPACK and
KFAC). Other latent variables get their rows by a batched backward pass per element
(``torch.autograd.grad(is_grads_batched=True)``), which is fine for the few small
variables a network has outside its layers.
"""

from __future__ import annotations

import contextlib
import itertools
import warnings
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from borch.infer.laplace.likelihood import OutputParameters
from borch.infer.laplace.structures import LinearPiece

#: Elements per batched backward pass for variables outside linear layers.
ROWS_PER_PASS = 256


class LinearRecord:
    """A watched linear layer: its qualified path and its last inputs and output,
    flattened to rows."""

    def __init__(self, path: str, module: nn.Linear, clock: Iterator[int]) -> None:
        self.path = path
        self.module = module
        self.inputs: Tensor | None = None
        self.output: Tensor | None = None
        self.calls = 0
        self.first_call = -1
        self._clock = clock

    def hook(self, module: nn.Module, args: tuple, output: Tensor) -> None:
        if not self.calls:
            self.first_call = next(self._clock)
        self.calls += 1
        self.inputs = args[0].detach().reshape(-1, args[0].shape[-1])
        self.output = output


@contextlib.contextmanager
def watching(model: nn.Module, paths: list[str] | None = None) -> Iterator[dict]:
    """Within the block, every linear layer of ``model`` (or those at ``paths``)
    records its inputs and output; yields ``{path: LinearRecord}``."""
    records = {}
    handles = []
    clock = itertools.count()
    for path, module in model.named_modules():
        if not isinstance(module, nn.Linear) or (
            paths is not None and path not in paths
        ):
            continue
        record = LinearRecord(path, module, clock)
        records[path] = record
        handles.append(module.register_forward_hook(record.hook))
    try:
        yield records
    finally:
        for handle in handles:
            handle.remove()


def check_rows(records: list[LinearRecord], parameters: OutputParameters) -> None:
    """Per-row Jacobians need one layer row per likelihood element."""
    for record in records:
        if record.calls != 1:
            raise ValueError(
                f"linear layer '{record.path}' ran {record.calls} times in one run of "
                "the model; the layer-wise structures need exactly one call per run "
                "(use structure='full')"
            )
        rows = record.inputs.shape[0]
        if rows != parameters.count:
            raise ValueError(
                f"linear layer '{record.path}' saw {rows} rows but the likelihood "
                f"'{parameters.name}' has {parameters.count} elements; the layer-wise "
                "structures need one row per element (use structure='full')"
            )


def jacobian_pieces(
    flat: Tensor,
    directions: Tensor,
    records: list[LinearRecord],
    others: list[Tensor],
) -> tuple[list[LinearPiece | None], list[Tensor]]:
    """The Jacobian rows of output parameters ``flat`` ``(B, K)`` along
    ``directions`` ``(B, K)``, one row per element: pieces for the linear layers
    (``None`` for a layer they do not depend on) and ``(B, numel)`` rows for each of
    ``others``."""
    directions = directions.to(flat.dtype)
    outputs = [record.output for record in records]
    grads = (
        torch.autograd.grad(
            flat, outputs, grad_outputs=directions, retain_graph=True, allow_unused=True
        )
        if outputs
        else []
    )
    pieces = [
        None
        if grad is None
        else LinearPiece(grad.reshape(-1, grad.shape[-1]), r.inputs)
        for grad, r in zip(grads, records)
    ]
    rows = per_element_rows(flat, directions, others) if others else []
    return pieces, rows


def per_element_rows(
    flat: Tensor, directions: Tensor, params: list[Tensor]
) -> list[Tensor]:
    """``(B, numel)`` per parameter: for each element ``b`` the gradient of
    ``directions[b] . flat[b]`` with respect to it."""
    count = flat.shape[0]
    chunks = []
    for start in range(0, count, ROWS_PER_PASS):
        index = torch.arange(start, min(start + ROWS_PER_PASS, count))
        batched = torch.zeros(
            (len(index), *flat.shape), dtype=flat.dtype, device=flat.device
        )
        batched[torch.arange(len(index)), index] = directions[index]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # vmap's notes on slow fallbacks
            grads = torch.autograd.grad(
                flat,
                params,
                grad_outputs=batched,
                is_grads_batched=True,
                retain_graph=True,
                allow_unused=True,
            )
        chunks.append(
            [
                torch.zeros(len(index), p.numel(), dtype=flat.dtype, device=flat.device)
                if g is None
                else g.reshape(len(index), -1)
                for g, p in zip(grads, params)
            ]
        )
    return [torch.cat(parts) for parts in zip(*chunks)]


__all__ = [
    "LinearRecord",
    "check_rows",
    "jacobian_pieces",
    "per_element_rows",
    "watching",
]
