"""``borch.Module``: an ``nn.Module`` whose attributes may be random variables.

Assigning a random variable to a module registers it as the *prior* of that
attribute, asks the module's *posterior* for the approximating variable, and marks the
name as used. Reading the attribute gives a plain tensor: the observed value when the
name is observed, else the approximating variable's current draw.

Example:
    >>> import torch
    >>> import borch
    >>> from borch import distributions as dist
    >>> class Regression(borch.Module):
    ...     def forward(self, x):
    ...         self.slope = dist.Normal(0.0, 3.0)
    ...         self.noise = dist.LogNormal(0.0, 1.0)
    ...         self.y = dist.Normal(self.slope * x, self.noise)
    ...         return self.y
    >>> model = Regression()
    >>> model.observe(y=torch.tensor([0.5, 1.1, 1.9]))
    >>> prediction = model(torch.tensor([0.0, 1.0, 2.0]))
    >>> prediction  # the observed value
    tensor([0.5000, 1.1000, 1.9000])
    >>> type(model.slope)
    <class 'torch.Tensor'>
    >>> type(model.prior.slope).__name__, type(model.posterior.slope).__name__
    ('Normal', 'Normal')
    >>> loss = borch.infer.vi_loss(**borch.pq_to_infer(model))
    >>> loss.backward()
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from borch.compiling import check_in_graph, compiling
from borch.fastpath.shapes import broadcast_shapes
from borch.handlers import SiteContext, current_context
from borch.posterior import Automatic, Posterior
from borch.posterior.laplace_start import model_call, start_awaiting
from borch.posterior.local import LocalRows, full_size_prior, plate_axes
from borch.random_variable import RandomVariable, RVPair
from borch.validation import check_observed_value, validation_enabled

#: Attribute names a borch.Module uses itself.
RESERVED_NAMES = frozenset({"prior", "posterior", "observed"})


class Priors(nn.Module):
    """Container of a module's prior random variables, by attribute name."""

    def forward(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the prior container is not called")


class Observed(nn.Module):
    """Container of a module's observed values, kept as buffers (so in the state dict).

    Loading a state dict re-creates observed values the receiving module lacks.
    """

    def forward(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the observed container is not called")

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for key, value in state_dict.items():
            name = key[len(prefix) :]
            if key.startswith(prefix) and "." not in name and name not in self._buffers:
                self._buffers[name] = value.clone()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class Module(nn.Module):
    """An ``nn.Module`` whose attributes may be random variables.

    Args:
        posterior: the posterior family that creates approximating variables
            (default :class:`borch.posterior.Automatic`).

    Children ``prior``, ``posterior`` and ``observed`` hold the priors, the
    approximating variables (whose parameters are the module's optimisable
    parameters) and the observed values.

    Example:
        >>> import torch
        >>> import borch
        >>> from borch import distributions as dist
        >>> class Weighted(borch.Module):
        ...     def __init__(self):
        ...         super().__init__(posterior=borch.posterior.Normal())
        ...         self.weight = dist.Normal(torch.ones(4), torch.ones(4))
        ...     def forward(self, x):
        ...         return x.matmul(self.weight)
        >>> module = Weighted()
        >>> module.observe(weight=torch.ones(4))
        >>> module(torch.ones(3, 4))
        tensor([4., 4., 4.])
        >>> module.observe(weight=None)
        >>> out = module(torch.ones(3, 4))
        >>> borch.sample(module)
        >>> bool((out == module(torch.ones(3, 4))).any())
        False
    """

    def __init__(self, posterior: Posterior | None = None) -> None:
        super().__init__()
        self.posterior = check_posterior(posterior, Automatic)
        self.prior = Priors()
        self.observed = Observed()
        self.__dict__["_used"] = {}
        self.__dict__["_observed_checks"] = {}
        self.__dict__["_conditioned"] = {}
        self.__dict__["_simulate_observed"] = False
        self.__dict__["_local"] = {}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if compiling():
            return super().__call__(*args, **kwargs)
        with model_call() as outermost:
            result = super().__call__(*args, **kwargs)
            if outermost:
                # A joint posterior created in this call may start from a fit of
                # the model (posterior.laplace_start): it re-runs this call.
                started, rerun = start_awaiting(
                    self, lambda: nn.Module.__call__(self, *args, **kwargs)
                )
                if started:
                    result = rerun
        return result

    # ------------------------------------------------------------- assignment
    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, (RandomVariable, RVPair)):
            self._assign_random_variable(name, value)
        else:
            super().__setattr__(name, value)

    def _assign_random_variable(
        self, name: str, value: RandomVariable | RVPair
    ) -> None:
        state = self.__dict__
        if "_used" not in state:
            raise AttributeError(
                f"cannot assign random variable '{name}' before "
                f"{type(self).__name__}.__init__() has called borch.Module.__init__()"
            )
        modules = state["_modules"]
        self._check_name_free(name, modules)
        if isinstance(value, RVPair):
            prior, approximation = value
            if not isinstance(prior, RandomVariable):
                raise TypeError(
                    f"RVPair for '{name}': the prior must be a RandomVariable"
                )
            modules["posterior"].set_approximation(name, approximation)
        else:
            prior, approximation = value, None
        prior.__dict__["_name"] = name
        modules["prior"]._modules[name] = prior
        observed = modules["observed"]._buffers.get(name)
        context = current_context()
        local = state["_local"]
        if local:
            local.pop(name, None)
        if context.plates:
            axes = plate_axes(
                name, self._site_batch(name, prior, approximation), context.plates
            )
        if name in state["_conditioned"]:
            pass  # data for now; no approximation needed
        elif observed is not None:
            self._check_observation(name, prior, observed, context.mask)
        else:
            if prior.validates:
                prior.validate()
            if approximation is None:
                posterior = modules["posterior"]
                if (
                    not torch.is_grad_enabled()
                    and posterior.approximation(name) is None
                ):
                    # Without gradients an argument computed from other variables
                    # looks like a constant, so no approximation can be made right:
                    # this run draws from the prior (for a forgotten observation,
                    # the likelihood at the network's current output).
                    local[name] = prior
                elif context.plates:
                    self._use_local_rows(name, prior, context.plates, axes)
                else:
                    posterior.set_random_variable(name, prior)
        state["_used"][name] = context

    def _site_batch(
        self, name: str, prior: RandomVariable, approximation: RandomVariable | None
    ) -> torch.Size:
        """The batch shape of a site's log-density terms: the prior's, broadcast with
        the data (observed or conditioned) or a given approximation, so that a prior
        of plain numbers serves inside a plate."""
        batch = prior.distribution.batch_shape
        given = self._conditioned.get(name)
        if given is None:
            given = self._modules["observed"]._buffers.get(name)
        if given is not None:
            events = len(prior.distribution.event_shape)
            other = given.shape[: given.dim() - events] if events else given.shape
        elif approximation is not None:
            other = approximation.distribution.batch_shape
        else:
            return batch
        try:
            return broadcast_shapes(batch, other)
        except RuntimeError:
            return batch

    def _use_local_rows(
        self, name: str, prior: RandomVariable, plates: tuple, axes: list[int]
    ) -> None:
        """A latent inside plates: the posterior approximates every row (created
        from a full-size prior the first time), and this run uses the view of the
        subsample's rows."""
        posterior = self._modules["posterior"]
        full = posterior.approximation(name)
        if full is None:
            full = posterior.set_random_variable(name, full_size_prior(prior, plates))
        selections = [
            (axis, frame.subsample)
            for axis, frame in zip(axes, plates)
            if not _covers_all(frame)
        ]
        if selections:
            self.__dict__["_local"][name] = LocalRows(full, selections)

    def _check_name_free(self, name: str, modules: dict) -> None:
        if name in RESERVED_NAMES:
            raise ValueError(
                f"'{name}' is reserved by borch.Module; rename the variable"
            )
        if name in self._parameters or name in self._buffers or name in modules:
            kind = (
                "parameter"
                if name in self._parameters
                else "buffer"
                if name in self._buffers
                else "submodule"
            )
            raise AttributeError(
                f"cannot assign random variable '{name}': {type(self).__name__} already "
                f"has a {kind} of that name; delete it first (del module.{name})"
            )
        self.__dict__.pop(name, None)

    def _check_observation(
        self,
        name: str,
        prior: RandomVariable,
        value: Tensor,
        mask: Tensor | None = None,
    ) -> None:
        if not prior.validates:
            return
        support = prior.distribution.support
        # A compiled step checks in its graph on every step (versions are untraceable).
        checked = None if compiling() else self._observed_checks.get(name)
        if (
            checked is not None
            and checked[0] is value
            and checked[1] == value._version
            and checked[3] is mask
            and _same_support(checked[2], support)
        ):
            return
        inside = support.check(value)
        if mask is not None:
            try:
                fits = broadcast_shapes(mask.shape, inside.shape) == inside.shape
            except RuntimeError:
                fits = False
            if not fits:
                raise ValueError(
                    f"the mask of '{name}' has shape {tuple(mask.shape)}, which does "
                    f"not broadcast to its observed value's batch shape "
                    f"{tuple(inside.shape)}"
                )
            inside = inside | ~mask  # masked elements are not data
        if compiling():
            check_in_graph(
                inside.all(),
                # (a support made while tracing cannot be printed yet)
                f"observed value of '{name}' is outside the support of its prior "
                f"{type(prior).__name__} (or NaN where it is not masked)",
            )
            return
        if not bool(inside.all()):
            if value.is_floating_point() and bool(value.isnan().any()):
                raise ValueError(
                    f"observed value of '{name}' has NaN where it is not masked; "
                    "mark missing entries with borch.mask(keep) around the "
                    f"assignment of '{name}' (keep False where data are missing)"
                )
            raise ValueError(
                f"observed value of '{name}' is outside the support {support} of its "
                f"prior {prior!r}: {value}"
            )
        self._observed_checks[name] = (value, value._version, support, mask)

    # ----------------------------------------------------------------- access
    def __getattr__(self, name: str) -> Any:
        modules = self.__dict__.get("_modules")
        if modules is not None:
            priors = modules.get("prior")
            if priors is not None:
                prior = priors._modules.get(name)
                if prior is not None:
                    return self._current_value(name, prior, modules)
        return nn.Module.__getattr__(self, name)

    def _current_value(self, name: str, prior: RandomVariable, modules: dict) -> Tensor:
        used = self.__dict__["_used"]
        if name not in used:
            used[name] = current_context()
        return self._resolve(name, prior, modules)[2]

    def _resolve(
        self, name: str, prior: RandomVariable, modules: dict
    ) -> tuple[RandomVariable | None, bool, Tensor]:
        """``(approximation, observed, value)`` of a variable right now.

        Conditioned variables (:func:`borch.condition`) and observed ones are data: no
        approximation, their value given. Under :func:`borch.simulate_observed`, an
        observed variable's value is a draw from its prior (the likelihood) instead.
        """
        state = self.__dict__
        conditioned = state["_conditioned"]
        if conditioned and name in conditioned:
            return None, True, conditioned[name]
        observed = modules["observed"]._buffers.get(name)
        if observed is not None:
            if state["_simulate_observed"]:
                return None, True, prior.tensor
            return None, True, observed
        local = state["_local"]
        approximation = local.get(name) if local else None
        if approximation is None:
            posterior = modules["posterior"]
            approximation = posterior._modules.get(name)
            if approximation is None:
                if not torch.is_grad_enabled():  # see _assign_random_variable
                    local[name] = prior
                    return prior, False, prior.tensor
                approximation = posterior.set_random_variable(name, prior)
        return approximation, False, approximation.tensor

    # ------------------------------------------------------------ record of use
    def mark_used(self, name: str, context: SiteContext | None = None) -> None:
        """Record that the model used variable ``name`` in this run (layers that
        read a variable's distribution instead of its value call this)."""
        if name not in self._modules["prior"]._modules:
            raise KeyError(f"{type(self).__name__} has no random variable '{name}'")
        used = self.__dict__["_used"]
        if name not in used:
            used[name] = current_context() if context is None else context

    def start_run(self, posterior: bool = True, prior: bool = False) -> None:
        """Forget the record of use and have the approximating variables
        (``posterior``) and priors (``prior``) draw anew when next read;
        :func:`borch.sample` calls this on every borch module of a model."""
        self.__dict__["_used"].clear()
        modules = self._modules
        # The containers' own dicts, not children(): this runs on every step.
        for wanted, container in ((posterior, "posterior"), (prior, "prior")):
            if wanted:
                for rv in modules[container]._modules.values():
                    if isinstance(rv, RandomVariable):
                        rv.discard_value()
        if posterior:
            for view in self.__dict__["_local"].values():
                view.discard_value()

    def used(self) -> list[tuple]:
        """``(name, prior, approximation or None, observed, value, scale, mask,
        plates)`` of each variable used since the record was last started, in the
        order of first use (an approximation missing for a latent one is created);
        :func:`borch.sites` reads this."""
        modules = self._modules
        priors = modules["prior"]._modules
        found = []
        for name, context in self._used.items():
            prior = priors.get(name)
            if prior is not None:
                approximation, observed, value = self._resolve(name, prior, modules)
                found.append((name, prior, approximation, observed, value, *context))
        return found

    def resolve(self, name: str) -> tuple[RandomVariable | None, bool, Tensor]:
        """``(approximation or None, observed, value)`` of variable ``name`` now,
        creating its approximation if it has none yet (without marking it used)."""
        modules = self._modules
        prior = modules["prior"]._modules.get(name)
        if prior is None:
            raise KeyError(f"{type(self).__name__} has no random variable '{name}'")
        return self._resolve(name, prior, modules)

    def is_given(self, name: str) -> bool:
        """Whether ``name`` is data now: observed or conditioned on."""
        return name in self._conditioned or name in self._modules["observed"]._buffers

    def set_condition(self, name: str, value: Tensor | None) -> Tensor | None:
        """Condition ``name`` on ``value`` (``None`` removes the condition); returns
        the previous value. :func:`borch.condition` is the way to use this."""
        conditioned = self.__dict__["_conditioned"]
        previous = conditioned.get(name)
        if value is None:
            conditioned.pop(name, None)
        else:
            conditioned[name] = value
        return previous

    def set_simulate_observed(self, flag: bool) -> bool:
        """Draw observed variables from their likelihood while ``flag`` is true;
        returns the previous flag. :func:`borch.simulate_observed` uses this."""
        previous = self.__dict__["_simulate_observed"]
        self.__dict__["_simulate_observed"] = bool(flag)
        return previous

    def simulates_observed(self) -> bool:
        """Whether observed variables are drawn from their likelihood now (see
        :meth:`set_simulate_observed`)."""
        return self.__dict__["_simulate_observed"]

    def __delattr__(self, name: str) -> None:
        priors = self._modules["prior"]._modules if "prior" in self._modules else {}
        if name in priors:
            # The learned approximation stays on the posterior.
            del priors[name]
            self._used.pop(name, None)
            self._observed_checks.pop(name, None)
        else:
            super().__delattr__(name)

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self._modules["prior"]._modules))

    # ------------------------------------------------------------ observation
    def observe(self, *args: None, **kwargs: Tensor | None) -> None:
        """Observe variables at given values, or forget observations.

        ``observe(y=tensor)`` observes ``y``; ``observe(y=None)`` forgets it;
        ``observe(None)`` forgets all. Reading an observed attribute gives the
        observed value, and inference treats it as data. Non-finite observations are
        rejected while validation is on.

        Example:
            >>> import torch
            >>> import borch
            >>> from borch import distributions as dist
            >>> model = borch.Module()
            >>> model.observe(y=torch.tensor([100.0]))
            >>> model.y = dist.Normal(torch.tensor([1.0]), 1.0)
            >>> model.y
            tensor([100.])
            >>> model.observe(None)
            >>> bool(model.y == 100.0)
            False
            >>> model.observe(y=[1.0])
            Traceback (most recent call last):
            ...
            TypeError: observe: argument 'y' must be a torch.Tensor or None, got list
        """
        if args:
            if args != (None,) or kwargs:
                raise TypeError(
                    "observe takes either None alone (forget every observation) or "
                    "keyword arguments name=tensor|None"
                )
            for name in list(self.observed._buffers):
                self._forget(name)
            return
        for name, value in kwargs.items():
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(
                    f"observe: argument '{name}' must be a torch.Tensor or None, got "
                    f"{type(value).__name__}"
                )
        for name, value in kwargs.items():
            if value is None:
                self._forget(name)
                continue
            if name in RESERVED_NAMES:
                raise ValueError(f"'{name}' is reserved by borch.Module")
            if validation_enabled():
                check_observed_value(name, value)
            buffers = self.observed._buffers
            buffers[name] = value
            self._observed_checks.pop(name, None)

    def _forget(self, name: str) -> None:
        self.observed._buffers.pop(name, None)
        self._observed_checks.pop(name, None)

    # ------------------------------------------------------------- plumbing
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_observed_checks"] = {}
        state["_local"] = {}  # views of one run; the posterior holds what they show
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("_used", {})
        state.setdefault("_observed_checks", {})
        state.setdefault("_conditioned", {})
        state.setdefault("_simulate_observed", False)
        state.setdefault("_local", {})
        super().__setstate__(state)


