"""Recurrent layers (RNN, LSTM, GRU) whose weights are random variables.

torch's recurrent layers hand their weights to the fused kernels as a cached list,
``_flat_weights``, built from the parameters (and, on cuDNN, compacted into one
buffer by ``flatten_parameters``). In a Bayesian layer the weights are the current
draws of their approximations, new each step, so the list is rebuilt from the draws
at the start of every forward pass (torch calls ``_update_flat_weights`` there) and
never holds draws across pickling or copying. ``flatten_parameters`` does nothing:
there is no persistent weight storage to compact, as every draw is a new tensor.

On cuDNN the draws are not one contiguous buffer, and cuDNN copies them into one on
each call; its warning saying so is silenced for these layers, since the copy is the
cost of drawing weights and cannot be avoided by compacting.
"""

from __future__ import annotations

import warnings
from typing import Any

from torch import Tensor

_NOT_CONTIGUOUS = "RNN module weights are not part of single contiguous chunk"


class RecurrentMixin:
    """Rebuilds torch's cached weight list from the current draws on every forward."""

    _flat_weights_names: list[str]

    def _current_weight(self, name: str) -> Tensor | None:
        return getattr(self, name, None)

    def _update_flat_weights(self) -> None:
        self.__dict__["_flat_weights"] = [
            self._current_weight(name) for name in self._flat_weights_names
        ]

    def _init_flat_weights(self) -> None:
        # Called by torch's __init__ and after .to(): drop cached tensors, the next
        # forward reads the current draws.
        count = len(self._flat_weights_names)
        self.__dict__["_flat_weights"] = [None] * count
        self.__dict__["_flat_weight_refs"] = [None] * count

    def flatten_parameters(self) -> None:
        """Does nothing: the weights are new draws on every step (see the module
        documentation)."""

    def forward(self, input: Any, hx: Any = None) -> Any:
        data = input.data if hasattr(input, "batch_sizes") else input
        if isinstance(data, Tensor) and data.is_cuda:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=_NOT_CONTIGUOUS)
                return super().forward(input, hx)
        return super().forward(input, hx)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        count = len(self._flat_weights_names)
        state["_flat_weights"] = [None] * count
        return state


__all__ = ["RecurrentMixin"]
