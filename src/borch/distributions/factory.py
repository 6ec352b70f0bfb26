"""Random-variable classes derived from ``torch.distributions`` metadata.

Every torch distribution becomes a real class (``borch.distributions.Normal`` ...) with
the same name, the same constructor signature (``inspect.signature``, ``help()`` and
IPython show it), a docstring listing each argument's constraint, and a module path
that pickling resolves. The metadata comes from torch itself, so a new torch release
adds its new distributions here without code changes.
"""

from __future__ import annotations

import inspect
import sys
from typing import Any

from torch.distributions import Distribution
from torch.distributions.constraints import Constraint

from borch.random_variable import RandomVariable

_SKIPPED_PARAMETERS = ("self", "validate_args")


def random_variable_class(
    distribution_cls: type[Distribution],
    name: str | None = None,
    module: str | None = None,
) -> type[RandomVariable]:
    """Make the random-variable class of a ``torch.distributions.Distribution`` class.

    Args:
        distribution_cls: the torch distribution class, built-in or your own.
        name: the class name (default: the distribution's).
        module: the module the class says it lives in (default: the caller's). To
            pickle instances, bind the class to ``name`` in that module, e.g.
            ``ShiftedRV = random_variable_class(Shifted, name="ShiftedRV")``.

    Example:
        >>> import torch
        >>> from torch.distributions import Normal
        >>> class Shifted(Normal):
        ...     def __init__(self, loc, scale, shift=1.0, validate_args=None):
        ...         super().__init__(loc + shift, scale, validate_args=validate_args)
        >>> ShiftedRV = random_variable_class(Shifted, name="ShiftedRV")
        >>> rv = ShiftedRV(0.0, 1.0, shift=2.0)
        >>> float(rv.distribution.mean)
        2.0
        >>> import inspect
        >>> str(inspect.signature(ShiftedRV))
        '(loc, scale, shift=1.0, validate_args=None)'
    """
    name = name or distribution_cls.__name__
    if module is None:
        module = sys._getframe(1).f_globals.get("__name__", "__main__")
    signature = inspect.signature(distribution_cls.__init__)
    parameters = [
        p for p in signature.parameters.values() if p.name not in _SKIPPED_PARAMETERS
    ]
    for parameter in parameters:
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise TypeError(
                f"{distribution_cls.__name__}.__init__ takes *args or **kwargs; "
                "random variables need named arguments"
            )
    arg_names = tuple(p.name for p in parameters)
    defaults = {
        p.name: p.default
        for p in parameters
        if p.default is not inspect.Parameter.empty and p.default is not None
    }
    required = tuple(p.name for p in parameters if p.default is inspect.Parameter.empty)
    class_constraints = distribution_cls.__dict__.get("arg_constraints")
    if not isinstance(class_constraints, dict):
        class_constraints = _inherited_dict(distribution_cls, "arg_constraints")
    tensor_args = frozenset(
        [p.name for p in parameters if "Tensor" in str(p.annotation)]
        + list(class_constraints or ())
    )
    distribution_args = frozenset(n for n in arg_names if n.endswith("distribution"))

    def __init__(self, *args: Any, validate_args: bool | None = None, **kwargs: Any):
        RandomVariable.__init__(
            self,
            _bind(name, arg_names, required, defaults, args, kwargs),
            validate_args,
        )

    __init__.__signature__ = signature
    __init__.__doc__ = f"Create a {name} random variable."
    support = _class_level(distribution_cls, "support", Constraint)
    has_rsample = _class_level(distribution_cls, "has_rsample", bool)
    namespace = {
        "__init__": __init__,
        "__module__": module,
        "__qualname__": name,
        "__doc__": _docstring(name, distribution_cls, parameters, class_constraints),
        "distribution_cls": distribution_cls,
        "arg_names": arg_names,
        "tensor_args": tensor_args,
        "distribution_args": distribution_args,
        "_class_arg_constraints": class_constraints,
        "_class_support": support,
        "_class_has_rsample": has_rsample,
    }
    cls = type(name, (RandomVariable,), namespace)
    cls._class_facts_of = cls  # the _class_* facts hold for this class only
    return cls


def _bind(name, arg_names, required, defaults, args, kwargs) -> dict[str, Any]:
    if len(args) > len(arg_names):
        raise TypeError(
            f"{name}() takes {len(arg_names)} positional arguments "
            f"({', '.join(arg_names)}) but {len(args)} were given"
        )
    bound = dict(zip(arg_names, args))
    for key, value in kwargs.items():
        if key not in arg_names:
            raise TypeError(f"{name}() got an unexpected keyword argument '{key}'")
        if key in bound:
            raise TypeError(f"{name}() got multiple values for argument '{key}'")
        bound[key] = value
    missing = [key for key in required if key not in bound]
    if missing:
        raise TypeError(f"{name}() missing required arguments: {', '.join(missing)}")
    for key, value in defaults.items():
        bound.setdefault(key, value)
    return {key: bound[key] for key in arg_names if bound.get(key) is not None}


def _inherited_dict(cls: type, attribute: str) -> dict | None:
    for base in cls.__mro__:
        value = base.__dict__.get(attribute)
        if value is not None:
            return value if isinstance(value, dict) else None
    return None


def _class_level(cls: type, attribute: str, kind: type) -> Any:
    """The attribute when it is a plain class-level value, ``None`` when it is a property."""
    for base in cls.__mro__:
        if attribute in base.__dict__:
            value = base.__dict__[attribute]
            # dependent properties are Constraint instances too, but per-instance
            plain = isinstance(value, kind) and not isinstance(value, property)
            return value if plain else None
    return None


def _docstring(name, distribution_cls, parameters, class_constraints) -> str:
    signature = ", ".join(str(p) for p in parameters)
    lines = [
        f"Random variable distributed as ``torch.distributions.{distribution_cls.__name__}``.",
        "",
        f"``{name}({signature}, validate_args=None)``",
        "",
        "Arguments may be numbers, lists, numpy arrays, tensors, ``nn.Parameter``s,",
        "other random variables (their current value is used) or lazily computed",
        "tensors (``borch.Graph``, ``borch.Transform``). Parameters among them belong",
        "to this module. Calling the variable draws a new value; in torch code it acts",
        "as its current value.",
        "",
        "Args:",
    ]
    for parameter in parameters:
        constraint = (class_constraints or {}).get(parameter.name)
        detail = f"constraint ``{constraint}``" if constraint is not None else "fixed"
        if parameter.default is not inspect.Parameter.empty:
            detail += f", default ``{parameter.default!r}``"
        lines.append(f"    {parameter.name}: {detail}.")
    lines.append(
        "    validate_args: check the arguments against their constraints "
        "(default: the ``borch.validate_args`` setting)."
    )
    support = _class_level(distribution_cls, "support", Constraint)
    has_rsample = _class_level(distribution_cls, "has_rsample", bool)
    lines += [
        "",
        f"Support: ``{support if support is not None else 'depends on the arguments'}``.",
        "Reparameterised sampling: "
        + {True: "yes.", False: "no.", None: "depends on the arguments."}[has_rsample],
        "",
        f"See ``torch.distributions.{distribution_cls.__name__}`` for the "
        "parameterisation.",
    ]
    return "\n".join(lines)


__all__ = ["random_variable_class"]
