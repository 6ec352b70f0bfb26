"""Cheap creation of ``nn.Module`` state for objects made on every forward pass.

A prior such as ``dist.Normal(0.0, 3.0)`` written in a model's ``forward`` is a new
module on every call; ``nn.Module.__init__`` costs several microseconds, most of it
setting attributes one by one through ``__setattr__`` machinery. The state it creates
is a fixed set of empty containers and flags, so it is read once from a real
``nn.Module()`` and copied. If a torch release ever adds state that is not an empty
container or an immutable value, the copy is not trusted and the real initialiser is
used.
"""

from __future__ import annotations

from torch import nn

_TEMPLATE = dict(nn.Module().__dict__)
_CONTAINERS = (dict, set, list)


def _copyable(value: object) -> bool:
    if isinstance(value, _CONTAINERS):
        return len(value) == 0
    return value is None or isinstance(value, (bool, int, float, str))


TEMPLATE_IS_SAFE = all(_copyable(value) for value in _TEMPLATE.values())
_FRESH = [
    (key, type(value) if isinstance(value, _CONTAINERS) else None, value)
    for key, value in _TEMPLATE.items()
]


def init_module_state(module: nn.Module) -> None:
    """Give ``module`` the state ``nn.Module.__init__`` would, as fast as possible."""
    if not TEMPLATE_IS_SAFE:
        nn.Module.__init__(module)
        return
    state = module.__dict__
    for key, container, value in _FRESH:
        state[key] = container() if container is not None else value


__all__ = ["TEMPLATE_IS_SAFE", "init_module_state"]
