"""Bayesian twins of torch modules: the shared behaviour and the class registry.

The twin of a torch class ``C`` is ``class C(<mixins>, BorchLayer, C, borch.Module)``:
torch's ``__init__`` runs first and its ``super().__init__()`` reaches
:class:`borch.Module`'s, so the layer is built exactly as torch builds it; then
:class:`BorchLayer` turns its own parameters into prior random variables (the
posterior creates their approximations) and converts the torch submodules torch's
``__init__`` created (``MultiheadAttention.out_proj``, the layers of a
``Transformer``). An instance is both a ``borch.Module`` and a ``C``.

:func:`borch_class` makes and caches twins; :func:`adopt` turns an existing torch
module into an instance of its twin in place.
"""

from __future__ import annotations

import copy
import inspect
import itertools
import warnings
from collections.abc import Callable
from typing import Any

import typing_extensions
from torch import nn

from borch.module import (
    RESERVED_NAMES,
    Module,
    Observed,
    attach_borch_state,
    check_posterior,
)
from borch.nn import defaults
from borch.nn.estimators import EstimatorMixin
from borch.nn.lazy import LazyMixin
from borch.nn.parameters import check_overrides, convert_parameters
from borch.nn.recurrent import RecurrentMixin
from borch.posterior import Posterior
from borch.random_variable import RandomVariable
from borch.rv_factories import RVFactory, apply_rv_factory, check_rv_factory

PosteriorCreator = Callable[[], Posterior]

#: torch class -> its twin
_TWINS: dict[type, type] = {}


class BorchLayer:
    """Behaviour shared by every Bayesian twin of a torch module.

    Constructor arguments: torch's, plus ``posterior=`` (a
    :class:`borch.posterior.Posterior`, default
    :func:`borch.nn.defaults.default_posterior`), ``rv_factory=`` (a prior factory
    ``f(name, parameter)``, see :mod:`borch.rv_factories`) and a prior per parameter
    by keyword (``weight=dist.Laplace(0.0, 0.1)``).
    """

    def __init__(
        self,
        *args: Any,
        posterior: Posterior | None = None,
        rv_factory: RVFactory | None = None,
        **kwargs: Any,
    ) -> None:
        overrides = {
            name: kwargs.pop(name)
            for name in list(kwargs)
            if isinstance(kwargs[name], RandomVariable)
        }
        posterior = _check_posterior(posterior)
        if rv_factory is not None:
            check_rv_factory(rv_factory)
        super().__init__(*args, **kwargs)
        if not _has_borch_state(self):  # torch's __init__ did not reach ours
            attach_borch_state(self)
        # Children get fresh copies of the posterior before it holds anything.
        template = copy.deepcopy(posterior)
        self.posterior = posterior
        state = self.__dict__
        state["_borch_rv_factory"] = rv_factory
        state["_borch_overrides"] = overrides
        check_overrides(self, overrides)
        self._borchify_own_parameters()
        borchify_children(self, rv_factory, lambda: copy.deepcopy(template))

    def _borchify_own_parameters(self) -> None:
        state = self.__dict__
        rv_factory = state.get("_borch_rv_factory")
        overrides = state.get("_borch_overrides") or {}
        convert_parameters(self, _prior_for(rv_factory), overrides)
        # Overrides are used once; afterwards they live on as the priors.
        priors = self.prior
        state["_borch_overrides"] = {
            name: value
            for name, value in overrides.items()
            if getattr(priors, name, None) is None
        }

    def __repr__(self) -> str:
        # Parameterless layers print as torch's: empty borch containers are hidden.
        modules = self._modules
        hidden = {
            name
            for name in RESERVED_NAMES
            if name in modules and not _has_content(modules[name])
        }
        if not hidden:
            return super().__repr__()
        self.__dict__["_modules"] = _ReprView(modules, hidden)
        try:
            return super().__repr__()
        finally:
            self.__dict__["_modules"] = modules

    def __reduce_ex__(self, protocol: int) -> Any:
        source = type(self).__dict__.get("_borch_dynamic_source")
        if source is None:
            return super().__reduce_ex__(protocol)
        # A twin made at run time cannot be found by name; rebuild it from its source.
        return (_new_instance_of_twin, (source,), self.__getstate__())


class _ReprView(dict):
    """The children of a module with some hidden from iteration (not from lookup)."""

    def __init__(self, modules: dict, hidden: set[str]) -> None:
        super().__init__(modules)
        self.hidden = hidden

    def items(self):
        return [(k, v) for k, v in super().items() if k not in self.hidden]


