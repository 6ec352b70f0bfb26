"""The one estimator path of variational inference: per-site loss terms.

Every variational loss in borch (:func:`~borch.infer.vi_loss`, the multi-sample and
Rao-Blackwellised ELBOs, the sharded loss of :mod:`borch.distributed`) is a sum of
per-site terms chosen here, in :func:`site_terms`:

* an **observed** site contributes its log likelihood;
* a latent site whose approximation can be **reparameterised** contributes
  ``div_fn(p, q, value)``;
* any other latent site contributes the analytic ``KL(q || p)`` where torch has one,
  else the sampled ``log q - log p``, and its ``log q`` enters the score-function
  (REINFORCE) surrogate.

Terms are elementwise (one per element of the site's batch shape) until a
:class:`Reduction` sums them: over everything for one draw (:data:`PER_DRAW`), or
per particle for many draws in one pass (:class:`PerParticle`). A site's ``scale``
multiplies its terms and its ``mask`` keeps only some elements (the score term is
masked but not scaled: it is the log probability of the draw, and the cost it is
weighted with already carries the scale).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.distributions import Distribution

from borch.distributions.batch import fill_masked, select_batch
from borch.distributions.kl import as_distribution, kl_exists
from borch.fastpath import log_density
from borch.fastpath.memo import detached_vars
from borch.fastpath.shapes import broadcast_shapes
from borch.graph import apply_to_tensors
from borch.handlers import check_fits, is_weighted, site_label, weighted

__all__ = [
    "PER_DRAW",
    "DivergenceFn",
    "PerDraw",
    "PerParticle",
    "Reduction",
    "analytic_kl",
    "check_lengths",
    "detach_distribution",
    "elementwise_form",
    "kl_or_estimate",
    "leave_one_out_surrogate",
    "loss_terms",
    "register_elementwise",
    "site_terms",
    "stacked_scores",
    "weighted_divergence",
    "with_score",
]

DivergenceFn = Callable[[Distribution, Distribution, Tensor], Tensor]


# ------------------------------------------------------------ shared pieces
def analytic_kl(q: Distribution, p: Distribution) -> Tensor | None:
    """The elementwise closed-form ``KL(q || p)``, or ``None`` where torch has none."""
    if kl_exists(q, p):
        try:
            return torch.distributions.kl_divergence(q, p)
        except NotImplementedError:
            pass
    return None


def kl_or_estimate(
    p: Distribution, q: Distribution, value: Tensor, log_q: Tensor | None = None
) -> Tensor:
    """The analytic ``KL(q || p)`` where it exists, else its one-draw estimate
    ``log q(value) - log p(value)`` (``log_q`` if already computed); elementwise."""
    kl = analytic_kl(q, p)
    if kl is not None:
        return kl
    if log_q is None:
        log_q = log_density(q, value)
    return log_q - log_density(p, value)


def detach_distribution(distribution: Distribution) -> Distribution:
    """A copy of a torch distribution whose tensors are cut from the autograd graph.

    Example:
        >>> import torch
        >>> loc = torch.zeros(2, requires_grad=True)
        >>> detach_distribution(torch.distributions.Normal(loc, 1.0)).loc.requires_grad
        False
    """
    clone = copy.copy(distribution)
    state = clone.__dict__
    state.clear()
    for key, value in detached_vars(distribution).items():
        if isinstance(value, Distribution):
            value = detach_distribution(value)
        else:
            value = apply_to_tensors(value, Tensor.detach)
        state[key] = value
    return clone


def with_score(cost: Tensor, score: Tensor, weight: Tensor) -> Tensor:
    """``cost`` in value, ``grad cost + weight * grad score`` in gradient."""
    return cost + (score - score.detach()) * weight


def leave_one_out_surrogate(costs: Tensor, scores: Tensor | None) -> Tensor:
    r"""The mean of ``K`` per-draw costs, with score-function gradients whose weights
    are each draw's cost minus the mean cost of the *other* draws.

    The baseline keeps the estimate unbiased and removes most of the variance of
    plain REINFORCE (cf. Ranganath et al., 2014, "Black Box Variational Inference");
    with one draw there is no baseline.

    Example:
        >>> import torch
        >>> costs = torch.tensor([1.0, 2.0, 6.0])
        >>> leave_one_out_surrogate(costs, torch.zeros(3))
        tensor(3.)
    """
    if scores is None:
        return costs.mean()
    weights = costs.detach()
    count = costs.shape[0]
    if count > 1:
        weights = weights - (weights.sum() - weights) / (count - 1)
    return with_score(costs, scores, weights).mean()


def stacked_scores(scores: Sequence[Tensor | None]) -> Tensor | None:
    """Per-draw score terms as one tensor (zero for draws without any), or ``None``
    when no draw has one."""
    if all(score is None for score in scores):
        return None
    return torch.stack([torch.zeros(()) if s is None else s for s in scores])


# ------------------------------------------------------- elementwise div_fns
_ELEMENTWISE: dict[Callable, Callable] = {}


def register_elementwise(div_fn: DivergenceFn, elementwise: DivergenceFn) -> None:
    """Declare the elementwise form of a divergence function.

    ``div_fn(p, q, value)`` returns a summed divergence term; ``elementwise(p, q,
    value)`` the same before the sum (a tensor broadcastable to the batch shape of
    ``value``). Losses use the elementwise form for masks, per-element scales and
    vectorised particles; without one a ``div_fn`` still works everywhere but with
    masks and per-element scales.

    Example:
        >>> import torch
        >>> import borch
        >>> def reverse_kl(p, q, value):
        ...     return (p.log_prob(value) - q.log_prob(value)).sum()
        >>> register_elementwise(reverse_kl, lambda p, q, v: p.log_prob(v) - q.log_prob(v))
        >>> elementwise_form(reverse_kl) is not None
        True
    """
    if not callable(div_fn) or not callable(elementwise):
        raise TypeError("register_elementwise: div_fn and elementwise must be callable")
    _ELEMENTWISE[div_fn] = elementwise


def elementwise_form(div_fn: DivergenceFn) -> DivergenceFn | None:
    """The registered elementwise form of ``div_fn``, or ``None``."""
    return _ELEMENTWISE.get(div_fn)


# --------------------------------------------------------------- reductions
class Reduction:
    """How elementwise terms are summed: over everything, or per particle."""

    def __call__(self, term: Tensor, where: str | int) -> Tensor:
        raise NotImplementedError

    def divergence(
        self, div_fn: DivergenceFn, p: Distribution, q: Distribution, value: Tensor
    ) -> Tensor:
        """``div_fn``'s summed term, reduced as this reduction reduces."""
        raise NotImplementedError


