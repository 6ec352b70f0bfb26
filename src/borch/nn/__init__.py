"""Bayesian twins of every ``torch.nn`` module: ``import borch.nn as nn``.

Every ``torch.nn.Module`` subclass that ``torch.nn`` exports has a class of the same
name here, made from torch's own namespace when borch is imported (a new torch
release is covered without changes). Each is both a :class:`borch.Module` and its
torch class, constructed with torch's arguments plus:

* ``posterior=``: the posterior family (default
  :func:`borch.nn.defaults.default_posterior`: a Normal whose loc starts at torch's
  initial weights, with a small scale);
* ``rv_factory=``: how priors are made (default: ``Normal(0, 1)`` for every
  parameter; see :mod:`borch.rv_factories`);
* a prior per parameter by keyword: ``nn.Linear(3, 4, weight=dist.Laplace(0.0,
  0.1))`` (a bool ``bias=`` still goes to torch);
* ``estimator=`` for Linear and Conv layers (see :mod:`borch.nn.estimators`).

After torch's ``__init__`` each parameter becomes a prior random variable and the
posterior creates its approximation; reading ``layer.weight`` gives the current draw
(new after :func:`borch.sample`). Layers without parameters behave as torch's.
Normalisation layers keep deterministic affine parameters by default; recurrent
layers rebuild their fused weight list from the draws on every forward; containers
(``Sequential``, ``ModuleList``, ``ModuleDict``, ``ParameterList``,
``ParameterDict``, ``DataParallel``) are torch's containers. ``borch.nn.Module`` is
:class:`borch.Module`.

Existing networks are converted with :func:`borchify_network` (whole network, trained
weights kept as posterior locs), :func:`borchify_module` (one module) and
:func:`borchify_namespace` (every module class of a Python module).

Example:
    >>> import torch
    >>> import borch
    >>> from borch import nn, distributions as dist
    >>> torch.manual_seed(0)
    <torch._C.Generator object at ...>
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2, weight=dist.Laplace(0.0, 0.5)))
    >>> isinstance(net[0], torch.nn.Linear), isinstance(net[0], borch.Module)
    (True, True)
    >>> type(net[2].prior.weight).__name__
    'Laplace'
    >>> x = torch.randn(3, 4)
    >>> first = net(x)
    >>> bool(torch.equal(first, net(x)))  # draws are kept until the next borch.sample
    True
    >>> borch.sample(net)
    >>> bool(torch.equal(first, net(x)))
    False
"""

from __future__ import annotations

import inspect

import torch.nn as _torch_nn

from borch.module import Module
from borch.nn import defaults
from borch.nn.borchify import borchify_module, borchify_namespace, borchify_network
from borch.nn.estimators import ESTIMATORS, set_estimator
from borch.nn.layer import borch_class

#: torch.nn names that are not generated here, and why.
NOT_GENERATED = {"Module": "borch.nn.Module is borch.Module"}


def torch_module_classes() -> dict[str, type]:
    """Every ``torch.nn.Module`` subclass torch.nn exports, by name."""
    return {
        name: cls
        for name in dir(_torch_nn)
        if not name.startswith("_")
        and inspect.isclass(cls := getattr(_torch_nn, name))
        and issubclass(cls, _torch_nn.Module)
    }


def _generate() -> list[str]:
    names = []
    for name, cls in torch_module_classes().items():
        if name in NOT_GENERATED:
            continue
        globals()[name] = borch_class(cls, module=__name__)
        names.append(name)
    return sorted(names)


GENERATED = _generate()

__all__ = [
    *GENERATED,
    "ESTIMATORS",
    "NOT_GENERATED",
    "Module",
    "borch_class",
    "borchify_module",
    "borchify_namespace",
    "borchify_network",
    "defaults",
    "set_estimator",
    "torch_module_classes",
]


def __dir__() -> list[str]:
    return sorted(__all__)
