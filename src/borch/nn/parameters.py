"""Turning a module's own ``nn.Parameter``s into prior random variables."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn
from torch.nn.parameter import UninitializedParameter

from borch.module import Module
from borch.random_variable import RandomVariable

#: ``prior_for(module, name, parameter) -> prior or None`` (``None``: keep it)
PriorFor = Callable[[nn.Module, str, Tensor], RandomVariable | None]


def own_parameter_names(module: nn.Module) -> list[str]:
    """Names of the module's own parameters that exist (not ``None``) and have been
    materialised (lazy modules create theirs on the first forward pass)."""
    return [
        name
        for name, parameter in _own_parameters(module)
        if not isinstance(parameter, UninitializedParameter)
    ]


def _own_parameters(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """``(name, parameter)`` of the module's own parameters that are not ``None``,
    every name (a parameter held under two names appears twice)."""
    return list(module.named_parameters(recurse=False, remove_duplicate=False))


def check_overrides(module: nn.Module, overrides: Mapping[str, object]) -> None:
    """A ``ValueError`` naming any override for a parameter the module lacks."""
    known = [name for name, _ in _own_parameters(module)]
    if isinstance(module, Module):
        known += [name for name, _ in module.prior.named_children()]
    unknown = [name for name in overrides if name not in known]
    if unknown:
        listed = ", ".join(known) if known else "none"
        raise ValueError(
            f"{type(module).__name__} has no parameter {unknown[0]!r} to give a prior "
            f"(its parameters: {listed}); priors are given by parameter name, e.g. "
            "weight=dist.Normal(0.0, 0.1)"
        )


def convert_parameters(
    module: Module,
    prior_for: PriorFor,
    overrides: Mapping[str, RandomVariable],
) -> None:
    """Replace the module's own parameters by priors, so its posterior creates their
    approximations; ``overrides`` give the prior of some parameters by name."""
    parameters = dict(_own_parameters(module))
    for name in own_parameter_names(module):
        parameter = parameters[name]
        if name in overrides:
            prior = fit_override(module, name, overrides[name], parameter)
        else:
            prior = prior_for(module, name, parameter)
            if prior is None:
                continue
            if not isinstance(prior, RandomVariable):
                raise TypeError(
                    f"the prior of {type(module).__name__}.{name} must be a borch "
                    f"RandomVariable (or None to keep the parameter), got "
                    f"{type(prior).__name__}"
                )
        # nn.Module's __delattr__ and Module.__setattr__ directly: some torch
        # classes (RNNs) mirror parameters assigned through their own __setattr__
        # into caches.
        nn.Module.__delattr__(module, name)
        Module.__setattr__(module, name, prior)
        _match_parameter(module, name, parameter)


def fit_override(
    module: nn.Module, name: str, prior: RandomVariable, parameter: Tensor
) -> RandomVariable:
    """Check a prior given by keyword fits the parameter; start it at the
    parameter's value when that lies in its support."""
    shape = tuple(prior.distribution.batch_shape + prior.distribution.event_shape)
    try:
        broadcast = torch.broadcast_shapes(shape, parameter.shape)
    except RuntimeError:
        broadcast = None
    if broadcast != parameter.shape:
        raise ValueError(
            f"the prior given for {type(module).__name__}.{name} has shape {shape}, "
            f"which does not broadcast to the parameter's shape "
            f"{tuple(parameter.shape)}"
        )
    value = parameter.detach().clone()
    if bool(prior.distribution.support.check(value).all()):
        prior.tensor = value
    return prior


def _match_parameter(module: Module, name: str, parameter: Tensor) -> None:
    """Give the approximation the parameter's floating dtype and device (priors with
    number arguments build tensors of torch's defaults)."""
    approximation = module.posterior.approximation(name)
    if approximation is None:
        return
    for tensor in approximation.parameters():
        if tensor.device != parameter.device or (
            parameter.is_floating_point() and tensor.dtype != parameter.dtype
        ):
            dtype = parameter.dtype if parameter.is_floating_point() else None
            approximation.to(device=parameter.device, dtype=dtype)
            return


__all__ = [
    "PriorFor",
    "check_overrides",
    "convert_parameters",
    "fit_override",
    "own_parameter_names",
]
