"""The random variable: a module, a tensor and a distribution at once.

A :class:`RandomVariable` holds the arguments of a ``torch.distributions``
distribution (numbers, tensors, parameters, other random variables or lazily
computed tensors) and a current value.

* As a **module** it owns the parameters among its arguments, so they show up in
  ``parameters()``, ``state_dict()`` and ``.to()``.
* As a **tensor** it is its current value in torch functions and operators
  (``torch.exp(rv)``, ``rv * 2``, ``rv.sum()``). Calling it draws a new value.
* As a **distribution** it has ``log_prob``, ``sample``, ``rsample``, ``entropy``,
  ``cdf``, ``icdf``, ``perplexity``, ``support`` and ``has_rsample``, and
  ``.distribution`` is the ``torch.distributions`` object for the current arguments.

The distribution and the current value are caches keyed on the versions of the tensors
they were computed from: after an optimiser step changes a parameter, the next use
rebuilds the distribution and draws a new value. ``borch.sample(module)`` forces new
draws. Neither cache is part of the state dict.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from numbers import Number
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
import torch.utils._device as _torch_device
from torch import Tensor, nn
from torch.distributions import Distribution

from borch.compiling import (
    TracedContextVar,
    check_in_graph,
    compiling,
    note_step_state,
)
from borch.fastpath.construction import construct, remember_log_scale
from borch.fastpath.draws import draw
from borch.graph import Graph, apply_to_tensors
from borch.module_state import init_module_state
from borch.tensor_like import TensorLike, as_tensor
from borch.validation import (
    check_arguments_in_graph,
    check_flag,
    number_satisfies,
    validate_args,
    validation_enabled,
    violated_arguments,
)


class _Registered:
    """Marks an argument stored as a parameter or submodule; a singleton that survives
    copying and pickling."""

    __slots__ = ()

    def __reduce__(self) -> str:
        return "_REGISTERED"

    def __repr__(self) -> str:
        return "<registered>"


_REGISTERED = _Registered()


class RandomVariable(TensorLike, nn.Module):
    """Base class of every random variable; instantiate the subclasses.

    ``borch.distributions`` has one subclass per ``torch.distributions``
    distribution, with the same name and arguments. For a distribution of your own,
    use :func:`borch.distributions.random_variable_class`.

    Example:
        >>> import torch
        >>> import borch
        >>> from borch import distributions as dist
        >>> torch.manual_seed(0)
        <torch._C.Generator object at ...>
        >>> rv = dist.Normal(torch.zeros(3), 1.0)
        >>> rv.shape
        torch.Size([3])
        >>> rv.log_prob().shape
        torch.Size([3])
        >>> first = rv.tensor.clone()
        >>> bool((rv() == first).all())  # calling draws a new value
        False
        >>> rv.distribution
        Normal(loc: torch.Size([3]), scale: torch.Size([3]))
    """

    distribution_cls: ClassVar[type[Distribution] | None] = None
    #: names of the constructor arguments, in order
    arg_names: ClassVar[tuple[str, ...]] = ()
    #: arguments that hold tensors (lists and arrays given for them become tensors)
    tensor_args: ClassVar[frozenset[str]] = frozenset()
    #: arguments that hold distributions (random variables given for them are
    #: passed on as their distribution, not their value)
    distribution_args: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self,
        arguments: Mapping[str, Any] | None = None,
        validate_args: bool | None = None,
    ) -> None:
        if self.distribution_cls is None:
            raise TypeError(
                "RandomVariable is a base class: use a class from borch.distributions "
                "or make one with borch.distributions.random_variable_class"
            )
        init_module_state(self)
        state = self.__dict__
        state["_args"] = {}
        state["_validate_args"] = check_flag(validate_args)
        state["_name"] = None
        state["_validated"] = False
        state["_value"] = None
        state["_value_key"] = None
        state["_drawn_with_grad"] = True
        state["_dist"] = None
        state["_dist_key"] = None
        state["_generation"] = 0
        for name, value in (arguments or {}).items():
            self._store_arg(name, value)
        self._refresh_watch()

    # ------------------------------------------------------------------ arguments
    def _store_arg(self, name: str, value: Any) -> None:
        if type(value) in _NUMBER_TYPES and not self._parameters and not self._modules:
            self._args[name] = value  # the common case of a number, nothing to replace
            return
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        if isinstance(value, nn.Parameter):
            self._parameters[name] = value
            value = _REGISTERED
        elif isinstance(value, nn.Module):
            self._modules[name] = value
            value = _REGISTERED
        elif name in self.tensor_args and isinstance(
            value, (list, tuple, np.ndarray, np.number)
        ):
            value = as_tensor(value)
        self._args[name] = value

    def _arg(self, name: str) -> Any:
        """The argument as given (a parameter, module, tensor, number, ...)."""
        value = self._args[name]
        if value is _REGISTERED:
            value = self._parameters.get(name)
            if value is None:
                value = self._modules[name]
        return value

    @property
    def arguments(self) -> dict[str, Any]:
        """The distribution arguments as given, by name."""
        return {name: self._arg(name) for name in self._args}

    def register_param_or_buffer(self, name: str, value: Any) -> None:
        """Add or replace a distribution argument (the original borch's spelling).

        Parameters and modules are registered on this module; other values are kept
        as arguments and move with ``.to()``.
        """
        self._set_arg(name, value)

    def _set_arg(self, name: str, value: Any) -> None:
        """Replace one argument; the distribution and value are redrawn on next use."""
        self._store_arg(name, value)
        self._refresh_watch()
        self._invalidate()

    def _refresh_watch(self) -> None:
        state = self.__dict__
        static_key = _static_key(type(self), self._args)
        state["_static_key"] = static_key
        if static_key is not None:  # numbers only: nothing to watch
            state["_watched"] = state["_watched_rvs"] = state["_watched_dists"] = ()
            state["_aliases"] = _NO_ALIASES
            state["_needs_grad"] = False
            return
        tensors: list[Tensor] = []
        variables: list[RandomVariable] = []
        distributions: list[RandomVariable] = []
        for name in self._args:
            value = self._arg(name)
            if isinstance(value, RandomVariable):
                if name in self.distribution_args:
                    distributions.append(value)
                else:
                    variables.append(value)
            elif isinstance(value, Graph):
                tensors += value.watched_tensors()
            elif isinstance(value, Tensor):
                tensors.append(value)
        state["_watched"] = tensors
        state["_watched_rvs"] = variables
        state["_watched_dists"] = distributions
        # torch prints one-element arguments by value; a plain-tensor alias of a
        # parameter prints "0.0" where the parameter prints "Parameter containing:".
        # The alias is a view: it follows in-place updates and holds no saved
        # tensors, so one alias serves every step.
        parameters = self._parameters
        state["_aliases"] = (
            {
                name: param.as_subclass(Tensor)
                for name, param in parameters.items()
                if param is not None and param.numel() == 1 and name in self._args
            }
            if parameters
            else _NO_ALIASES
        )
        state["_needs_grad"] = (
            bool(variables)
            or any(rv._needs_grad for rv in distributions)
            or any(t.requires_grad for t in tensors)
        )

    def _current_key(self) -> tuple:
        """Fingerprint of everything the distribution is computed from (none while
        compiling: a compiled step rebuilds every distribution, see
        :func:`discard_value`)."""
        if compiling():
            return ()
        tensors = self._watched
        variables = self._watched_rvs
        distributions = self._watched_dists
        if not variables and not distributions:
            if not tensors:
                return ()
            return tuple([t._version for t in tensors])
        return (
            *[t._version for t in tensors],
            *[rv._fresh_generation() for rv in variables],
            *[rv._current_key() for rv in distributions],
        )

    def _fresh_generation(self) -> int:
        _ = self.tensor  # redraw first if stale, so dependants see the new generation
        return self._generation

    def discard_value(self) -> None:
        """Redraw on next use, with distributions that need gradients rebuilt (a
        fresh autograd graph per draw), here and in the variables this one uses."""
        state = self.__dict__
        state["_value"] = None
        if state["_needs_grad"] or compiling():
            state["_dist"] = None
        for rv in state["_watched_rvs"]:
            rv.discard_value()
        for rv in state["_watched_dists"]:
            rv.discard_value()

    def release_step_state(self) -> None:
        """End of a compiled step: keep the draw without its autograd graph and
        drop the distribution (an eager use after the step rebuilds both anyway)."""
        state = self.__dict__
        value = state["_value"]
        if value is not None:
            state["_value"] = value.detach()
        state["_dist"] = None

    def _invalidate(self, value: bool = True, distribution: bool = True) -> None:
        if distribution:
            self.__dict__["_dist"] = None
        if value:
            self.__dict__["_value"] = None

    # --------------------------------------------------------------- distribution
    def _evaluated_kwargs(self) -> dict[str, Any]:
        kwargs = {}
        distribution_args = self.distribution_args
        # (aliases only change how arguments print; dynamo warns on reading them)
        aliases = _NO_ALIASES if compiling() else self._aliases
        for name in self._args:
            value = self._arg(name)
            if isinstance(value, RandomVariable) and name in distribution_args:
                value = value.distribution
            elif isinstance(value, TensorLike):
                value = value.tensor
            elif name in aliases:
                value = aliases[name]
            kwargs[name] = value
        return kwargs

    def _build_distribution(self) -> Distribution:
        static_key = self._static_key
        if static_key is not None and not compiling():
            dist = _STATIC_DISTRIBUTIONS.get(static_key)
            if dist is not None and self._numbers_valid():
                return dist
        dist = self._build_from_arguments()
        if static_key is not None and not compiling():
            if len(_STATIC_DISTRIBUTIONS) >= _STATIC_CACHE_SIZE:
                _STATIC_DISTRIBUTIONS.pop(next(iter(_STATIC_DISTRIBUTIONS)))
            _STATIC_DISTRIBUTIONS[static_key] = dist
        return dist

    def _numbers_valid(self) -> bool:
        """Validate all-number arguments in Python; ``False`` if torch must check."""
        if (
            not self._validated
            and validation_enabled(self._validate_args)
            and self._check_number_args(self._args)
        ):
            return False
        self.__dict__["_validated"] = True
        return True

    def _build_from_arguments(self) -> Distribution:
        kwargs = self._evaluated_kwargs()
        validate = not self._validated and validation_enabled(self._validate_args)
        if validate:
            validate = self._check_number_args(kwargs)
        try:
            if type(self)._distribution is not RandomVariable._distribution:
                dist = self._distribution()
            elif validate and compiling():
                check_arguments_in_graph(
                    self.distribution_cls, kwargs, self._describe()
                )
                dist = construct(self.distribution_cls, kwargs, False)
            else:
                dist = construct(self.distribution_cls, kwargs, validate)
        except (ValueError, RuntimeError) as error:
            # The failure path only: say which of the user's arguments is at fault.
            culprits = (
                violated_arguments(self.distribution_cls, kwargs) if validate else []
            )
            if not culprits and not isinstance(error, ValueError):
                raise
            blame = (
                f"argument {', '.join(culprits)} breaks its constraint; "
                if culprits
                else ""
            )
            raise ValueError(f"{self._describe()}: {blame}{error}") from None
        if validate:
            # Samples are checked where they enter (observations), not on each
            # log-density evaluation.
            dist._validate_args = False
        kind = type(dist)
        if kind is torch.distributions.Normal or kind is torch.distributions.LogNormal:
            remember_log_scale(
                dist if kind is torch.distributions.Normal else dist.base_dist,
                self._arg("scale") if "scale" in self._args else None,
            )
        self.__dict__["_validated"] = True
        return dist

    def _check_number_args(self, kwargs: dict[str, Any]) -> bool:
        """Check number arguments in Python; return whether torch must check others."""
        constraints = _class_fact(type(self), "_class_arg_constraints")
        if constraints is None:
            return True
        needs_torch = False
        for name, constraint in constraints.items():
            value = kwargs.get(name)
            if value is None:
                continue
            if isinstance(value, Number) and not isinstance(value, bool):
                verdict = number_satisfies(constraint, value)
                if verdict is False:
                    raise ValueError(
                        f"{self._describe()}: argument {name}={value!r} must satisfy "
                        f"{constraint}"
                    )
                needs_torch |= verdict is None
            else:
                needs_torch = True
        return needs_torch

    def _distribution_now(self) -> Distribution:
        dist = self._dist
        if compiling():
            if dist is None:
                state = self.__dict__
                dist = state["_dist"] = self._build_distribution()
                state["_dist_key"] = None  # the next eager use rebuilds
                note_step_state(self)
            return dist
        key = self._current_key()
        if dist is None or key != self._dist_key:
            dist = self._build_distribution()
            state = self.__dict__
            state["_dist"] = dist
            state["_dist_key"] = key
        return dist

    def _distribution(self) -> Distribution:
        """Build the torch distribution; override for a custom parameterisation
        (the original borch's extension point). By default the class's
        ``distribution_cls`` is called with the evaluated arguments."""
        return self.distribution_cls(**self._evaluated_kwargs())

    @property
    def distribution(self) -> Distribution:
        """The ``torch.distributions`` object for the current argument values."""
        return self._distribution_now()

    def validate(self) -> None:
        """Check the arguments now (if validation is on); errors name the variable."""
        self._distribution_now()

    # ---------------------------------------------------------------------- value
    @property
    def tensor(self) -> Tensor:
        """The current value; drawn when first needed and after the arguments change."""
        value = self._value
        if value is None or (
            not compiling() and self._value_key != self._current_key()
        ):
            return self._draw()
        if not self._drawn_with_grad and self._needs_grad and torch.is_grad_enabled():
            # Drawn under no_grad; a value used for training must carry gradients.
            return self._draw()
        return value

    @tensor.setter
    def tensor(self, value: Any) -> None:
        self._set_value(as_tensor(value), self._current_key(), explicit=True)

    @property
    def last_value(self) -> Tensor | None:
        """The value drawn or set last, or ``None``; unlike :attr:`tensor` it never
        draws (even when the value is stale)."""
        return self._value

    def _set_value(self, value: Tensor, key: Any, explicit: bool = False) -> Tensor:
        state = self.__dict__
        state["_value"] = value
        state["_value_key"] = key
        # Values set by hand are kept whatever the grad mode.
        state["_drawn_with_grad"] = explicit or torch.is_grad_enabled()
        if not compiling():  # an int that changes on every draw would recompile
            state["_generation"] += 1
        elif not explicit:  # a value set by hand is kept as given
            note_step_state(self)
        return value

    def _draw(self) -> Tensor:
        dist = self._distribution_now()
        particles = _PARTICLES.get()
        if particles is None:
            value = draw(dist)
        else:
            value = _draw_particles(dist, *particles, self._describe())
        # Drawn while compiling: no key, so the next eager use draws anew.
        return self._set_value(value, None if compiling() else self._dist_key)

    def forward(self) -> Tensor:
        """Draw a new value and return it."""
        self._invalidate(value=True, distribution=self._needs_grad)
        return self.tensor

    # ------------------------------------------------------ distribution methods
    def _checked(self, value: Any) -> Tensor:
        if value is None:
            return self.tensor
        value = as_tensor(value)
        if validation_enabled(self._validate_args):
            dist = self.distribution
            inside = dist.support.check(value).all()
            if compiling():
                check_in_graph(
                    inside,
                    f"{self._describe()}: value outside the support",
                )
            elif not bool(inside):
                raise ValueError(
                    f"{self._describe()}: value outside the support {dist.support}: "
                    f"{value}"
                )
        return value

    def log_prob(self, value: Any = None) -> Tensor:
        """Log density (or mass) at ``value``, by default at the current value."""
        value = self._checked(value)
        return self.distribution.log_prob(value)

    def cdf(self, value: Any = None) -> Tensor:
        """Cumulative distribution function at ``value`` (default: current value)."""
        return self.distribution.cdf(self._checked(value))

    def icdf(self, value: Any) -> Tensor:
        """Inverse cumulative distribution function."""
        return self.distribution.icdf(as_tensor(value))

    def sample(self, sample_shape: torch.Size | tuple = ()) -> Tensor:
        """Independent draws, without gradients; the current value is unchanged."""
        return self.distribution.sample(torch.Size(sample_shape))

    def rsample(self, sample_shape: torch.Size | tuple = ()) -> Tensor:
        """Reparameterised draws; the current value is unchanged."""
        return self.distribution.rsample(torch.Size(sample_shape))

    def entropy(self) -> Tensor:
        """Entropy of the distribution."""
        return self.distribution.entropy()

    def perplexity(self) -> Tensor:
        """Perplexity, ``exp(entropy)``."""
        return self.distribution.perplexity()

    @property
    def support(self):
        """The support constraint of the distribution."""
        support = _class_fact(type(self), "_class_support")
        return support if support is not None else self.distribution.support

    @property
    def has_rsample(self) -> bool:
        """Whether draws can be reparameterised (gradients flow through them)."""
        has_rsample = _class_fact(type(self), "_class_has_rsample")
        if has_rsample is not None:
            return has_rsample
        return bool(self.distribution.has_rsample)

    @property
    def batch_shape(self) -> torch.Size:
        return self.distribution.batch_shape

    @property
    def event_shape(self) -> torch.Size:
        return self.distribution.event_shape

    @property
    def validates(self) -> bool:
        """Whether this variable's arguments and values are validated now (its own
        ``validate_args`` if given, else the :func:`borch.validate_args` switch)."""
        return validation_enabled(self._validate_args)

    @property
    def name(self) -> str | None:
        """The attribute name this variable was assigned to, if any."""
        return self._name

    # ------------------------------------------------------------- module plumbing
    def __getattr__(self, name: str) -> Any:
        state = self.__dict__
        args = state.get("_args")
        if args is not None and name in args:
            return self._arg(name)
        try:
            return nn.Module.__getattr__(self, name)
        except AttributeError:
            # Tensor attributes (shape, dtype, sum, ...) are those of the current value.
            if args is None or name.startswith("_") or not hasattr(Tensor, name):
                raise
        return getattr(self.tensor, name)

    def __setattr__(self, name: str, value: Any) -> None:
        args = self.__dict__.get("_args")
        if args is not None and name in args:
            self._set_arg(name, value)
        else:
            nn.Module.__setattr__(self, name, value)

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        for name, value in self._args.items():
            if value is not _REGISTERED:
                self._args[name] = apply_to_tensors(value, fn)
        self._refresh_watch()
        self._invalidate(value=False, distribution=True)
        if self._value is not None:
            # Current draws move with the module rather than being redrawn.
            self.__dict__["_value"] = fn(self._value)
            self.__dict__["_value_key"] = self._current_key()
        return self

    def __getstate__(self) -> dict[str, Any]:
        # Values and distributions are transient; arguments inside an autograd graph
        # are kept as plain values (deepcopy and pickle cannot copy graph nodes).
        state = self.__dict__.copy()
        state["_args"] = {
            name: apply_to_tensors(value, Tensor.detach)
            for name, value in self._args.items()
        }
        for key in ("_value", "_value_key", "_dist", "_dist_key"):
            state[key] = None
        state["_drawn_with_grad"] = True
        for key in (
            "_watched",
            "_watched_rvs",
            "_watched_dists",
            "_needs_grad",
            "_aliases",
        ):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        nn.Module.__setstate__(self, state)
        self._refresh_watch()

    def _describe(self) -> str:
        kind = type(self).__name__
        return f"random variable '{self._name}' ({kind})" if self._name else kind

    def __repr__(self) -> str:
        args = ", ".join(f"{name}={_short(self._arg(name))}" for name in self._args)
        return f"{type(self).__name__}({args})"

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self._args))


def _class_fact(cls: type, name: str) -> Any:
    """A ``_class_*`` fact :func:`borch.distributions.random_variable_class` recorded
    for exactly ``cls`` (a subclass may change the distribution), else ``None``.
    Read without ``cls.__dict__``, which dynamo cannot trace after a dict changed."""
    if getattr(cls, "_class_facts_of", None) is not cls:
        return None
    return getattr(cls, name, None)


def _short(value: Any) -> str:
    if isinstance(value, RandomVariable):
        return repr(value)
    if isinstance(value, Graph):
        return f"{type(value).__name__}({value.extra_repr()})"
    if isinstance(value, Tensor):
        kind = "Parameter" if isinstance(value, nn.Parameter) else "tensor"
        if value.numel() == 1:
            return f"{kind}({value.item():.4g})"
        return f"{kind}(shape={tuple(value.shape)})"
    return repr(value)


#: ``(number of particles, batch dims)`` while drawing several particles at once
#: (see ``borch.infer.variational.particles``); ``None`` otherwise.
_PARTICLES: TracedContextVar[tuple[int, int] | None] = TracedContextVar(
    "borch_particles", default=None
)


@contextlib.contextmanager
def particles(count: int, batch_dims: int) -> Iterator[None]:
    """Inside the block, every draw is ``count`` draws at once, in dimension
    ``-(batch_dims + 1)`` of the value (multi-sample ELBOs, vectorised predictive
    sampling)."""
    token = _PARTICLES.set((count, batch_dims))
    try:
        yield
    finally:
        _PARTICLES.reset(token)


@contextlib.contextmanager
def single_draws() -> Iterator[None]:
    """Inside the block, every draw is one draw again, whatever :func:`particles`
    block encloses it."""
    token = _PARTICLES.set(None)
    try:
        yield
    finally:
        _PARTICLES.reset(token)


def _draw_particles(
    dist: Distribution, count: int, batch_dims: int, who: str
) -> Tensor:
    """Draw ``count`` particles, the particle dimension left of ``batch_dims`` batch
    dimensions. A distribution whose arguments already carry particles (its batch
    shape reaches that dimension) draws one value of that shape."""
    batch = dist.batch_shape
    if len(batch) > batch_dims:
        if len(batch) != batch_dims + 1 or batch[0] not in (1, count):
            raise ValueError(
                f"{who}: batch shape {tuple(batch)} does not fit {count} particles "
                f"left of {batch_dims} batch dimension(s); raise batch_dims"
            )
        value = dist.rsample() if dist.has_rsample else dist.sample()
        if batch[0] == 1:
            value = value.expand((count, *value.shape[1:]))
        return value
    # Drawn laid out (the same numbers as (count,) reshaped), not reshaped after:
    # a distribution knows its own draw by identity (in a compiled step, where
    # storage cannot be compared, a view of it is scored anew).
    shape = (count,) + (1,) * (batch_dims - len(batch))
    return dist.rsample(shape) if dist.has_rsample else dist.sample(shape)


#: Distributions of random variables whose arguments are all plain numbers, shared
#: between the many identical priors a model creates on every forward pass
#: (``dist.Normal(0.0, 3.0)``). torch distributions are not mutated after
#: construction, so sharing them is safe; the key includes the default dtype and
#: device the numbers become tensors of.
_STATIC_DISTRIBUTIONS: dict[tuple, Distribution] = {}
_STATIC_CACHE_SIZE = 1024
_NUMBER_TYPES = (int, float, bool)


def _static_key(cls: type, args: dict[str, Any]) -> tuple | None:
    items = []
    for name, value in args.items():
        if type(value) not in _NUMBER_TYPES:
            return None
        items.append((name, value))
    return (cls, torch.get_default_dtype(), _default_device(), *items)


_NO_ALIASES: dict[str, Tensor] = {}


def _default_device() -> object:
    # torch.set_default_device keeps the device in this module global; reading it
    # is far cheaper than torch.get_default_device().
    return getattr(_torch_device, "CURRENT_DEVICE", None)


class RVPair(NamedTuple):
    """A prior and the approximating random variable to use for it.

    Assigning a pair to a module registers ``prior`` as the prior of the attribute and
    ``approximation`` as its approximating variable, whatever the posterior family.

    Example:
        >>> import torch
        >>> import borch
        >>> from borch import distributions as dist
        >>> model = borch.Module()
        >>> q = dist.Normal(torch.nn.Parameter(torch.tensor(1.0)), 0.5)
        >>> model.x = borch.RVPair(dist.Normal(0.0, 1.0), q)
        >>> model.posterior.x is q
        True
    """

    prior: RandomVariable
    approximation: RandomVariable


__all__ = ["RVPair", "RandomVariable", "particles", "single_draws", "validate_args"]
