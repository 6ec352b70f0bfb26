"""Lazily computed tensors: modules whose value is recomputed from their inputs.

A posterior keeps a positive scale as ``exp(log_scale)`` while the optimiser moves
``log_scale``; :class:`Transform` is that ``exp(log_scale)``. It is a module (so the
parameter it wraps is part of ``parameters()``, ``state_dict()`` and ``.to()``) and a
tensor (so it can be passed wherever a tensor is expected), and it is evaluated afresh
on every use, so it never holds a stale value or a freed autograd graph.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions.constraints import Constraint
from torch.distributions.transforms import Transform as _TorchTransform
from torch.distributions.transforms import _InverseTransform

from borch.tensor_like import TensorLike, unwrap


class Graph(TensorLike, nn.Module):
    """A module that acts as the tensor its ``forward()`` computes.

    Subclass it and define ``forward`` without arguments. The value is recomputed on
    every use, from the current values of the module's parameters and inputs.

    Example:
        >>> import torch
        >>> import borch
        >>> class Softplus(borch.Graph):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.raw = torch.nn.Parameter(torch.zeros(2))
        ...     def forward(self):
        ...         return torch.nn.functional.softplus(self.raw)
        >>> scale = Softplus()
        >>> (scale * 2).detach()
        tensor([1.3863, 1.3863])
        >>> [name for name, _ in scale.named_parameters()]
        ['raw']
    """

    def forward(self) -> Tensor:  # pragma: no cover - defined by subclasses
        raise NotImplementedError

    @property
    def tensor(self) -> Tensor:
        """The value, computed now."""
        return self.forward()

    def register_param_or_buffer(self, name: str, value: Any) -> None:
        """Register ``value`` as a parameter if it is one, else as a buffer (tensors
        and numbers), so it moves with the module."""
        if isinstance(value, nn.Parameter):
            self.register_parameter(name, value)
        elif isinstance(value, nn.Module):
            self.add_module(name, value)
        else:
            self.register_buffer(name, torch.as_tensor(value))

    def watched_tensors(self) -> list[Tensor]:
        """Tensors whose in-place change alters the value (used for cache keys)."""
        watched = [*self.parameters(), *self.buffers()]
        for module in self.modules():
            if isinstance(module, Transform):
                watched += [
                    v for v in module._plain_args.values() if isinstance(v, Tensor)
                ]
        return watched

    def __getattr__(self, name: str) -> Any:
        try:
            return nn.Module.__getattr__(self, name)
        except AttributeError:
            if name.startswith("_") or not hasattr(Tensor, name):
                raise
        return getattr(self.tensor, name)

    def __repr__(self) -> str:
        return nn.Module.__repr__(self)


class Transform(Graph):
    """The lazily evaluated tensor ``fn(*args)``.

    Args:
        fn: a callable of tensors, for instance ``torch.exp`` or a
            ``torch.distributions`` transform.
        *args: its arguments: tensors, parameters, numbers or other lazily computed
            tensors. Parameters and modules among them are registered on the
            transform, so they appear in ``parameters()`` and the state dict.
        arg_names: names under which the arguments are registered (``arg0``,
            ``arg1``, ... by default).

    Example:
        >>> import torch
        >>> import borch
        >>> log_scale = torch.nn.Parameter(torch.tensor(0.0))
        >>> scale = borch.Transform(torch.exp, log_scale, arg_names=["log_scale"])
        >>> float(scale)
        1.0
        >>> with torch.no_grad():
        ...     _ = log_scale.fill_(1.0)
        >>> round(float(scale), 4)
        2.7183
    """

    def __init__(
        self,
        fn: Callable[..., Tensor],
        *args: Any,
        arg_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        names = list(arg_names) if arg_names is not None else []
        if len(names) > len(args):
            raise ValueError(
                f"Transform got {len(names)} arg_names for {len(args)} arguments"
            )
        names += [f"arg{index}" for index in range(len(names), len(args))]
        self.fn = fn
        self._arg_names = tuple(names)
        self._plain_args: dict[str, Any] = {}
        for name, value in zip(names, args):
            if isinstance(value, nn.Parameter):
                self._parameters[name] = value
            elif isinstance(value, nn.Module):
                self._modules[name] = value
            else:
                self._plain_args[name] = value

    def _arg(self, name: str) -> Any:
        plain = self._plain_args
        if name in plain:
            return plain[name]
        params = self._parameters
        if name in params:
            return params[name]
        return self._modules[name]

    def forward(self) -> Tensor:
        return self.fn(*[unwrap(self._arg(name)) for name in self._arg_names])

    def exp_argument(self) -> Tensor | None:
        """``x`` when this is ``Transform(torch.exp, x)`` for a tensor ``x``, else
        ``None``: losses then use ``x`` as the log of the value, exactly."""
        if self.fn is not torch.exp or len(self._arg_names) != 1:
            return None
        value = self._arg(self._arg_names[0])
        return value if isinstance(value, Tensor) else None

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        for name, value in self._plain_args.items():
            if isinstance(value, Tensor):
                self._plain_args[name] = fn(value)
        self.fn = apply_to_tensors(self.fn, fn)
        return self

    def extra_repr(self) -> str:
        name = getattr(self.fn, "__name__", None) or type(self.fn).__name__
        return f"fn={name}"


def apply_to_tensors(obj: Any, fn, _memo: dict[int, Any] | None = None) -> Any:
    """``obj`` with ``fn`` applied to the tensors it holds.

    Handles tensors, ``torch.distributions`` transforms and constraints (which hold
    bounds as tensors: ``transform_to(interval(low, high))``), and lists or tuples of
    them; other objects are returned unchanged. Moving a module to another device or
    dtype must move those tensors too.
    """
    if isinstance(obj, Tensor):
        return fn(obj)
    if isinstance(obj, (list, tuple)):
        return type(obj)(apply_to_tensors(item, fn, _memo) for item in obj)
    if not isinstance(obj, (_TorchTransform, Constraint)):
        return obj
    memo = {} if _memo is None else _memo
    if id(obj) in memo:
        return memo[id(obj)]
    clone = memo[id(obj)] = object.__new__(type(obj))
    for key, value in vars(obj).items():
        if key == "_cached_x_y":
            value = (None, None)  # values computed on the old device or dtype
        elif key == "_inv" and not isinstance(obj, _InverseTransform):
            value = None  # a cache of the inverse, rebuilt on demand
        elif isinstance(value, (Tensor, _TorchTransform, Constraint, list, tuple)):
            value = apply_to_tensors(value, fn, memo)
        clone.__dict__[key] = value
    return clone


def evaluate(value: Any) -> Any:
    """The current value of an argument: tensors for tensor-likes, others unchanged."""
    if isinstance(value, TensorLike):
        return value.tensor
    return value


__all__ = ["Graph", "Transform", "apply_to_tensors", "evaluate"]
