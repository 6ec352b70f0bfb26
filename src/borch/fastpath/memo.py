"""The one cache of the fast paths: what borch remembers about torch objects.

A torch distribution borch builds or draws from carries at most one record,
:class:`Memo`, under one key of its ``__dict__``: the ``log(scale)`` it was built
from, its last draw and that draw's noise, and constants of a constant prior's
density and KL. A copy of a distribution made with :func:`copy.copy` would share the
record; :func:`detached_vars` gives a distribution's attributes without it.

Facts about a *tensor* (the log of a LogNormal draw) are kept beside it in a weak
table rather than on it, so that a draw a user saves or copies carries nothing of
borch's; an entry goes when its tensor is freed.

Every entry is tied to the tensors it was computed from and their version counters:
:func:`still_current` says whether they are unmodified.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "MEMO_KEY",
    "Memo",
    "constant",
    "detached_vars",
    "memo",
    "recall",
    "recall_log",
    "remember_log",
    "stamp",
    "still_current",
]

MEMO_KEY = "_borch_memo"


class Memo:
    """What is remembered about one distribution; every field starts as ``None``.

    Fields holding derived values are ``(stamp, value)`` pairs (see :func:`stamp`),
    except ``log_scale``, which is fixed when the distribution is built.
    """

    __slots__ = ("draw", "kl_constants", "log_scale", "scale_terms", "zero_loc")

    def __init__(self) -> None:
        self.log_scale: Tensor | None = None
        self.draw: tuple | None = None
        self.kl_constants: tuple | None = None
        self.scale_terms: tuple | None = None
        self.zero_loc: tuple | None = None


def memo(distribution: Any) -> Memo:
    """The record of ``distribution``, created when it has none.

    Example:
        >>> import torch
        >>> normal = torch.distributions.Normal(0.0, 1.0)
        >>> memo(normal) is memo(normal), recall(torch.distributions.Normal(0.0, 1.0))
        (True, None)
    """
    state = distribution.__dict__
    record = state.get(MEMO_KEY)
    if record is None:
        record = state[MEMO_KEY] = Memo()
    return record


def recall(distribution: Any) -> Memo | None:
    """The record of ``distribution``, or ``None``."""
    return distribution.__dict__.get(MEMO_KEY)


def detached_vars(distribution: Any) -> dict[str, Any]:
    """``vars(distribution)`` without its record (for copies that must not share it)."""
    return {key: value for key, value in vars(distribution).items() if key != MEMO_KEY}


def stamp(*tensors: Tensor) -> tuple:
    """The identity and version of ``tensors``, to check an entry against later."""
    return tuple([(tensor, tensor._version) for tensor in tensors])


def still_current(entry: tuple | None, *tensors: Tensor) -> bool:
    """Whether ``entry = (stamp, value)`` was made from these very, unmodified tensors.

    Example:
        >>> import torch
        >>> x = torch.zeros(2)
        >>> entry = (stamp(x), "derived from x")
        >>> still_current(entry, x), still_current(entry, torch.zeros(2))
        (True, False)
        >>> _ = x.add_(1)
        >>> still_current(entry, x)
        False
    """
    if entry is None:
        return False
    stamps = entry[0]
    if len(stamps) != len(tensors):
        return False
    for (kept, version), tensor in zip(stamps, tensors):
        if kept is not tensor or tensor._version != version:
            return False
    return True


_LOGS: dict[int, tuple[weakref.ref, int, Tensor]] = {}


def remember_log(value: Tensor, log_value: Tensor) -> None:
    """Remember that ``log_value`` is ``log(value)`` while ``value`` is unmodified."""
    key = id(value)

    def forget(reference: weakref.ref) -> None:
        if _LOGS.get(key, (None,))[0] is reference:
            del _LOGS[key]

    _LOGS[key] = (weakref.ref(value, forget), value._version, log_value)


def recall_log(value: Tensor) -> Tensor | None:
    """The remembered ``log(value)``, or ``None``.

    Example:
        >>> import torch
        >>> log_value = torch.zeros(2)
        >>> value = log_value.exp()
        >>> remember_log(value, log_value)
        >>> recall_log(value) is log_value, recall_log(value.clone())
        (True, None)
    """
    remembered = _LOGS.get(id(value))
    if remembered is None:
        return None
    drawn, version, log_value = remembered
    if drawn() is not value or value._version != version:
        return None
    return log_value


_CONSTANTS: dict[tuple[float, torch.dtype, torch.device], Tensor] = {}


def constant(number: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A 0-d tensor holding ``number``, made once per dtype and device."""
    key = (number, dtype, device)
    tensor = _CONSTANTS.get(key)
    if tensor is None:
        tensor = _CONSTANTS[key] = torch.tensor(number, dtype=dtype, device=device)
    return tensor