def _new_instance_of_twin(source: type) -> nn.Module:
    cls = borch_class(source)
    return cls.__new__(cls)


def _has_content(container: nn.Module) -> bool:
    held = itertools.chain(
        container.children(),
        container.parameters(recurse=False),
        container.buffers(recurse=False),
    )
    return next(held, None) is not None


def _has_borch_state(module: nn.Module) -> bool:
    """Whether ``borch.Module.__init__`` has given ``module`` its containers."""
    return isinstance(dict(module.named_children()).get("observed"), Observed)


def _check_posterior(posterior: Any) -> Posterior:
    return check_posterior(posterior, defaults.default_posterior)


def _prior_for(rv_factory: RVFactory | None):
    if rv_factory is None:
        return defaults.layer_prior

    def prior_for(module: nn.Module, name: str, parameter) -> RandomVariable | None:
        return apply_rv_factory(rv_factory, name, parameter)

    return prior_for


# ------------------------------------------------------------------ registry
def _mixins(source: type) -> tuple[type, ...]:
    mixins: list[type] = []
    if issubclass(source, nn.Linear) or (
        issubclass(source, nn.modules.conv._ConvNd)
        and not issubclass(source, nn.modules.conv._ConvTransposeNd)
    ):
        mixins.append(EstimatorMixin)
    if issubclass(source, nn.RNNBase):
        mixins.append(RecurrentMixin)
    if issubclass(source, nn.modules.lazy.LazyModuleMixin):
        mixins.append(LazyMixin)
    return tuple(mixins)


def is_container(source: type) -> bool:
    """Whether ``source`` is a torch container or wrapper (Sequential, ModuleList,
    ModuleDict, DataParallel, ...): its twin stays a plain torch module.

    Their children are what they hold, in order; adding the prior, posterior and
    observed children of a ``borch.Module`` would change what they iterate over.
    """
    return issubclass(
        source,
        (
            nn.Sequential,
            nn.ModuleList,
            nn.ModuleDict,
            nn.ParameterList,
            nn.ParameterDict,
            nn.Container,
            nn.DataParallel,
        ),
    )


def borch_class(source: type, module: str | None = None) -> type:
    """The Bayesian twin of a torch module class, made once and cached.

    Args:
        source: a subclass of ``torch.nn.Module``. A ``borch.Module`` subclass is
            returned as it is.
        module: the module the twin is said to live in (``"borch.nn"`` for the
            classes generated there). Twins made at run time without it pickle by
            rebuilding from their source class.

    Example:
        >>> import torch
        >>> import borch
        >>> class Scale(torch.nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.factor = torch.nn.Parameter(torch.ones(2))
        ...     def forward(self, x):
        ...         return x * self.factor
        >>> BayesianScale = borch_class(Scale)
        >>> layer = BayesianScale()
        >>> isinstance(layer, Scale), isinstance(layer, borch.Module)
        (True, True)
        >>> type(layer.prior.factor).__name__
        'Normal'
    """
    if not (isinstance(source, type) and issubclass(source, nn.Module)):
        raise TypeError(f"expected a torch.nn.Module subclass, got {source!r}")
    if issubclass(source, (Module, BorchLayer)):
        return source
    if source is nn.Module:
        return Module
    twin = _TWINS.get(source)
    if twin is not None:
        return twin
    name = source.__name__
    namespace: dict[str, Any] = {
        "__doc__": _docstring(source),
        "__module__": module or source.__module__,
        "__qualname__": name,
        "_borch_source": source,
    }
    if is_container(source):
        bases: tuple[type, ...] = (source,)
    else:
        bases = (*_mixins(source), BorchLayer, source, Module)
        namespace["__signature__"] = _signature(source)
        become = getattr(source, "cls_to_become", None)
        if isinstance(become, type):
            namespace["cls_to_become"] = borch_class(become, module)
    if module is None:
        namespace["_borch_dynamic_source"] = source
    with warnings.catch_warnings():
        # Subclassing a deprecated torch class warns; using the twin still does.
        warnings.simplefilter("ignore", FutureWarning)
        twin = type(name, bases, namespace)
    message = getattr(source, "__deprecated__", None)
    if isinstance(message, str):
        twin = typing_extensions.deprecated(message, category=FutureWarning)(twin)
    _TWINS[source] = twin
    return twin


