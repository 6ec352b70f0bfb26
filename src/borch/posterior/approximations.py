"""Building blocks of the posterior families: learnable arguments in unconstrained
space, where to start them, and the Normal approximation of a constrained prior.

Every learnable quantity is a parameter in unconstrained space mapped onto its
constraint by ``torch.distributions.transform_to`` (the registry is the single source
of truth, so a constraint a user registers works here too).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, constraints
from torch.distributions import transforms as torch_transforms
from torch.distributions.constraint_registry import transform_to

from borch import distributions as dist
from borch.distributions import point_mass
from borch.distributions.transforms import simplified
from borch.distributions.transforms import (
    unconstraining_transform as registered_transform,
)
from borch.graph import Transform
from borch.random_variable import RandomVariable
from borch.tensor_like import TensorLike

#: Families that can approximate any prior, discrete ones included.
ANY_PRIOR_FAMILIES = "posterior.Automatic(), posterior.AsPrior() or posterior.Manual()"


def unconstraining_transform(
    name: str,
    support: constraints.Constraint,
    family: str,
    bijective: bool = True,
) -> torch_transforms.Transform:
    """The transform from unconstrained space onto ``support``.

    ``biject_to(support)`` when a density must be carried through it (``bijective``),
    else ``transform_to(support)`` if no bijection is registered; an error naming the
    variable and the families that would work if neither exists or the support is
    discrete.
    """
    if support.is_discrete:
        raise ValueError(
            f"posterior.{family} cannot approximate random variable '{name}': its "
            f"prior has discrete support {support}. Use {ANY_PRIOR_FAMILIES} (they "
            "learn discrete variables with score-function gradients), or pair it with "
            "an approximation of your own through borch.RVPair."
        )
    support = canonical_support(support)
    try:
        return registered_transform(support, bijective)
    except NotImplementedError:
        pass
    kind = "bijective transform" if bijective else "transform"
    raise ValueError(
        f"posterior.{family} cannot approximate random variable '{name}': no {kind} "
        f"onto its support {support} is registered with torch.distributions "
        f"(biject_to / transform_to). Register one, or use {ANY_PRIOR_FAMILIES}."
    )


def canonical_support(support: constraints.Constraint) -> constraints.Constraint:
    """Rewrite supports torch's registries miss into equivalent ones they know.

    Intervals with an infinite end are half-lines (``GeneralizedPareto``); a mixture's
    support is that of its components.
    """
    base = getattr(support, "base_constraint", None)
    if type(support).__name__ == "MixtureSameFamilyConstraint" and base is not None:
        return canonical_support(base)
    if isinstance(support, (constraints._Interval, constraints._HalfOpenInterval)):
        lower, upper = support.lower_bound, support.upper_bound
        lower_open = bool(torch.all(torch.as_tensor(lower) == -math.inf))
        upper_open = bool(torch.all(torch.as_tensor(upper) == math.inf))
        if lower_open and upper_open:
            return constraints.real
        if upper_open:
            return constraints.greater_than_eq(lower)
        if lower_open:
            return constraints.less_than(upper)
    return support


def is_identity(transform: torch_transforms.Transform) -> bool:
    """Whether ``transform`` maps every value to itself."""
    if isinstance(transform, torch_transforms.IndependentTransform):
        return is_identity(transform.base_transform)
    return (
        isinstance(transform, torch_transforms.ComposeTransform) and not transform.parts
    )


def to_unconstrained(transform, value: Tensor) -> Tensor:
    """``transform.inv(value)`` with values on the boundary pulled inside."""
    unconstrained = transform.inv(value.detach())
    if not bool(torch.isfinite(unconstrained).all()):
        unconstrained = torch.nan_to_num(
            unconstrained, nan=0.0, posinf=_EDGE, neginf=-_EDGE
        )
    return unconstrained


_EDGE = 12.0  # |unconstrained value| used for a prior value sitting on the boundary


def learnable(
    value: Tensor, constraint: constraints.Constraint
) -> nn.Parameter | Transform:
    """A learnable argument that starts at ``value`` and always satisfies ``constraint``."""
    value = value.detach()
    if not value.is_floating_point():
        value = value.to(torch.get_default_dtype())
    transform = simplified(transform_to(constraint))
    if is_identity(transform):
        return nn.Parameter(value.clone())
    unconstrained = nn.Parameter(to_unconstrained(transform, value).clone())
    # The most common transforms as plain torch functions: same values, less
    # Python per evaluation than calling the transform object.
    function = _PLAIN_FUNCTIONS.get(type(transform), transform)
    return Transform(function, unconstrained, arg_names=["unconstrained"])


_PLAIN_FUNCTIONS = {
    torch_transforms.ExpTransform: torch.exp,
    torch_transforms.SigmoidTransform: torch.sigmoid,
}


def is_linked(value: Any) -> bool:
    """Whether an argument depends on other random variables (kept, not learned)."""
    if isinstance(value, TensorLike):
        return True
    return isinstance(value, Tensor) and value.grad_fn is not None


class Links(NamedTuple):
    """The arguments of an approximation that stay linked to the prior's: ``names``
    of ``approximation`` and, by argument name, those of approximations of inner
    distributions (:func:`linked_approximation` makes it, :func:`relink` reads it)."""

    approximation: RandomVariable
    names: tuple[str, ...]
    inner: dict[str, Links]


def approximation_like(
    name: str, prior: RandomVariable, keep_links: bool
) -> RandomVariable:
    """A random variable of the prior's family whose arguments are learnable.

    Arguments with a continuous constraint become parameters in unconstrained space,
    initialised at the prior's (broadcast) values. With ``keep_links``, arguments that
    depend on other random variables are kept as they are (:func:`linked_approximation`
    also says which, for :func:`relink`). Discrete or unconstrained arguments (counts,
    dimensions, transforms) are copied.
    """
    return _approximation_like(name, prior, keep_links)[0]


def linked_approximation(
    name: str, prior: RandomVariable
) -> tuple[RandomVariable, Links]:
    """:func:`approximation_like` with links kept, and the :class:`Links` that
    :func:`relink` needs to point them at the prior's current arguments."""
    return _approximation_like(name, prior, keep_links=True)