class PerDraw(Reduction):
    """Everything summed to one number: the loss of one draw of every latent."""

    def __call__(self, term: Tensor, where: str | int) -> Tensor:
        return term if term.dim() == 0 else term.sum()

    def divergence(self, div_fn, p, q, value):
        return div_fn(p, q, value)


#: The reduction of :func:`borch.infer.vi_loss`.
PER_DRAW = PerDraw()


class PerParticle(Reduction):
    """Sums per particle: ``count`` draws laid out in dimension ``-(batch_dims + 1)``
    of every particle-shaped term, giving a ``(count,)`` tensor."""

    def __init__(self, count: int, batch_dims: int) -> None:
        self.count = count
        self.batch_dims = batch_dims

    def __call__(self, term: Tensor, where: str | int) -> Tensor:
        count, batch_dims = self.count, self.batch_dims
        if term.dim() <= batch_dims:  # no particle dimension: the same for every draw
            return term.sum().expand(count)
        if term.dim() != batch_dims + 1:
            raise ValueError(
                f"{site_label(where)}: a log density of shape {tuple(term.shape)} has more than "
                f"batch_dims={batch_dims} batch dimensions besides the particles; "
                "raise batch_dims"
            )
        return term.reshape(term.shape[0], -1).sum(-1).expand(count)

    def divergence(self, div_fn, p, q, value):
        # A div_fn without an elementwise form sums over everything it is given:
        # give it one particle at a time.
        terms = [
            div_fn(
                self._particle(p, index),
                self._particle(q, index),
                self._value_particle(p, value, index),
            )
            for index in range(self.count)
        ]
        for term in terms:
            if not isinstance(term, Tensor) or term.numel() != 1:
                name = getattr(div_fn, "__name__", repr(div_fn))
                raise TypeError(
                    f"div_fn {name} must return a one-element tensor (the summed "
                    f"divergence term), got {term!r}"
                )
        return torch.stack([term.reshape(()) for term in terms])

    def _has_particles(self, distribution: Distribution) -> bool:
        return len(distribution.batch_shape) > self.batch_dims

    def _particle(self, distribution: Distribution, index: int) -> Distribution:
        """The distribution of one particle (its leading batch dimension)."""
        if not self._has_particles(distribution):
            return distribution
        return select_batch(
            distribution, 0, 0 if distribution.batch_shape[0] == 1 else index
        )

    def _value_particle(self, p: Distribution, value: Tensor, index: int) -> Tensor:
        event = len(p.event_shape)
        if value.dim() - event <= self.batch_dims:
            return value
        return value[0 if value.shape[0] == 1 else index]


