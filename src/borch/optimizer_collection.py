"""An optimiser that takes on parameters as they appear.

Approximating variables, and so their parameters, are created the first time a model
uses a variable, often inside the first forward pass. ``OptimizersCollection`` adds
parameters it has not seen to its optimiser at each ``step``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn


class OptimizersCollection:
    """One ``torch.optim`` optimiser that grows with the model.

    Args:
        optimizer: the optimiser class (default ``torch.optim.Adam``).
        **defaults: its keyword arguments (``lr=...``).

    Example:
        >>> import torch
        >>> import borch
        >>> from borch import distributions as dist
        >>> model = borch.Module()
        >>> optimizer = borch.OptimizersCollection(torch.optim.Adam, lr=0.1)
        >>> for _ in range(3):
        ...     borch.sample(model)
        ...     model.x = dist.Normal(1.0, 1.0)
        ...     loss = borch.infer.vi_loss(**borch.pq_to_infer(model))
        ...     loss.backward()
        ...     optimizer.step(model.parameters())
        ...     optimizer.zero_grad()
        >>> optimizer.num_parameters
        2
    """

    def __init__(
        self,
        optimizer: Callable[..., torch.optim.Optimizer] = torch.optim.Adam,
        **defaults: Any,
    ) -> None:
        self._factory = optimizer
        self._defaults = defaults
        self.optimizer: torch.optim.Optimizer | None = None
        self._seen: set[int] = set()

    @property
    def num_parameters(self) -> int:
        """How many parameters the optimiser updates."""
        return len(self._seen)

    def add_parameters(self, parameters: Iterable[nn.Parameter]) -> None:
        """Hand parameters to the optimiser (those it already has are skipped)."""
        new = [p for p in parameters if p.requires_grad and id(p) not in self._seen]
        if not new:
            return
        self._seen.update(id(p) for p in new)
        if self.optimizer is None:
            self.optimizer = self._factory(new, **self._defaults)
        else:
            self.optimizer.add_param_group({"params": new})

    def step(
        self,
        parameters: Iterable[nn.Parameter] | None = None,
        closure: Callable[[], torch.Tensor] | None = None,
    ) -> torch.Tensor | None:
        """Add any new ``parameters``, then take one optimiser step."""
        if parameters is not None:
            self.add_parameters(parameters)
        if self.optimizer is None:
            raise RuntimeError(
                "OptimizersCollection.step: no parameters to optimise yet"
            )
        return self.optimizer.step(closure)

    def zero_grad(self, set_to_none: bool = True) -> None:
        if self.optimizer is not None:
            self.optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {} if self.optimizer is None else self.optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a state; the same parameters must have been added first."""
        if self.optimizer is None:
            raise RuntimeError(
                "add the parameters (add_parameters or step) before loading a state"
            )
        self.optimizer.load_state_dict(state_dict)


__all__ = ["OptimizersCollection"]
