"""Potential energy functions: what the samplers in :mod:`borch.infer` move on.

A *potential* is a callable ``potential(position) -> (energy, gradient)`` on one flat
numpy vector: ``energy`` is the negative log density (a Python float, ``inf`` where the
density is zero or undefined) and ``gradient`` its gradient (a numpy vector shaped
like ``position``).

The sampler kernels keep their state in numpy because a trajectory is many small
vector operations, which cost about a microsecond each in numpy and several in torch;
the model itself is evaluated in torch, and on the CPU the two share memory.

:class:`ClosurePotential` makes a potential from a list of tensors and a loss
closure, the convention of the low-level API (``hmc_step``, ``nuts_step``, ...):
``closure()`` returns the *negative* log density, like a ``torch.optim`` closure, and
the tensors are the coordinates, updated in place.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from typing import Protocol

import numpy as np
import torch
from torch import Tensor


class Potential(Protocol):
    """``potential(position) -> (energy, gradient)``; see the module docstring."""

    def __call__(self, position: np.ndarray) -> tuple[float, np.ndarray]: ...


def to_numpy(tensor: Tensor) -> np.ndarray:
    """A detached CPU numpy view (or copy, off the CPU) of ``tensor``."""
    return tensor.detach().cpu().numpy()


def numpy_dtype(dtype: torch.dtype) -> np.dtype:
    """The numpy dtype of a floating torch dtype (float32 for those numpy lacks)."""
    try:
        return torch.empty((), dtype=dtype).numpy().dtype
    except TypeError:
        return np.dtype(np.float32)


class ClosurePotential:
    """The potential of a loss closure over a list of tensors.

    Args:
        parameters: floating-point leaf tensors that require gradients (for example
            ``model.parameters()``); they are the coordinates of the position, in order,
            each flattened.
        closure: returns the negative log density (a scalar tensor) computed from the
            current values of ``parameters``.

    Calling the potential writes the position into ``parameters`` (in place) and
    evaluates the closure and its gradient by autograd.

    Example:
        >>> import numpy as np
        >>> import torch
        >>> x = torch.zeros(2, requires_grad=True)
        >>> potential = ClosurePotential([x], lambda: 0.5 * (x**2).sum())
        >>> energy, gradient = potential(np.array([1.0, 2.0], dtype=np.float32))
        >>> energy, gradient
        (2.5, array([1., 2.], dtype=float32))
        >>> x
        tensor([1., 2.], requires_grad=True)
    """

    def __init__(self, parameters: Iterable[Tensor], closure: Callable[[], Tensor]):
        self.parameters = check_parameters(parameters)
        if not callable(closure):
            raise TypeError(f"closure must be callable, got {type(closure).__name__}")
        self.closure = closure
        self.sizes = [p.numel() for p in self.parameters]
        dtype = self.parameters[0].dtype
        for parameter in self.parameters[1:]:
            dtype = torch.promote_types(dtype, parameter.dtype)
        self.dtype = numpy_dtype(dtype)

    def position(self) -> np.ndarray:
        """The current values of the parameters as one flat vector (a copy)."""
        return np.concatenate(
            [to_numpy(p).reshape(-1).astype(self.dtype) for p in self.parameters]
        )

    def set_position(self, position: np.ndarray) -> None:
        """Write a flat vector into the parameters, in place."""
        values = torch.from_numpy(np.ascontiguousarray(position))
        with torch.no_grad():
            for parameter, value in zip(self.parameters, values.split(self.sizes)):
                parameter.copy_(value.view(parameter.shape))

    def __call__(self, position: np.ndarray) -> tuple[float, np.ndarray]:
        self.set_position(position)
        loss = self.closure()
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            raise TypeError(
                "closure() must return the negative log density as a scalar tensor, "
                f"got {_describe(loss)}"
            )
        energy = loss.item()
        if not math.isfinite(energy):
            return math.inf, np.full_like(position, np.nan)
        if not loss.requires_grad:
            raise ValueError(
                "closure() returned a tensor without gradient: compute it from the "
                "parameters (and not under torch.no_grad())"
            )
        grads = torch.autograd.grad(
            loss.reshape(()), self.parameters, allow_unused=True
        )
        gradient = np.concatenate(
            [
                np.zeros(p.numel(), dtype=self.dtype)
                if g is None
                else to_numpy(g).reshape(-1).astype(self.dtype, copy=False)
                for p, g in zip(self.parameters, grads)
            ]
        )
        return energy, gradient


def check_parameters(parameters: Iterable[Tensor]) -> list[Tensor]:
    """Validate the tensors a sampler moves; return them as a list."""
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    parameters = list(parameters)
    if not parameters:
        raise ValueError("parameters is empty: give the tensors to sample")
    for i, parameter in enumerate(parameters):
        if not isinstance(parameter, Tensor):
            raise TypeError(
                f"parameters[{i}] must be a tensor, got {type(parameter).__name__}"
            )
        if not parameter.is_floating_point():
            raise TypeError(
                f"parameters[{i}] must be floating point, got dtype {parameter.dtype}"
            )
        if not parameter.requires_grad or not parameter.is_leaf:
            raise ValueError(
                f"parameters[{i}] must be a leaf tensor with requires_grad=True (the "
                "gradient of the closure is taken with respect to it)"
            )
    return parameters


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return type(value).__name__


def non_finite_ok(function: Callable) -> Callable:
    """Run ``function`` with numpy's floating-point warnings off.

    Sampler kernels meet overflowing or undefined energies far out in the tails; they
    turn them into ``inf`` and treat the step as divergent, so numpy's warnings would
    only be noise.
    """

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return function(*args, **kwargs)

    return wrapper


def as_rng(generator: np.random.Generator | None) -> np.random.Generator:
    """``generator``, or one seeded from torch's global generator (so that
    ``torch.manual_seed`` makes the low-level samplers repeatable)."""
    if generator is not None:
        return generator
    return np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))


__all__ = [
    "ClosurePotential",
    "Potential",
    "as_rng",
    "check_parameters",
    "non_finite_ok",
    "numpy_dtype",
    "to_numpy",
]