def attach_borch_state(module: nn.Module, posterior: Posterior | None = None) -> None:
    """Give a torch module the state ``borch.Module.__init__`` creates (prior,
    posterior and observed children first, then its own), keeping what it has."""
    # Grafting onto a torch module works on nn.Module's own dicts: there is no
    # public way to reorder children.
    clash = [name for name in RESERVED_NAMES if name in module.__dict__["_modules"]]
    if clash or any(name in module.__dict__ for name in RESERVED_NAMES):
        name = (
            clash[0]
            if clash
            else next(n for n in RESERVED_NAMES if n in module.__dict__)
        )
        raise ValueError(
            f"{type(module).__name__} has an attribute named {name!r}, which "
            "borch.Module reserves; rename it before converting the module"
        )
    scratch = Module(posterior=posterior)
    state = module.__dict__
    for key, value in scratch.__dict__.items():
        if key not in state:
            state[key] = value
    state["_modules"] = {**scratch.__dict__["_modules"], **state["_modules"]}


def check_posterior(
    posterior: Posterior | None, default: Callable[[], Posterior]
) -> Posterior:
    """``posterior``, or ``default()`` for ``None``; a clear error for anything that
    is not a :class:`~borch.posterior.Posterior` instance."""
    if posterior is None:
        return default()
    if isinstance(posterior, type) and issubclass(posterior, Posterior):
        raise TypeError(
            f"posterior must be an instance, e.g. posterior={posterior.__name__}()"
        )
    if not isinstance(posterior, Posterior):
        raise TypeError(
            "posterior must be a borch.posterior.Posterior, got "
            f"{type(posterior).__name__}"
        )
    return posterior


