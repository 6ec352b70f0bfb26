"""From a borch model to a potential: the negative log joint in unconstrained space.

A model whose latent variables have :class:`borch.posterior.PointMass` approximations
is a function of their unconstrained values. Its *potential* is the negative log joint
density (priors of the latent variables at their values plus the likelihood of the
observed ones) minus the log-determinant of the Jacobian of each point mass's map from
unconstrained space onto the prior's support, so that the potential is the negative
log density of the unconstrained values.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from borch.distributions.batch import fill_masked
from borch.distributions.point_mass import PointMass as PointMassDistribution
from borch.handlers import weighted
from borch.infer.hmc.potential import numpy_dtype, to_numpy
from borch.module import borch_modules
from borch.posterior import PointMass
from borch.random_variable import RandomVariable
from borch.sites import Site, sites
from borch.traversal import sample, set_posteriors


def neg_log_joint(model: nn.Module) -> Tensor:
    """The potential of what ``model`` used since the last :func:`borch.sample`.

    ``-sum(log p(value))`` over every used variable (latent and observed) minus the
    log-det-Jacobian of each latent variable's :class:`~borch.posterior.PointMass`.
    """
    total = None
    for site in sites(model):
        term = -site_log_density(site)
        total = term if total is None else total + term
    if total is None:
        raise ValueError(
            f"the model ({type(model).__name__}) used no random variables: assign them "
            "in the closure (or forward) that runs it"
        )
    return total


def site_log_density(site: Site) -> Tensor:
    """A site's summed log density at its value, with its scale and mask; a latent
    site's includes the log-det-Jacobian of its point mass (the density of the
    unconstrained value)."""
    log_density = prior_log_density(site)
    if not site.observed:
        log_density = log_density + point_mass_of(site).log_abs_det_jacobian().sum()
    return log_density


def prior_log_density(site: Site) -> Tensor:
    """A site's summed prior (or likelihood) log density at its value, with its
    scale and mask; masked observations count as missing."""
    distribution, value = site.prior.distribution, site.value
    if site.mask is not None and site.observed:
        value = fill_masked(distribution, value, site.mask)  # missing data: NaN
    return weighted(
        distribution.log_prob(value), site.scale, site.mask, site.name
    ).sum()


def _pointwise(site: Site) -> Tensor:
    distribution, value = site.prior.distribution, site.value
    if site.mask is None:
        return distribution.log_prob(value).detach()
    log_prob = distribution.log_prob(fill_masked(distribution, value, site.mask))
    return torch.where(site.mask, log_prob, torch.zeros_like(log_prob)).detach()


def point_mass_of(site: Site) -> PointMassDistribution:
    """The point mass distribution of a latent site; an error naming the variable if
    its approximation is of another family."""
    distribution = site.approximation.distribution
    if not isinstance(distribution, PointMassDistribution):
        raise TypeError(
            f"latent random variable '{site.name}' is approximated by "
            f"{type(site.approximation).__name__}, not a PointMass: MCMC moves point "
            "values. Give the model posterior=borch.posterior.PointMass(), or call "
            "model.apply(borch.set_posteriors(borch.posterior.PointMass))"
        )
    return distribution


def model_to_neg_log_prob_closure(
    closure: Callable[[], Any], model: nn.Module
) -> Callable[[], Tensor]:
    """A closure returning the potential (negative log density) of a model.

    Args:
        closure: runs the model (e.g. ``lambda: model(x)``).
        model: a :class:`borch.Module` whose latent variables have
            :class:`borch.posterior.PointMass` approximations.

    Returns:
        A callable that starts a new draw (:func:`borch.sample`), runs ``closure`` and
        returns the negative log joint density of the latent values and the
        observations, minus the log-det-Jacobian of each point mass's unconstrained
        parameterisation: the potential of the unconstrained parameters
        (``model.parameters()``), ready for :func:`hmc_step` and :func:`nuts_step`.

    Example:
        >>> import torch
        >>> import borch
        >>> from borch import distributions as dist
        >>> class Model(borch.Module):
        ...     def forward(self):
        ...         self.weight = dist.Normal(0.0, 1.0)
        >>> model = Model(posterior=borch.posterior.PointMass())
        >>> model.observe(weight=torch.tensor(1.0))
        >>> neg_log_prob = model_to_neg_log_prob_closure(model, model)
        >>> neg_log_prob()
        tensor(1.4189)
    """
    if not callable(closure):
        raise TypeError(f"closure must be callable, got {type(closure).__name__}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")

    def neg_log_prob() -> Tensor:
        sample(model)
        closure()
        return neg_log_joint(model)

    return neg_log_prob


class SamplerPointMass(PointMass):
    """:class:`~borch.posterior.PointMass` that refuses discrete priors with advice
    for MCMC users (NUTS moves continuous variables only)."""

    def __init__(self) -> None:
        super().__init__(loc_at_prior_mean=True)

    def register_random_variable(
        self, name: str, prior: RandomVariable
    ) -> RandomVariable:
        support = prior.distribution.support
        if support.is_discrete:
            raise ValueError(
                f"mcmc cannot sample latent random variable '{name}' ({prior!r}): its "
                f"support {support} is discrete and NUTS moves continuous variables "
                "only. Marginalise it out of the model (sum its probabilities into the "
                "likelihood), observe it, or fit the model with variational inference "
                "(borch.infer.vi_loss with posterior.Automatic())."
            )
        return super().register_random_variable(name, prior)


def sampling_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` whose borch modules have :class:`SamplerPointMass`
    posteriors (the user's model is left as it is)."""
    if not isinstance(model, nn.Module) or not any(True for _ in borch_modules(model)):
        raise TypeError(
            f"model must be a borch.Module (or contain one), got {type(model).__name__}"
        )
    model = copy.deepcopy(model)
    model.apply(set_posteriors(SamplerPointMass))
    return model


