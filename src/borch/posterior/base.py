"""The posterior: the module that creates and owns approximating random variables."""

from __future__ import annotations

from typing import Any

from torch import nn

from borch.random_variable import RandomVariable


class Posterior(nn.Module):
    """Base class of posterior families.

    A :class:`borch.Module` hands every prior assigned to it to its posterior through
    :meth:`set_random_variable`. The first time a name is seen,
    :meth:`register_random_variable` creates the approximating random variable; on every
    assignment :meth:`update_random_variable` may refresh it. The approximating
    variables are submodules of the posterior (``posterior.x``), so their parameters
    are the module's optimisable parameters.

    Example: a family that approximates every prior by a Laplace distribution.

        >>> import torch
        >>> import borch
        >>> from borch import distributions as dist
        >>> class LaplaceFamily(Posterior):
        ...     def register_random_variable(self, name, prior):
        ...         loc = torch.zeros(prior.shape)
        ...         log_scale = torch.nn.Parameter(torch.full(prior.shape, -2.0))
        ...         return dist.Laplace(
        ...             torch.nn.Parameter(loc), borch.Transform(torch.exp, log_scale)
        ...         )
        >>> model = borch.Module(posterior=LaplaceFamily())
        >>> model.w = dist.Normal(torch.zeros(3), 1.0)
        >>> type(model.posterior.w).__name__
        'Laplace'
        >>> len(list(model.parameters()))
        2

    A state dict may hold approximating variables a freshly built module has not
    created yet (models that assign their variables in ``forward``). Loading it keeps
    those entries aside and applies each when its variable is first assigned.
    """

    def __init__(self) -> None:
        super().__init__()
        self.__dict__["_pending_state"] = {}

    def register_random_variable(
        self, name: str, prior: RandomVariable
    ) -> RandomVariable:
        """Create the approximating variable for a prior seen for the first time.

        Return it (the base class stores it as ``self.<name>``).
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not implement register_random_variable"
        )

    def update_random_variable(self, name: str, prior: RandomVariable) -> None:
        """Called on every later assignment of ``name``; does nothing by default."""

    def set_random_variable(self, name: str, prior: RandomVariable) -> RandomVariable:
        """Return the approximating variable of ``name``, creating it if needed."""
        approximation = self._modules.get(name)
        if approximation is None:
            created = self.register_random_variable(name, prior)
            approximation = created if created is not None else self._modules.get(name)
            if not isinstance(approximation, RandomVariable):
                raise TypeError(
                    f"{type(self).__name__}.register_random_variable('{name}', ...) must "
                    "return a RandomVariable"
                )
            self.set_approximation(name, approximation)
        else:
            self.update_random_variable(name, prior)
        return approximation

    def set_approximation(self, name: str, approximation: RandomVariable) -> None:
        """Use ``approximation`` as the approximating variable of ``name``."""
        if not isinstance(approximation, RandomVariable):
            raise TypeError(
                f"the approximation of '{name}' must be a RandomVariable, got "
                f"{type(approximation).__name__}"
            )
        approximation.__dict__["_name"] = name
        self._modules[name] = approximation
        pending = self._pending_state.pop(name, None)
        if pending is not None:
            self.load_pending(name, approximation, pending)

    def load_pending(
        self, name: str, approximation: RandomVariable, state: dict
    ) -> None:
        """Load ``state``, kept from a state dict loaded before ``name`` had an
        approximating variable, into the one just created (strictly: every key
        must fit). A family whose variables gain parts later overrides it."""
        _load_pending(name, approximation, state)

    def approximation(self, name: str) -> RandomVariable | None:
        """The approximating variable of ``name``, or ``None`` if there is none yet."""
        return self._modules.get(name)

    def names(self) -> list[str]:
        """The names that have an approximating variable, in order of creation."""
        return list(self._modules)

    def pending_state(self) -> dict[str, dict]:
        """Loaded state kept for approximating variables not created yet, by name
        (a copy)."""
        return {name: dict(state) for name, state in self._pending_state.items()}

    def remove_approximation(
        self, name: str, pending: dict | None = None
    ) -> RandomVariable | None:
        """Drop the approximating variable of ``name`` (it is created again on next
        use); ``pending`` is loaded state to apply to that new one. Returns the one
        dropped."""
        removed = self._modules.pop(name, None)
        if pending is not None:
            self._pending_state[name] = dict(pending)
        return removed

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, RandomVariable):
            value.__dict__["_name"] = name
            if name in self._modules:
                # Re-assigning a variable (a Manual posterior does it every step):
                # nothing else can hold the name, so skip nn.Module's bookkeeping.
                self._modules[name] = value
                return
            super().__setattr__(name, value)
            # A Manual posterior's approximations are set by hand, possibly only in
            # the first forward pass: apply state loaded for them before that.
            pending = self.__dict__["_pending_state"].pop(name, None)
            if pending is not None:
                _load_pending(name, value, pending)
            return
        super().__setattr__(name, value)

    def forward(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError(
            f"{type(self).__name__} is not called; assign random variables to a "
            "borch.Module and read them from it"
        )

    def _load_from_state_dict(
        self, state_dict, prefix, metadata, strict, missing, unexpected_keys, errors
    ):
        super()._load_from_state_dict(
            state_dict, prefix, metadata, strict, missing, unexpected_keys, errors
        )
        for key in list(state_dict):
            if not key.startswith(prefix):
                continue
            name, _, rest = key[len(prefix) :].partition(".")
            if not rest or name in self._modules or name in self._parameters:
                continue
            self._pending_state.setdefault(name, {})[rest] = state_dict[key]
            if key in unexpected_keys:
                unexpected_keys.remove(key)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_pending_state"] = dict(self._pending_state)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("_pending_state", {})
        super().__setstate__(state)

    def extra_repr(self) -> str:
        return ""


def _load_pending(name: str, approximation: RandomVariable, state: dict) -> None:
    try:
        approximation.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise RuntimeError(
            f"the loaded state of '{name}' does not fit the approximating variable "
            f"the posterior created ({approximation!r}): {error}"
        ) from None


__all__ = ["Posterior"]
