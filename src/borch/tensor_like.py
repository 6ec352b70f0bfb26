"""Objects that stand in for a tensor: in torch functions and operators they act as it.

Random variables and lazily computed graphs are modules, yet users write
``torch.exp(rv)``, ``rv * 2`` or ``x @ rv`` as if they were tensors. The mixin below
makes that work through torch's ``__torch_function__`` protocol: every
:class:`TensorLike` argument is replaced by its current tensor before the call.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch import Tensor


class TensorLike:
    """Mixin for objects whose value is the tensor returned by ``.tensor``.

    Subclasses define the ``tensor`` property. Torch functions, tensor methods and
    Python operators then treat the object as that tensor.
    """

    __slots__ = ()

    @property
    def tensor(self) -> Tensor:  # pragma: no cover - defined by subclasses
        raise NotImplementedError

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        args = unwrap(args)
        kwargs = unwrap(kwargs) if kwargs else {}
        return func(*args, **kwargs)

    # Conversions. Identity hashing is kept: modules live in sets (nn.Module.modules).
    __hash__ = object.__hash__

    # Python scalars carry no gradient, so conversions detach first.
    def __float__(self) -> float:
        return float(self.tensor.detach())

    def __int__(self) -> int:
        return int(self.tensor.detach())

    def __index__(self) -> int:
        return self.tensor.detach().__index__()

    def __bool__(self) -> bool:
        return bool(self.tensor.detach())

    def __complex__(self) -> complex:
        return complex(self.tensor.detach())

    def __len__(self) -> int:
        return len(self.tensor)

    def __iter__(self):
        return iter(self.tensor)

    def __contains__(self, item) -> bool:
        return item in self.tensor

    def __getitem__(self, index):
        return self.tensor[unwrap(index)]

    def __array__(self, dtype=None, copy=None):
        array = self.tensor.detach().cpu().numpy()
        return array if dtype is None else array.astype(dtype)

    def __format__(self, format_spec: str) -> str:
        if format_spec:
            return self.tensor.__format__(format_spec)
        return str(self)


def _binary(op):
    def method(self, other):
        return op(self.tensor, other)

    return method


def _reflected(op):
    def method(self, other):
        return op(other, self.tensor)

    return method


def _unary(op):
    def method(self):
        return op(self.tensor)

    return method


_BINARY = {
    "add": operator.add,
    "sub": operator.sub,
    "mul": operator.mul,
    "truediv": operator.truediv,
    "floordiv": operator.floordiv,
    "mod": operator.mod,
    "pow": operator.pow,
    "matmul": operator.matmul,
    "and": operator.and_,
    "or": operator.or_,
    "xor": operator.xor,
    "lshift": operator.lshift,
    "rshift": operator.rshift,
}
_COMPARISONS = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
}
_UNARY = {
    "neg": operator.neg,
    "pos": operator.pos,
    "abs": operator.abs,
    "invert": operator.invert,
}

for _name, _op in _BINARY.items():
    setattr(TensorLike, f"__{_name}__", _binary(_op))
    setattr(TensorLike, f"__r{_name}__", _reflected(_op))
for _name, _op in _COMPARISONS.items():
    setattr(TensorLike, f"__{_name}__", _binary(_op))
for _name, _op in _UNARY.items():
    setattr(TensorLike, f"__{_name}__", _unary(_op))
# Defining __eq__ above would otherwise leave the class unhashable.
TensorLike.__hash__ = object.__hash__


def unwrap(obj: Any) -> Any:
    """Replace every :class:`TensorLike` inside ``obj`` (recursing into containers)."""
    if isinstance(obj, TensorLike):
        return obj.tensor
    kind = type(obj)
    if kind is tuple or kind is list:
        return kind(unwrap(item) for item in obj)
    if kind is dict:
        return {key: unwrap(value) for key, value in obj.items()}
    return obj


def as_tensor(value: Any, dtype: torch.dtype | None = None) -> Tensor:
    """The tensor a value stands for.

    Random variables give their current value, graphs their freshly computed value,
    tensors themselves, and numbers, sequences and numpy arrays a new tensor (floating
    point values in torch's default dtype). Values torch cannot convert are returned
    unchanged.

    Example:
        >>> import borch
        >>> borch.as_tensor([1, 2.5])
        tensor([1.0000, 2.5000])
        >>> borch.as_tensor("hello")
        'hello'
        >>> rv = borch.distributions.Normal(0.0, 1.0)
        >>> borch.as_tensor(rv) is rv.tensor
        True
    """
    if isinstance(value, TensorLike):
        value = value.tensor
    if isinstance(value, Tensor):
        return value if dtype is None else value.to(dtype)
    try:
        tensor = torch.as_tensor(value, dtype=dtype)
    except (TypeError, ValueError, RuntimeError):
        return value  # not convertible: returned as it is, as the original did
    if dtype is None and tensor.is_floating_point():
        tensor = tensor.to(torch.get_default_dtype())
    return tensor


__all__ = ["TensorLike", "as_tensor", "unwrap"]
