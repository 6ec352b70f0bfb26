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
:func:`kept` gives its value only while they are unmodified. Inside a compiled step
(:mod:`borch.compiling`) nothing is remembered: version counters are not traceable.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from borch.compiling import compiling

__all__ = [
    "MEMO_KEY",
    "Memo",
    "constant",
    "detached_vars",
    "keep",
    "keep_pair",
    "kept",
    "kept_pair",
    "memo",
    "recall",
    "recall_log",
    "remember_log",
    "remembered",
]

MEMO_KEY = "_borch_memo"


class Memo:
    """What is remembered about one distribution; every field starts as ``None``.

    ``log_scale`` (of a scale built as ``exp(log_scale)``) is fixed when the
    distribution is built; the other fields hold entries made by :func:`keep` or
    :func:`keep_pair` (``number_scale``: the Python number a scale was made from).
    """

    # Class-level defaults: a record costs one object, its fields only when set.
    log_scale: Tensor | None = None
    number_scale: tuple | None = None
    draw: tuple | None = None
    kl_constants: tuple | None = None
    scale_terms: tuple | None = None


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


def keep(value: Any, tensor: Tensor) -> tuple | None:
    """An entry: ``value``, derived from ``tensor`` as it is now (none while
    compiling, or under ``torch.inference_mode()``, whose tensors a later
    computation with gradients could not save)."""
    if compiling() or torch.is_inference_mode_enabled():
        return None
    return (value, tensor, tensor._version)


def kept(entry: tuple | None, tensor: Tensor) -> Any:
    """The value of an entry made by :func:`keep` from this very, unmodified tensor,
    else ``None``.

    Example:
        >>> import torch
        >>> x = torch.zeros(2)
        >>> entry = keep("derived from x", x)
        >>> kept(entry, x), kept(entry, torch.zeros(2))
        ('derived from x', None)
        >>> _ = x.add_(1)
        >>> kept(entry, x) is None
        True
    """
    if entry is not None and entry[1] is tensor and entry[2] == tensor._version:
        return entry[0]
    return None


def keep_pair(value: Any, first: Tensor, second: Tensor) -> tuple | None:
    """An entry: ``value``, derived from two tensors as they are now (none where
    :func:`keep` makes none)."""
    if compiling() or torch.is_inference_mode_enabled():
        return None
    return (value, first, first._version, second, second._version)


def kept_pair(entry: tuple | None, first: Tensor, second: Tensor) -> Any:
    """As :func:`kept`, for an entry made by :func:`keep_pair`."""
    if (
        entry is not None
        and entry[1] is first
        and entry[2] == first._version
        and entry[3] is second
        and entry[4] == second._version
    ):
        return entry[0]
    return None


_LOGS: dict[int, tuple[weakref.ref, int, Tensor]] = {}


def remember_log(value: Tensor, log_value: Tensor) -> None:
    """Remember that ``log_value`` is ``log(value)`` while ``value`` is unmodified."""
    if compiling():
        return
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
    if compiling():
        return None
    remembered = _LOGS.get(id(value))
    if remembered is None:
        return None
    drawn, version, log_value = remembered
    if drawn() is not value or value._version != version:
        return None
    return log_value


def remembered(size: int) -> Callable[[Callable], Callable]:
    """Remember a pure function's results by argument, the last ``size`` of them
    (the oldest goes first). Unlike ``functools.lru_cache`` the table is a plain
    dictionary, which a compiled step reads: it takes the tensors made by an eager
    call as constants instead of tracing the function.

    Example:
        >>> @remembered(2)
        ... def zeros(n):
        ...     return torch.zeros(n)
        >>> zeros(3) is zeros(3)
        True
    """

    def decorate(build: Callable) -> Callable:
        table: dict = {}

        @functools.wraps(build)
        def remembering(*key):
            found = table.get(key)
            if found is None:
                if len(table) >= size:
                    del table[next(iter(table))]
                found = table[key] = build(*key)
            return found

        return remembering

    return decorate


@remembered(256)  # a scale that changes every step would add one a step
def constant(number: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A 0-d tensor holding ``number``, made once per dtype and device."""
    return torch.tensor(number, dtype=dtype, device=device)
