"""Functions over a model's tree: draw anew, collect what inference needs, list
random variables, swap posterior families."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from torch import nn

from borch.handlers import is_weighted
from borch.module import Module, borch_modules
from borch.posterior import Posterior
from borch.random_variable import RandomVariable
from borch.sites import sites


def sample(module: nn.Module, posterior: bool = True, prior: bool = False) -> None:
    """Start a new draw: forget which variables were used and redraw on next use.

    Approximating variables (``posterior=True``) and priors (``prior=True``) get new
    values the next time they are read. Call it once per training step, before the
    forward pass.

    Example:
        >>> import torch
        >>> import borch
        >>> from borch import distributions as dist
        >>> model = borch.Module()
        >>> model.x = dist.Normal(0.0, 1.0)
        >>> before = model.x
        >>> borch.sample(model)
        >>> bool(model.x == before)
        False
    """
    for borch_module in borch_modules(module):
        borch_module.start_run(posterior=posterior, prior=prior)


def pq_dict(module: nn.Module) -> list[dict[str, Any]]:
    """One entry per variable used since the last :func:`sample` (an adapter of
    :func:`borch.sites` in the original borch's layout).

    Each entry has the ``prior`` and ``posterior`` random variables (``posterior`` is
    ``None`` for observed variables), whether it is ``observed``, and its ``value``.

    Example:
        >>> import borch
        >>> from borch import distributions as dist
        >>> model = borch.Module()
        >>> model.x = dist.Normal(0.0, 1.0)
        >>> list(pq_dict(model)[0])
        ['prior', 'posterior', 'observed', 'value']
    """
    return [
        {
            "prior": site.prior,
            "posterior": site.approximation,
            "observed": site.observed,
            "value": site.value,
        }
        for site in sites(module)
    ]


def pq_to_infer(module: nn.Module) -> dict[str, list]:
    """The arguments of the losses in :mod:`borch.infer`, for what ``module`` used
    (an adapter of :func:`borch.sites`).

    Returns ``dict(p_dists=..., q_dists=..., values=..., observed=...)``: the prior
    and approximating ``torch.distributions`` objects (``None`` as the approximation
    of an observed variable), the values (observed or drawn) and the observed flags.
    When a handler (:func:`borch.scale`, :func:`borch.mask`) marked any variable, it
    also has ``scales`` and ``masks``, one per variable, which every loss accepts.

    Example:
        >>> import torch
        >>> import borch
        >>> from borch import distributions as dist
        >>> model = borch.Module()
        >>> model.observe(y=torch.tensor(1.0))
        >>> model.mu = dist.Normal(0.0, 1.0)
        >>> model.y = dist.Normal(model.mu, 1.0)
        >>> infer = pq_to_infer(model)
        >>> infer["observed"]
        [False, True]
        >>> loss = borch.infer.vi_loss(**infer)
    """
    found = sites(module)
    p_dists, q_dists, values, observed = [], [], [], []
    weighted = False
    for site in found:
        p_dists.append(site.prior.distribution)
        approximation = site.approximation
        q_dists.append(None if approximation is None else approximation.distribution)
        values.append(site.value)
        observed.append(site.observed)
        if not weighted and is_weighted(site.scale, site.mask):
            weighted = True
    inputs = {
        "p_dists": p_dists,
        "q_dists": q_dists,
        "values": values,
        "observed": observed,
    }
    if weighted:
        inputs["scales"] = [site.scale for site in found]
        inputs["masks"] = [site.mask for site in found]
    return inputs


def named_random_variables(
    module: nn.Module, posterior: bool = True, prior: bool = False
) -> Iterator[tuple[str, RandomVariable]]:
    """``(qualified name, random variable)`` for the variables of every borch module.

    Example:
        >>> import borch
        >>> from borch import distributions as dist
        >>> model = borch.Module()
        >>> model.x = dist.Normal(0.0, 1.0)
        >>> [name for name, _ in named_random_variables(model, prior=True)]
        ['posterior.x', 'prior.x']
    """
    for path, child in module.named_modules(remove_duplicate=True):
        if not isinstance(child, Module):
            continue
        prefix = f"{path}." if path else ""
        for container_name, wanted in (("posterior", posterior), ("prior", prior)):
            if not wanted:
                continue
            for name, rv in getattr(child, container_name).named_children():
                if isinstance(rv, RandomVariable):
                    yield f"{prefix}{container_name}.{name}", rv


def random_variables(
    module: nn.Module, posterior: bool = True, prior: bool = False
) -> Iterator[RandomVariable]:
    """The random variables of :func:`named_random_variables`, without names."""
    for _, rv in named_random_variables(module, posterior=posterior, prior=prior):
        yield rv


def set_posteriors(
    posterior_creator: Callable[[], Posterior],
) -> Callable[[nn.Module], None]:
    """A function for ``module.apply`` that gives every borch module a new posterior.

    Priors already assigned get approximations from the new family at once, so the
    model keeps working; the previous approximations (and what they learned) are
    dropped.

    Example:
        >>> import borch
        >>> from borch import distributions as dist, posterior
        >>> model = borch.Module(posterior=posterior.Normal())
        >>> model.x = dist.Gamma(2.0, 2.0)
        >>> _ = model.apply(set_posteriors(posterior.Automatic))
        >>> type(model.posterior).__name__, type(model.posterior.x).__name__
        ('Automatic', 'Gamma')
    """

    def set_posterior(module: nn.Module) -> None:
        if not isinstance(module, Module):
            return
        new_posterior = posterior_creator()
        observed = dict(module.observed.named_buffers())
        for name, prior in module.prior.named_children():
            if name not in observed:
                new_posterior.set_random_variable(name, prior)
        module.posterior = new_posterior

    return set_posterior


__all__ = [
    "named_random_variables",
    "pq_dict",
    "pq_to_infer",
    "random_variables",
    "sample",
    "set_posteriors",
]