class Latent(NamedTuple):
    """One latent variable of a model: where it sits in the flat position."""

    name: str
    approximation: RandomVariable
    shape: torch.Size  # of its unconstrained value
    offset: int
    size: int


class ModelPotential:
    """The potential of a model in the unconstrained space of its latent variables.

    Args:
        model: a model prepared by :func:`sampling_copy`; it is run once here.
        args, kwargs: what ``model(*args, **kwargs)`` is called with.

    The position is one flat vector: the unconstrained values of the latent variables
    in the order the model used them, each flattened. Calling the potential (on a
    numpy vector, see :mod:`borch.infer.hmc.potential`) sets the point masses to views of
    the position, runs the model and differentiates the :func:`neg_log_joint` with
    autograd; :meth:`evaluate` does the same on a tensor.
    """

    def __init__(
        self, model: nn.Module, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> None:
        self.model, self.args, self.kwargs = model, tuple(args), dict(kwargs)
        sample(model)
        model(*self.args, **self.kwargs)
        latents, offset = [], 0
        for site in sites(model):
            if site.observed:
                continue
            approximation, name = site.approximation, site.name
            if not point_mass_of(site).transform.bijective:
                raise ValueError(
                    f"mcmc cannot sample latent random variable '{name}': torch has no "
                    f"bijection onto its support {approximation.support} (biject_to), "
                    "so its density in unconstrained space is undefined"
                )
            shape = approximation.unconstrained_value.shape
            size = shape.numel()
            latents.append(Latent(name, approximation, shape, offset, size))
            offset += size
        if not latents:
            raise ValueError(
                f"the model ({type(model).__name__}) has no latent random variables: "
                "every variable it used is observed, so there is nothing to sample"
            )
        self.latents = latents
        self.dim = offset
        first = latents[0].approximation.unconstrained_value
        self.dtype = first.dtype
        self.numpy_dtype = numpy_dtype(first.dtype)
        self.device = first.device
        self._ids = [id(latent.approximation) for latent in latents]
        self._sizes = [latent.size for latent in latents]

    def position(self) -> np.ndarray:
        """The current unconstrained values as one flat vector (a copy)."""
        return np.concatenate(
            [
                to_numpy(latent.approximation.unconstrained_value).reshape(-1)
                for latent in self.latents
            ]
        ).astype(self.numpy_dtype)

    def tensor(self, position: np.ndarray) -> Tensor:
        """``position`` as a tensor of the model's dtype on its device."""
        return torch.from_numpy(np.ascontiguousarray(position)).to(
            device=self.device, dtype=self.dtype
        )

    def set_position(self, position: Tensor) -> None:
        """Make the latent variables views of ``position``."""
        for latent, value in zip(self.latents, position.split(self._sizes)):
            latent.approximation.unconstrained_value = value.view(latent.shape)

    def evaluate(self, position: Tensor) -> Tensor:
        """The potential at ``position`` as a tensor (differentiable in ``position``)."""
        self.set_position(position)
        sample(self.model)
        self.model(*self.args, **self.kwargs)
        used = [
            id(site.approximation) for site in sites(self.model) if not site.observed
        ]
        if used != self._ids:
            raise RuntimeError(
                "the model used other latent variables than on its first run; MCMC "
                "needs the same continuous latent variables on every run of the model"
            )
        return neg_log_joint(self.model)

    def __call__(self, position: np.ndarray) -> tuple[float, np.ndarray]:
        with torch.enable_grad():
            tensor = self.tensor(position).requires_grad_(True)
            energy = self.evaluate(tensor)
            value = energy.item()
            if not math.isfinite(value):
                return math.inf, np.full_like(position, np.nan)
            (grad,) = torch.autograd.grad(energy, tensor)
        return value, to_numpy(grad)

    def log_density_terms(self, position: np.ndarray) -> list[tuple[str, float]]:
        """``(name, log density)`` of every variable the model uses, at ``position``
        (latent terms include their log-det-Jacobian); for error messages."""
        with torch.no_grad():
            self.set_position(self.tensor(position))
            sample(self.model)
            self.model(*self.args, **self.kwargs)
            return [
                (site.name, site_log_density(site).item()) for site in sites(self.model)
            ]

    def latent_sites(self, position: np.ndarray) -> list[Site]:
        """The latent sites of a run of the model at ``position``, in the order of
        :attr:`latents` (their priors are conditioned on the values before them)."""
        with torch.no_grad():
            self.set_position(self.tensor(position))
            sample(self.model)
            self.model(*self.args, **self.kwargs)
            return [site for site in sites(self.model) if not site.observed]

    def pointwise_log_likelihood(self, positions: np.ndarray) -> dict[str, Tensor]:
        """The log likelihood of every observed site, element by element, at each of
        ``positions (n, dim)``: ``{name: (n, *batch_shape)}`` (missing values of a
        masked site are 0)."""
        draws: dict[str, list[Tensor]] = {}
        with torch.no_grad():
            for position in positions:
                self.set_position(self.tensor(position))
                sample(self.model)
                self.model(*self.args, **self.kwargs)
                for site in sites(self.model):
                    if site.observed:
                        draws.setdefault(site.name, []).append(_pointwise(site))
        return {name: torch.stack(values) for name, values in draws.items()}

    def observed_data(self) -> dict[str, Tensor]:
        """The value of every observed site, by name."""
        with torch.no_grad():
            sample(self.model)
            self.model(*self.args, **self.kwargs)
            return {
                site.name: site.value.detach()
                for site in sites(self.model)
                if site.observed
            }

    def constrained(self, positions: Tensor) -> dict[str, Tensor]:
        """Map positions ``(..., dim)`` to the latent values ``{name: (..., *shape)}``
        the model sees (each point mass's transform onto its support)."""
        batch = positions.shape[:-1]
        values = {}
        with torch.no_grad():
            for latent in self.latents:
                flat = positions[..., latent.offset : latent.offset + latent.size]
                unconstrained = flat.reshape(*batch, *latent.shape)
                transform = latent.approximation.distribution.transform
                values[latent.name] = transform(unconstrained.to(self.dtype))
        return values


__all__ = [
    "Latent",
    "ModelPotential",
    "SamplerPointMass",
    "model_to_neg_log_prob_closure",
    "neg_log_joint",
    "point_mass_of",
    "sampling_copy",
    "site_log_density",
]
