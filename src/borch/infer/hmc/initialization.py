"""Initial points of Markov chains: the ``init=`` of :func:`borch.infer.mcmc`.

A chain starts from a point of the unconstrained space with a finite log density and
gradient, chosen by a strategy: ``"uniform"`` (the default: uniform in (-2, 2) in
unconstrained space, as Stan does), ``"prior"`` (a draw from the prior, each variable
given the ones the model drew before it), ``"median"`` (the median of 15 such draws),
or a dict of values in the variables' own (constrained) space by name; variables the
dict does not name start by the default.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from borch.infer.hmc.hamiltonian import IntegratorState
from borch.infer.hmc.model_conversion import ModelPotential, point_mass_of

#: Initial points tried per chain before giving up on a non-finite log density.
INITIAL_POINT_TRIES = 100
#: ``"uniform"`` draws initial points in (-RADIUS, RADIUS) in unconstrained space.
INITIAL_RADIUS = 2.0
#: Prior draws whose median is the ``"median"`` initial point.
MEDIAN_DRAWS = 15
#: The strategies ``init`` takes by name.
STRATEGIES = ("uniform", "prior", "median")


def check_init(init: Any, potential: ModelPotential) -> str | dict[str, Any]:
    """``init`` as a strategy name or a dict of values, checked against the model's
    latent variables."""
    if init is None:
        return "uniform"
    if isinstance(init, str):
        if init not in STRATEGIES:
            raise ValueError(
                f"init must be one of {STRATEGIES} or a dict of values by name, got "
                f"{init!r}"
            )
        return init
    if not isinstance(init, Mapping):
        raise TypeError(
            f"init must be one of {STRATEGIES} or a dict of values by name, got "
            f"{type(init).__name__}"
        )
    names = [latent.name for latent in potential.latents]
    unknown = sorted(set(init) - set(names))
    if unknown:
        raise ValueError(
            f"init names {unknown}, which are not latent variables of the model; "
            f"they are {names}"
        )
    return dict(init)


def initial_point(
    potential: ModelPotential, init: str | dict[str, Any], seed: int
) -> IntegratorState:
    """A chain's initial point by the strategy ``init`` (see :func:`check_init`),
    drawn with ``seed``; an error naming the culprits if its log density or gradient
    is not finite."""
    rng = np.random.default_rng(seed)
    random = init in ("uniform", "prior") or isinstance(init, dict)
    for _ in range(INITIAL_POINT_TRIES if random else 1):
        if init == "prior":
            position = _prior_draw(potential, rng)
        elif init == "median":
            draws = [_prior_draw(potential, rng) for _ in range(MEDIAN_DRAWS)]
            position = np.median(np.stack(draws), axis=0).astype(potential.numpy_dtype)
        else:
            position = _uniform(potential, rng)
            if isinstance(init, dict):
                position = _with_values(potential, position, init)
        energy, grad = potential(position)
        if math.isfinite(energy) and np.isfinite(grad).all():
            return IntegratorState(position, np.zeros_like(position), energy, grad)
    raise ValueError(
        f"the model's log density is not finite at the initial point{_described(init)}"
        f": {_explain(potential, position, grad)}"
    )


def _described(init: str | dict[str, Any]) -> str:
    if init == "uniform":
        return (
            f" (tried {INITIAL_POINT_TRIES} drawn uniformly in (-{INITIAL_RADIUS:g}, "
            f"{INITIAL_RADIUS:g}) in unconstrained space)"
        )
    if init == "prior":
        return f" (tried {INITIAL_POINT_TRIES} prior draws)"
    if init == "median":
        return f" (the median of {MEDIAN_DRAWS} prior draws)"
    return f" given by init for {sorted(init)}"


def _uniform(potential: ModelPotential, rng: np.random.Generator) -> np.ndarray:
    uniform = rng.uniform(-INITIAL_RADIUS, INITIAL_RADIUS, potential.dim)
    return uniform.astype(potential.numpy_dtype)


def _prior_draw(potential: ModelPotential, rng: np.random.Generator) -> np.ndarray:
    """An unconstrained point drawn from the prior, variable by variable in the order
    the model uses them (each prior conditioned on the draws before it)."""
    position = np.zeros(potential.dim, dtype=potential.numpy_dtype)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(rng.integers(2**62)))
        for index, latent in enumerate(potential.latents):
            site = potential.latent_sites(position)[index]
            with torch.no_grad():
                value = site.prior.distribution.sample()
                unconstrained = point_mass_of(site).transform.inv(value)
            flat = unconstrained.reshape(-1).cpu().numpy()
            position[latent.offset : latent.offset + latent.size] = flat
    return position


def _with_values(
    potential: ModelPotential, position: np.ndarray, values: dict[str, Any]
) -> np.ndarray:
    """``position`` with the latent variables ``values`` names set to those values."""
    position = position.copy()
    for latent in potential.latents:
        if latent.name not in values:
            continue
        transform = latent.approximation.distribution.transform
        value = torch.as_tensor(values[latent.name], dtype=potential.dtype)
        expected = transform(torch.zeros(latent.shape, dtype=potential.dtype)).shape
        if value.shape != expected:
            raise ValueError(
                f"init['{latent.name}'] has shape {tuple(value.shape)}, but the "
                f"variable has shape {tuple(expected)}"
            )
        with torch.no_grad():
            unconstrained = transform.inv(value.to(potential.device))
        flat = unconstrained.reshape(-1).cpu().numpy()
        if not np.isfinite(flat).all():
            raise ValueError(
                f"init['{latent.name}'] = {values[latent.name]!r} is outside the "
                f"support of the variable ({latent.approximation.support})"
            )
        position[latent.offset : latent.offset + latent.size] = flat
    return position


def _explain(potential: ModelPotential, position: np.ndarray, grad: np.ndarray) -> str:
    bad = [
        f"'{name}' ({value})"
        for name, value in potential.log_density_terms(position)
        if not math.isfinite(value)
    ]
    if bad:
        return (
            "at the last one, the log density of "
            + ", ".join(bad)
            + " is not finite. Check the priors' and likelihood's arguments and the "
            "observed values against their supports"
        )
    bad = [
        f"'{latent.name}'"
        for latent in potential.latents
        if not np.isfinite(grad[latent.offset : latent.offset + latent.size]).all()
    ]
    return (
        "at the last one, the gradient with respect to "
        + ", ".join(bad or ["some variables"])
        + " is not finite"
    )


__all__ = [
    "INITIAL_POINT_TRIES",
    "INITIAL_RADIUS",
    "MEDIAN_DRAWS",
    "STRATEGIES",
    "check_init",
    "initial_point",
]