def _approximation_like(
    name: str, prior: RandomVariable, keep_links: bool
) -> tuple[RandomVariable, Links]:
    prior_dist = prior.distribution
    arg_constraints = _instance_constraints(prior_dist)
    arguments: dict[str, Any] = {}
    linked = []
    inner: dict[str, Links] = {}
    for arg_name, value in prior.arguments.items():
        constraint = arg_constraints.get(arg_name)
        if isinstance(value, RandomVariable) and arg_name in prior.distribution_args:
            arguments[arg_name], inner[arg_name] = _approximation_like(
                name, value, keep_links
            )
        elif keep_links and is_linked(value):
            arguments[arg_name] = value
            linked.append(arg_name)
        elif constraint is None or constraint.is_discrete or _is_dependent(constraint):
            arguments[arg_name] = value
        else:
            if not torch.is_grad_enabled() and keep_links:
                warnings.warn(
                    f"'{name}' was first assigned under torch.no_grad(): arguments "
                    "computed from other random variables cannot be told apart from "
                    "constants there, so they become independent parameters",
                    stacklevel=4,
                )
            initial = getattr(prior_dist, arg_name, None)
            if not isinstance(initial, Tensor):
                initial = torch.as_tensor(_plain(value))
            arguments[arg_name] = learnable(initial, constraint)
    approximation = type(prior)(**arguments)
    return approximation, Links(approximation, tuple(linked), inner)


def relink(
    approximation: RandomVariable, prior: RandomVariable, links: Links | None
) -> None:
    """Point the linked arguments of ``approximation`` at the prior's current ones;
    ``links`` are those :func:`linked_approximation` gave with it (nothing is done
    for another approximation, or ``None``)."""
    if links is None or links.approximation is not approximation:
        return
    if links.names:
        prior_arguments = prior.arguments
        for arg_name in links.names:
            approximation.register_param_or_buffer(arg_name, prior_arguments[arg_name])
    if links.inner:
        arguments, prior_arguments = approximation.arguments, prior.arguments
        for arg_name, inner_links in links.inner.items():
            inner = arguments.get(arg_name)
            inner_prior = prior_arguments.get(arg_name)
            if isinstance(inner, RandomVariable) and isinstance(
                inner_prior, RandomVariable
            ):
                relink(inner, inner_prior, inner_links)


def _instance_constraints(
    distribution: Distribution,
) -> dict[str, constraints.Constraint]:
    try:
        return dict(distribution.arg_constraints)
    except NotImplementedError:
        return {}


def _is_dependent(constraint: constraints.Constraint) -> bool:
    return isinstance(constraint, constraints._Dependent)


def _plain(value: Any) -> Any:
    return value.tensor if isinstance(value, TensorLike) else value


# ---------------------------------------------------------------- Normal families
def prior_location(distribution: Distribution) -> Tensor:
    """Where a Normal approximation starts: the prior's mean, else its median, else a
    draw from it (for priors without a finite mean, such as the Cauchy)."""
    for candidate in (_mean, _median):
        location = candidate(distribution)
        if location is not None and bool(torch.isfinite(location).all()):
            return location.detach()
    return distribution.sample().detach()


def _mean(distribution: Distribution) -> Tensor | None:
    try:
        return distribution.mean
    except NotImplementedError:
        return None


def _median(distribution: Distribution) -> Tensor | None:
    if distribution.event_shape:
        return None
    try:
        half = torch.full(distribution.batch_shape, 0.5)
        return distribution.icdf(half.to(float_dtype(distribution)))
    except (NotImplementedError, ValueError, RuntimeError):
        return None


def float_dtype(distribution: Distribution) -> torch.dtype:
    """The floating dtype of a distribution's parameters (torch's default if none).

    Distributions built on others (``LogNormal``, ``Beta``, ``Independent``,
    mixtures) keep their tensors in the inner distribution, which is searched too.
    """
    dtype = _own_float_dtype(distribution, set())
    return torch.get_default_dtype() if dtype is None else dtype


