"""Converting existing torch modules and networks into Bayesian ones."""

from __future__ import annotations

import copy
import inspect
import types

from torch import nn

from borch.module import Module
from borch.nn.layer import (
    PosteriorCreator,
    adopt,
    borch_class,
    borchify_children,
    check_posterior_creator,
    has_own_parameters,
)
from borch.posterior import Posterior
from borch.rv_factories import RVFactory, check_rv_factory


def borchify_module(
    module: nn.Module,
    rv_factory: RVFactory | None = None,
    posterior: Posterior | None = None,
) -> nn.Module:
    """A Bayesian copy of one module: its own parameters become random variables.

    The copy is an instance of the module's twin (``borch.nn.Linear`` for a
    ``torch.nn.Linear``; a twin made on the fly for other classes), so it is both a
    ``borch.Module`` and an instance of the module's class. Submodules are copied
    as they are; use :func:`borchify_network` to convert a whole network. The
    original module is not changed.

    Args:
        module: the torch module.
        rv_factory: prior factory ``f(name, parameter)`` (default: the
            :mod:`borch.nn` default priors; normalisation layers keep their
            parameters). A factory may return ``None`` to keep a parameter.
        posterior: the posterior (default
            :func:`borch.nn.defaults.default_posterior`, whose locs start at the
            module's current weights).

    Example:
        >>> import torch
        >>> import borch
        >>> linear = torch.nn.Linear(3, 2)
        >>> bayesian = borchify_module(linear)
        >>> type(bayesian).__module__, type(bayesian).__name__
        ('borch.nn', 'Linear')
        >>> torch.equal(bayesian.posterior.weight.loc, linear.weight)
        True
    """
    if not isinstance(module, nn.Module):
        raise TypeError(
            f"module must be a torch.nn.Module, got {type(module).__name__}"
        )
    if rv_factory is not None:
        check_rv_factory(rv_factory)
    if isinstance(module, Module):
        raise ValueError(
            f"{type(module).__name__} is already a borch.Module; its random variables "
            "are set by assigning them"
        )
    return adopt(copy.deepcopy(module), rv_factory, posterior)


def borchify_network(
    net: nn.Module,
    rv_factory: RVFactory | None = None,
    posterior_creator: PosteriorCreator | None = None,
) -> nn.Module:
    """A Bayesian copy of a whole network, trained weights kept as posterior locs.

    Every module with parameters of its own becomes an instance of its twin (see
    :func:`borchify_module`); containers and parameterless modules stay as they
    are, so the copy has the network's structure and forward. With the default
    posterior the locs start at the network's weights and the scales are small, so
    the copy predicts close to the original before any training. The input network
    is not changed. Tied parameters (one ``nn.Parameter`` in several modules)
    become separate random variables.

    Args:
        net: the network.
        rv_factory: prior factory (default: the :mod:`borch.nn` default priors).
        posterior_creator: makes a fresh posterior per module, e.g.
            ``borch.posterior.Normal`` (default:
            :func:`borch.nn.defaults.default_posterior`).

    Example:
        >>> import torch
        >>> import borch
        >>> torch.manual_seed(0)
        <torch._C.Generator object at ...>
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
        >>> bayesian = borchify_network(net)
        >>> [name for name, _ in borch.named_random_variables(bayesian)]
        ['0.posterior.weight', '0.posterior.bias', '2.posterior.weight', '2.posterior.bias']
        >>> x = torch.randn(5, 4)
        >>> bool(torch.allclose(bayesian(x), net(x), atol=0.1))
        True
    """
    if not isinstance(net, nn.Module):
        raise TypeError(f"net must be a torch.nn.Module, got {type(net).__name__}")
    if rv_factory is not None:
        check_rv_factory(rv_factory)
    creator = check_posterior_creator(posterior_creator)
    copied = copy.deepcopy(net)
    if not isinstance(copied, Module) and has_own_parameters(copied):
        copied = adopt(copied, rv_factory, creator())
    borchify_children(copied, rv_factory, creator)
    return copied


def borchify_namespace(python_module: types.ModuleType | object) -> types.ModuleType:
    """A namespace with the Bayesian twin of every ``nn.Module`` class found in
    ``python_module`` (a module, or any object with attributes), by the same names.

    Twins are constructed with the original's arguments plus ``posterior=``,
    ``rv_factory=`` and priors by parameter name, like the classes of
    :mod:`borch.nn`.

    Example:
        >>> import torch
        >>> import borch
        >>> import types
        >>> models = types.ModuleType("models")
        >>> class Affine(torch.nn.Module):
        ...     def __init__(self, size):
        ...         super().__init__()
        ...         self.scale = torch.nn.Parameter(torch.ones(size))
        ...     def forward(self, x):
        ...         return x * self.scale
        >>> models.Affine = Affine
        >>> bayesian = borchify_namespace(models)
        >>> layer = bayesian.Affine(3)
        >>> isinstance(layer, borch.Module), layer(torch.ones(3)).shape
        (True, torch.Size([3]))
    """
    name = getattr(python_module, "__name__", type(python_module).__name__)
    namespace = types.ModuleType(
        f"borchified_{name}", f"Bayesian twins of the module classes of {name}."
    )
    for attribute in dir(python_module):
        value = getattr(python_module, attribute, None)
        if inspect.isclass(value) and issubclass(value, nn.Module):
            setattr(namespace, attribute, borch_class(value))
    return namespace


__all__ = ["borchify_module", "borchify_namespace", "borchify_network"]
