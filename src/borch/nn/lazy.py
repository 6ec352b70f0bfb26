"""Lazy layers (``LazyLinear``, ``LazyConv2d``, ...) whose parameters become random
variables once their shapes are known.

torch creates a lazy layer's parameters on its first forward pass
(``initialize_parameters``) and then turns the layer into its regular class
(``cls_to_become``). The Bayesian lazy layers convert the new parameters right after
torch has initialised them, with the priors and posterior given at construction, and
become the Bayesian regular class (``borch.nn.LazyLinear`` becomes
``borch.nn.Linear``).
"""

from __future__ import annotations

from typing import Any


class LazyMixin:
    """Converts the parameters a lazy layer materialises on its first call."""

    def initialize_parameters(self, *args: Any, **kwargs: Any) -> None:
        super().initialize_parameters(*args, **kwargs)
        if not self.has_uninitialized_params():
            self._borchify_own_parameters()


__all__ = ["LazyMixin"]