# ---------------------------------------------------------------- the choice
def site_terms(
    p_dist: Distribution,
    q_dist: Distribution | None,
    value: Tensor,
    observed: bool,
    div_fn: DivergenceFn,
    reduction: Reduction = PER_DRAW,
    scale: float | Tensor = 1.0,
    mask: Tensor | None = None,
    where: str | int = "a variable",
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """``(log likelihood, divergence, score)`` of one site, reduced; each is
    ``None`` where the site has no such term (see the module docstring for the
    choice). ``where`` names the site in errors (an int: its index in the input
    lists)."""
    has_weights = mask is not None or type(scale) is not float or scale != 1.0
    if observed:
        if mask is not None:  # missing data (NaN) may stand in the masked places
            events = len(p_dist.event_shape)
            batch = value.shape[: value.dim() - events] if events else value.shape
            check_fits("mask", mask, broadcast_shapes(batch, p_dist.batch_shape), where)
            value = fill_masked(p_dist, value, mask)
        log_likelihood = log_density(p_dist, value)
        if has_weights:
            log_likelihood = weighted(log_likelihood, scale, mask, where)
        return (reduction(log_likelihood, where), None, None)
    if q_dist is None:
        raise ValueError(
            f"{site_label(where)} is latent but has no approximating distribution"
        )
    if q_dist.has_rsample:
        if not has_weights and reduction is PER_DRAW:  # the common case, directly
            return (None, div_fn(p_dist, q_dist, value), None)
        return (
            None,
            weighted_divergence(
                div_fn, p_dist, q_dist, value, scale, mask, where, reduction
            ),
            None,
        )
    value = value.detach()
    log_q = q_dist.log_prob(value)
    # The analytic KL has no sampling noise; its own score term is then not needed
    # (the weight only carries a constant for it, which adds no bias).
    divergence = kl_or_estimate(p_dist, q_dist, value, log_q)
    if has_weights:
        divergence = weighted(divergence, scale, mask, where)
        log_q = weighted(log_q, 1.0, mask, where)
    return (None, reduction(divergence, where), reduction(log_q, where))


def weighted_divergence(
    div_fn: DivergenceFn,
    p_dist: Distribution,
    q_dist: Distribution,
    value: Tensor,
    scale: float | Tensor = 1.0,
    mask: Tensor | None = None,
    where: str | int = "a variable",
    reduction: Reduction = PER_DRAW,
) -> Tensor:
    """``div_fn``'s term of one site with its scale and mask, reduced."""
    elementwise = elementwise_form(div_fn)
    if elementwise is not None and (
        is_weighted(scale, mask) or not isinstance(reduction, PerDraw)
    ):
        term = weighted(elementwise(p_dist, q_dist, value), scale, mask, where)
        return reduction(term, where)
    if mask is not None or isinstance(scale, Tensor):
        name = getattr(div_fn, "__name__", repr(div_fn))
        raise ValueError(
            f"{site_label(where)} has a mask or a per-element scale, and div_fn {name} has no "
            "elementwise form to apply it to; declare one with "
            "borch.infer.register_elementwise(div_fn, elementwise_fn)"
        )
    term = reduction.divergence(div_fn, p_dist, q_dist, value)
    return term if scale == 1.0 else scale * term


def loss_terms(
    p_dists: Sequence,
    q_dists: Sequence,
    values: Sequence[Tensor],
    observed: Sequence[bool],
    kl_scaling: float,
    div_fn: DivergenceFn,
    reduction: Reduction = PER_DRAW,
    scales: Sequence | None = None,
    masks: Sequence | None = None,
) -> tuple[Tensor, Tensor | None]:
    """The negative ELBO of every site together, reduced, and the summed score
    terms of the non-reparameterised latents (``None`` when there are none)."""
    count = len(values)
    if (
        len(p_dists) != count
        or len(q_dists) != count
        or len(observed) != count
        or (scales is not None and len(scales) != count)
        or (masks is not None and len(masks) != count)
    ):
        check_lengths(
            p_dists=p_dists,
            q_dists=q_dists,
            values=values,
            observed=observed,
            scales=scales,
            masks=masks,
        )
    log_likelihood = divergence = score = None
    for index in range(count):
        p_dist = p_dists[index]
        if not isinstance(p_dist, Distribution):
            p_dist = as_distribution(p_dist)
        q_dist = q_dists[index]
        if q_dist is not None and not isinstance(q_dist, Distribution):
            q_dist = as_distribution(q_dist)
        log_likelihood_term, divergence_term, score_term = site_terms(
            p_dist,
            q_dist,
            values[index],
            observed[index],
            div_fn,
            reduction,
            1.0 if scales is None else scales[index],
            None if masks is None else masks[index],
            index,
        )
        # Sums start from the first term: adding it to 0.0 is one more operation.
        if log_likelihood_term is not None:
            log_likelihood = (
                log_likelihood_term
                if log_likelihood is None
                else log_likelihood + log_likelihood_term
            )
        if divergence_term is not None:
            divergence = (
                divergence_term if divergence is None else divergence + divergence_term
            )
        if score_term is not None:
            score = score_term if score is None else score + score_term
    if divergence is not None and kl_scaling != 1:
        divergence = kl_scaling * divergence
    if log_likelihood is None:
        cost = divergence
    else:
        cost = -log_likelihood if divergence is None else divergence - log_likelihood
    if cost is None:  # a model without random variables
        cost = reduction(torch.zeros(()), "the model")
    return cost, score


def check_lengths(**sequences: Sequence | None) -> None:
    """Raise if the given sequences (``None`` ones left out) differ in length."""
    lengths = {
        name: len(sequence)
        for name, sequence in sequences.items()
        if sequence is not None
    }
    if len(set(lengths.values())) > 1:
        details = ", ".join(f"{name}={length}" for name, length in lengths.items())
        raise ValueError(f"the input lists must have the same length, got {details}")