def _own_float_dtype(distribution: Distribution, seen: set[int]) -> torch.dtype | None:
    seen.add(id(distribution))
    inner = []
    for value in vars(distribution).values():
        if isinstance(value, Tensor) and value.is_floating_point():
            return value.dtype
        if isinstance(value, Distribution) and id(value) not in seen:
            inner.append(value)
    for value in inner:
        dtype = _own_float_dtype(value, seen)
        if dtype is not None:
            return dtype
    return None


#: Heavy-tailed location-scale families: their spread is their ``scale`` argument.
_SCALE_IS_SPREAD = (torch.distributions.StudentT, torch.distributions.Cauchy)


def prior_spread(
    distribution: Distribution, transform: torch_transforms.Transform, location: Tensor
) -> Tensor:
    """The prior's spread in unconstrained space, used to size ``ScaledNormal``.

    Its standard deviation when finite (for StudentT and Cauchy, their ``scale``),
    carried to unconstrained space by the derivative of the transform at
    ``location`` while that linearisation is sound (result at most 1); a robust
    estimate from prior draws otherwise.
    """
    if isinstance(distribution, _SCALE_IS_SPREAD):
        spread = distribution.scale.expand(distribution.batch_shape)
    else:
        try:
            spread = distribution.stddev
        except NotImplementedError:
            spread = None
    result = None
    finite = spread is not None and bool(torch.isfinite(spread).all())
    if finite and is_identity(transform):
        result = spread.detach().expand(location.shape).clone()
    elif (
        finite and transform.domain.event_dim == 0 and transform.codomain.event_dim == 0
    ):
        unconstrained = transform.inv(location)
        log_derivative = transform.log_abs_det_jacobian(unconstrained, location)
        result = spread.detach() * torch.exp(-log_derivative.detach())
        # The linearisation holds only while the derivative barely changes within
        # one spread; past one unconstrained unit (a factor e for exp/sigmoid) it
        # can be absurd: LogNormal(0, 7.4) would get an unconstrained sd of 7e11
        # (its true log-scale sd is 7.4) and draws of inf and 0.
        if not bool((torch.isfinite(result) & (result <= 1.0)).all()):
            result = None
    if result is None:
        result = _sampled_spread(distribution, transform)
    # A degenerate prior (zero spread) still needs a valid, positive scale.
    return torch.where(result > 0, result, torch.ones_like(result))


def _sampled_spread(distribution, transform, draws: int = 2000) -> Tensor:
    # Interquartile range / 1.349 is the standard deviation for a Normal and stays
    # finite for heavy tails. A private RNG stream keeps the user's seed untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        samples = transform.inv(distribution.sample((draws,)))
    samples = torch.nan_to_num(samples, posinf=_EDGE, neginf=-_EDGE)
    quartiles = torch.quantile(
        samples.double(), torch.tensor([0.25, 0.75]).double(), dim=0
    )
    spread = ((quartiles[1] - quartiles[0]) / 1.349).to(samples.dtype)
    return torch.where(spread > 0, spread, torch.ones_like(spread))


def require_density(name: str, prior_dist: Distribution, family: str) -> None:
    """An error naming the variable if its prior puts all its mass at one value
    (``Delta``, ``PointMass``), which no continuous approximation can fit."""
    if isinstance(prior_dist, (point_mass.Delta, point_mass.PointMass)):
        raise ValueError(
            f"posterior.{family} cannot approximate random variable '{name}': its "
            f"prior is a {type(prior_dist).__name__}, all mass at one value, so any "
            "continuous approximation is infinitely far from it. Use "
            "posterior.Automatic() or posterior.PointMass()."
        )


def normal_approximation(
    name: str,
    prior_dist: Distribution,
    location: Tensor,
    unconstrained_scale: Tensor | float,
    family: str,
) -> RandomVariable:
    """A Normal in unconstrained space, pushed onto the prior's support.

    ``location`` is in the prior's (constrained) space; ``unconstrained_scale`` is the
    initial scale in unconstrained space. The scale is learned as ``exp(log_scale)``.
    """
    transform = unconstraining_transform(name, prior_dist.support, family)
    loc = to_unconstrained(transform, location.to(float_dtype(prior_dist)))
    scale = torch.as_tensor(unconstrained_scale, dtype=loc.dtype).expand(loc.shape)
    log_scale = nn.Parameter(torch.log(scale).clone())
    base = dist.Normal(
        nn.Parameter(loc.clone()),
        Transform(torch.exp, log_scale, arg_names=["log_scale"]),
    )
    event_dim = transform.domain.event_dim
    if event_dim:
        base = dist.Independent(base, event_dim)
    if is_identity(transform):
        return base
    return dist.TransformedDistribution(base, [transform])


__all__ = [
    "ANY_PRIOR_FAMILIES",
    "Links",
    "approximation_like",
    "canonical_support",
    "float_dtype",
    "is_identity",
    "is_linked",
    "learnable",
    "linked_approximation",
    "normal_approximation",
    "prior_location",
    "prior_spread",
    "relink",
    "require_density",
    "to_unconstrained",
    "unconstraining_transform",
]