def _docstring(source: type) -> str:
    reference = f"``{source.__module__}.{source.__qualname__}``"
    if is_container(source):
        return (
            f"{reference} under borch.nn: a plain torch container (its children are "
            "what it holds; the layers in it carry the random variables)."
        )
    text = (
        f"Bayesian twin of {reference}: constructed with torch's arguments, plus "
        "``posterior=``, ``rv_factory=`` and a prior per parameter by keyword "
        "(``weight=dist.Normal(0.0, 0.1)``). Each parameter becomes a prior random "
        "variable; reading it gives a draw from its approximation. See "
        "``borch.nn.defaults`` for the default priors and posterior."
    )
    if defaults.is_normalization(source):
        text += (
            " A normalisation layer: its affine parameters stay deterministic "
            "``nn.Parameter``s unless given a prior by keyword or an ``rv_factory``."
        )
    if issubclass(source, nn.RNNBase):
        text += (
            " Recurrent: the weight list torch hands to its fused kernels is rebuilt "
            "from the current draws on every forward (see ``borch.nn.recurrent``)."
        )
    if EstimatorMixin in _mixins(source):
        text += (
            " Takes ``estimator=`` (None, 'local_reparameterization' for Linear, "
            "'flipout'): see ``borch.nn.estimators``."
        )
    return text


def _signature(source: type) -> inspect.Signature | None:
    try:
        signature = inspect.signature(source)
    except (TypeError, ValueError):
        return None
    parameters = list(signature.parameters.values())
    variadic = [p for p in parameters if p.kind is p.VAR_KEYWORD]
    plain = [p for p in parameters if p.kind is not p.VAR_KEYWORD]
    extra = [
        inspect.Parameter("posterior", inspect.Parameter.KEYWORD_ONLY, default=None),
        inspect.Parameter("rv_factory", inspect.Parameter.KEYWORD_ONLY, default=None),
    ]
    if EstimatorMixin in _mixins(source):
        extra.append(
            inspect.Parameter("estimator", inspect.Parameter.KEYWORD_ONLY, default=None)
        )
    taken = {p.name for p in plain}
    extra = [p for p in extra if p.name not in taken]
    priors = variadic or [inspect.Parameter("priors", inspect.Parameter.VAR_KEYWORD)]
    return signature.replace(parameters=[*plain, *extra, *priors])


# ------------------------------------------------------------------ conversion
def adopt(
    module: nn.Module,
    rv_factory: RVFactory | None = None,
    posterior: Posterior | None = None,
) -> nn.Module:
    """Turn ``module`` (in place) into an instance of its twin, its own parameters
    into random variables. Containers and borch modules are returned unchanged."""
    cls = borch_class(type(module))
    if cls is type(module):
        return module
    attach_borch_state(module, _check_posterior(posterior))
    module.__class__ = cls
    state = module.__dict__
    state["_borch_rv_factory"] = rv_factory
    state["_borch_overrides"] = {}
    if isinstance(module, RecurrentMixin):
        module._init_flat_weights()
    module._borchify_own_parameters()
    return module


def has_own_parameters(module: nn.Module) -> bool:
    """Whether ``module`` holds parameters itself (not only in its children)."""
    return next(module.parameters(recurse=False), None) is not None


def borchify_children(
    module: nn.Module,
    rv_factory: RVFactory | None,
    posterior_creator: PosteriorCreator,
) -> None:
    """Convert, in place, every torch module below ``module`` that has parameters of
    its own, recursing through containers and plain modules."""
    for name, child in list(module.named_children()):
        if name in RESERVED_NAMES and isinstance(module, Module):
            continue
        if isinstance(child, (RandomVariable, Posterior)):
            continue
        if not isinstance(child, Module) and has_own_parameters(child):
            adopt(child, rv_factory, posterior_creator())
        borchify_children(child, rv_factory, posterior_creator)


def check_posterior_creator(posterior_creator: Any) -> PosteriorCreator:
    """``posterior_creator`` as a callable making fresh posteriors."""
    if posterior_creator is None:
        return defaults.default_posterior
    if isinstance(posterior_creator, Posterior):
        raise TypeError(
            "posterior_creator must make a new posterior for each module, e.g. "
            f"posterior_creator={type(posterior_creator).__name__}; got an instance"
        )
    if not callable(posterior_creator):
        raise TypeError(
            "posterior_creator must be a callable returning a borch.posterior."
            f"Posterior, got {type(posterior_creator).__name__}"
        )
    return posterior_creator


__all__ = [
    "BorchLayer",
    "PosteriorCreator",
    "adopt",
    "attach_borch_state",
    "borch_class",
    "borchify_children",
    "check_posterior_creator",
    "has_own_parameters",
    "is_container",
]
