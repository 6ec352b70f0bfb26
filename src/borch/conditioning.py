"""Temporarily fix variables to values, or simulate observed ones.

Both are context managers over a model; they change nothing that outlives the block
(no parameters, no observations, no state dict entries).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

from torch import Tensor, nn

from borch.module import Module, borch_modules


def resolve_variable(model: nn.Module, key: str) -> tuple[Module, str]:
    """The borch module and attribute name a qualified variable name refers to.

    ``"mu"`` is ``model.mu``; ``"layer.weight"`` is ``model.get_submodule("layer").weight``.
    """
    path, _, name = key.rpartition(".")
    try:
        owner = model.get_submodule(path) if path else model
    except AttributeError:
        raise KeyError(f"no submodule '{path}' for variable '{key}'") from None
    if not isinstance(owner, Module):
        raise KeyError(
            f"variable '{key}': '{path or type(model).__name__}' is not a borch.Module"
        )
    return owner, name


@contextlib.contextmanager
def condition(model: nn.Module, values: Mapping[str, Tensor]) -> Iterator[None]:
    """Inside the block, the named variables take the given values and count as data.

    Keys are qualified names (``"mu"``, ``"layer.weight"``), the format of MCMC
    samples. A conditioned variable needs no approximation; its prior's log density at
    the value enters the likelihood part of losses.

    Example:
        >>> import torch
        >>> import borch
        >>> from borch import distributions as dist
        >>> model = borch.Module()
        >>> model.mu = dist.Normal(0.0, 1.0)
        >>> with borch.condition(model, {"mu": torch.tensor(2.0)}):
        ...     model.mu = dist.Normal(0.0, 1.0)
        ...     print(model.mu)
        tensor(2.)
        >>> bool(model.mu == 2.0)
        False
    """
    previous = []
    try:
        for key, value in values.items():
            owner, name = resolve_variable(model, key)
            if not isinstance(value, Tensor):
                raise TypeError(
                    f"condition: value of '{key}' must be a tensor, got "
                    f"{type(value).__name__}"
                )
            previous.append((owner, name, owner.set_condition(name, value)))
        yield
    finally:
        for owner, name, old in reversed(previous):
            owner.set_condition(name, old)


@contextlib.contextmanager
def simulate_observed(model: nn.Module) -> Iterator[None]:
    """Inside the block, observed variables are drawn from their likelihood.

    Reading an observed variable gives a draw from its prior (the likelihood given the
    current latent values) instead of the data, which stays untouched.

    Example:
        >>> import torch
        >>> import borch
        >>> from borch import distributions as dist
        >>> model = borch.Module()
        >>> model.observe(y=torch.zeros(3))
        >>> with borch.simulate_observed(model):
        ...     model.y = dist.Normal(torch.full((3,), 100.0), 1.0)
        ...     bool((model.y > 90).all())
        True
        >>> model.y
        tensor([0., 0., 0.])
    """
    modules = list(borch_modules(model))
    previous = []
    try:
        for module in modules:
            previous.append(module.set_simulate_observed(True))
        yield
    finally:
        for module, old in zip(modules, previous):
            module.set_simulate_observed(old)


__all__ = ["condition", "resolve_variable", "simulate_observed"]