def named_borch_modules(module: nn.Module) -> Iterator[tuple[str, Module]]:
    """``(qualified path, module)`` of every :class:`Module` in ``module``'s tree
    (itself included, path ``""``), each once, depth first in the order of
    ``named_modules``.

    The prior, posterior and observed containers are not searched: they hold random
    variables, not models.
    """
    if isinstance(module, Module) and all(
        key in RESERVED_NAMES for key in module._modules
    ):  # a model without submodules, the commonest case: no walk
        yield "", module
        return
    found: list[tuple[str, Module]] = []
    _collect_borch_modules(module, "", {id(module)}, found)
    yield from found


def _collect_borch_modules(
    current: nn.Module, path: str, seen: set[int], found: list
) -> None:
    # Recursion over the dicts themselves: this runs twice per training step, and a
    # stack of (path, child) lists cost several times more on a network of torch
    # children.
    is_borch = isinstance(current, Module)
    if is_borch:
        found.append((path, current))
    prefix = f"{path}." if path else ""
    for key, child in current._modules.items():
        if child is None or (is_borch and key in RESERVED_NAMES):
            continue
        if not child._modules and not isinstance(child, Module):
            continue  # a torch leaf (Linear, Tanh, ...): nothing to find inside
        if id(child) in seen or isinstance(child, (RandomVariable, Posterior)):
            continue
        seen.add(id(child))
        _collect_borch_modules(child, prefix + key, seen, found)


def borch_modules(module: nn.Module) -> Iterator[Module]:
    """Every :class:`Module` in ``module``'s tree, as :func:`named_borch_modules`."""
    for _, borch_module in named_borch_modules(module):
        yield borch_module


__all__ = [
    "RESERVED_NAMES",
    "Module",
    "Observed",
    "Priors",
    "attach_borch_state",
    "borch_modules",
    "check_posterior",
    "named_borch_modules",
]


def _covers_all(frame: Any) -> bool:
    """Whether a plate's subsample is every row in order (no view needed)."""
    index = frame.subsample
    return len(index) == frame.size and bool(
        (index == torch.arange(frame.size, device=index.device)).all()
    )


def _same_support(a: Any, b: Any) -> bool:
    """Whether two constraints are the same check. Some distributions (Categorical,
    Binomial, ...) build a new support object on every access, so identity is not
    enough; compare their type and their number-valued bounds."""
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    fields_a, fields_b = vars(a), vars(b)
    if fields_a.keys() != fields_b.keys():
        return False
    return all(
        isinstance(x, int | float | bool)
        and type(x) is type(fields_b[k])
        and x == fields_b[k]
        for k, x in fields_a.items()
    )
