"""Variational inference losses: the negative ELBO and its estimators.

All losses are to be *minimised* and work in a plain ``torch.optim`` loop. Their
inputs are what :func:`borch.pq_to_infer` returns: prior and approximating
distributions (``torch.distributions`` objects or random variables), the values and
which of them are observed.

:func:`vi_loss` picks the estimator: pathwise (reparameterised) gradients through
``div_fn`` when every approximating variable can be reparameterised; otherwise
score-function (REINFORCE) gradients for the variables that cannot, with analytic KL
divergences where torch has them.

Example:
    >>> import torch
    >>> import torch.distributions as td
    >>> params = [torch.ones(1, requires_grad=True) for _ in range(10)]
    >>> p_dists = [td.Cauchy(0.0, 1.0) for _ in range(5)]
    >>> observed = [False] * 5
    >>> optimizer = torch.optim.Adam(params)
    >>> for _ in range(2):
    ...     optimizer.zero_grad()
    ...     q_dists = [td.Normal(params[2 * i], params[2 * i + 1]) for i in range(5)]
    ...     values = [q.rsample() for q in q_dists]
    ...     loss = vi_loss(p_dists, q_dists, values, observed)
    ...     loss.backward()
    ...     optimizer.step()
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor
from torch.distributions import Distribution

from borch.distributions.kl import DistributionLike, as_distribution
from borch.fastpath import log_density, normal_kl_sum
from borch.handlers import weighted
from borch.infer.variational.terms import (
    DivergenceFn,
    analytic_kl,
    check_lengths,
    detach_distribution,
    kl_or_estimate,
    leave_one_out_surrogate,
    loss_terms,
    register_elementwise,
    stacked_scores,
    weighted_divergence,
    with_score,
)


# --------------------------------------------------------------- per variable
def elbo_loss(
    p_dist: DistributionLike, q_dist: DistributionLike, value: Tensor
) -> Tensor:
    r"""Single-sample divergence term :math:`\log q(x) - \log p(x)`, summed.

    Example:
        >>> import torch
        >>> import torch.distributions as td
        >>> elbo_loss(td.Cauchy(0.0, 1.0), td.Normal(1.0, 1.0), torch.ones(1))
        tensor(0.9189)
    """
    if not isinstance(p_dist, Distribution):
        p_dist = as_distribution(p_dist)
    if not isinstance(q_dist, Distribution):
        q_dist = as_distribution(q_dist)
    return _summed(log_density(q_dist, value) - log_density(p_dist, value))


def elbo_path_derivative_loss(
    p_dist: DistributionLike, q_dist: DistributionLike, value: Tensor
) -> Tensor:
    r""":func:`elbo_loss` with :math:`q`'s parameters held fixed in :math:`\log q`.

    Gradients reach :math:`q` only through the reparameterised ``value`` (the
    "sticking the landing" estimator of Roeder et al., 2017), whose variance vanishes
    as :math:`q` approaches the posterior.

    Example:
        >>> import torch
        >>> import torch.distributions as td
        >>> elbo_path_derivative_loss(td.Cauchy(0.0, 1.0), td.Normal(1.0, 1.0), torch.ones(1))
        tensor(0.9189)
    """
    p_dist, q_dist = as_distribution(p_dist), as_distribution(q_dist)
    return (detach_distribution(q_dist).log_prob(value) - p_dist.log_prob(value)).sum()


def elbo_entropy_loss(
    p_dist: DistributionLike, q_dist: DistributionLike, value: Tensor
) -> Tensor:
    r"""Divergence term with the analytic entropy: :math:`-\log p(x) - H[q]`.

    Example:
        >>> import torch
        >>> import torch.distributions as td
        >>> elbo_entropy_loss(td.Normal(0.0, 1.0), td.Normal(0.0, 1.0), torch.zeros(()))
        tensor(-0.5000)
    """
    p_dist, q_dist = as_distribution(p_dist), as_distribution(q_dist)
    return -(p_dist.log_prob(value).sum() + q_dist.entropy().sum())


def analytical_kl_divergence_loss(
    p_dist: DistributionLike,
    q_dist: DistributionLike,
    value: Tensor | None = None,
    backup_loss_fn: DivergenceFn | None = None,
) -> Tensor:
    r""":math:`\mathrm{KL}(q \,\|\, p)` in closed form, summed.

    Falls back to ``backup_loss_fn(p_dist, q_dist, value)`` (default
    :func:`elbo_loss`) when torch has no closed form for the pair.

    Example:
        >>> import torch
        >>> import torch.distributions as td
        >>> analytical_kl_divergence_loss(td.Normal(0.0, 1.0), td.Normal(1.0, 1.0), torch.ones(1))
        tensor(0.5000)
    """
    p_dist, q_dist = as_distribution(p_dist), as_distribution(q_dist)
    if type(q_dist) is type(p_dist) is torch.distributions.Normal:
        return normal_kl_sum(q_dist, p_dist)
    kl = analytic_kl(q_dist, p_dist)
    if kl is not None:
        return kl.sum()
    if value is None:
        raise ValueError(
            f"no closed-form KL({type(q_dist).__name__} || {type(p_dist).__name__}) "
            "and no value to estimate it at"
        )
    return (backup_loss_fn or elbo_loss)(p_dist, q_dist, value)


register_elementwise(elbo_loss, lambda p, q, v: log_density(q, v) - log_density(p, v))
register_elementwise(
    elbo_path_derivative_loss,
    lambda p, q, v: detach_distribution(q).log_prob(v) - p.log_prob(v),
)
register_elementwise(elbo_entropy_loss, lambda p, q, v: -p.log_prob(v) - q.entropy())
register_elementwise(analytical_kl_divergence_loss, kl_or_estimate)


# ------------------------------------------------------------- over variables
def vi_regularization(
    p_dists: Sequence[DistributionLike],
    q_dists: Sequence[DistributionLike],
    values: Sequence[Tensor],
    div_fn: DivergenceFn = elbo_loss,
    scales: Sequence | None = None,
    masks: Sequence | None = None,
) -> Tensor:
    """``sum_i div_fn(p_i, q_i, x_i)``: the divergence term over latent variables.

    ``scales`` and ``masks`` (one per variable, as :func:`borch.pq_to_infer` gives
    them under :func:`borch.scale` and :func:`borch.mask`) weight the terms.

    Example:
        >>> import torch
        >>> import torch.distributions as td
        >>> p_dists = [td.Cauchy(0.0, 1.0) for _ in range(5)]
        >>> q_dists = [td.Normal(0.0, 1.0) for _ in range(5)]
        >>> values = [torch.tensor(float(i)) for i in range(5)]
        >>> vi_regularization(p_dists, q_dists, values, elbo_loss)
        tensor(-6.4327)
    """
    check_lengths(
        p_dists=p_dists, q_dists=q_dists, values=values, scales=scales, masks=masks
    )
    total = torch.zeros(())
    for index, (p_dist, q_dist, value) in enumerate(zip(p_dists, q_dists, values)):
        total = total + weighted_divergence(
            div_fn,
            as_distribution(p_dist),
            as_distribution(q_dist),
            value,
            _at(scales, index, 1.0),
            _at(masks, index, None),
            f"variable {index}",
        )
    return total


def elbo_score_function(
    p_dists: Sequence[DistributionLike],
    q_dists: Sequence[DistributionLike],
    values: Sequence[Tensor],
    regularization: Tensor | float = 0.0,
    scales: Sequence | None = None,
    masks: Sequence | None = None,
) -> Tensor:
    r"""Score-function (REINFORCE) surrogate of the negative ELBO.

    With :math:`f = R + \sum_i \log q_i(x_i) - \log p_i(x_i)` (``R`` is the rest of
    the loss at these values, e.g. the negative log likelihood), the value of the
    returned tensor is :math:`f` and its gradient is the unbiased estimate
    :math:`\nabla f + f \sum_i \nabla \log q_i(x_i)`. The values are treated as
    fixed draws, so it works for discrete variables. ``scales`` and ``masks`` weight
    the terms as in :func:`vi_regularization`.

    Example:
        >>> import torch
        >>> import torch.distributions as td
        >>> p_dists = [td.Cauchy(0.0, 1.0) for _ in range(5)]
        >>> q_dists = [td.Normal(0.0, 1.0) for _ in range(5)]
        >>> values = [torch.tensor(float(i)) for i in range(5)]
        >>> elbo_score_function(p_dists, q_dists, values)
        tensor(-6.4327)
    """
    check_lengths(
        p_dists=p_dists, q_dists=q_dists, values=values, scales=scales, masks=masks
    )
    cost = torch.as_tensor(regularization)
    score = torch.zeros(())
    for index, (p_dist, q_dist, value) in enumerate(zip(p_dists, q_dists, values)):
        p_dist, q_dist = as_distribution(p_dist), as_distribution(q_dist)
        value = value.detach()
        log_q = q_dist.log_prob(value)
        scale, mask = _at(scales, index, 1.0), _at(masks, index, None)
        where = f"variable {index}"
        score = score + weighted(log_q, 1.0, mask, where).sum()
        divergence = log_q - p_dist.log_prob(value)
        cost = cost + weighted(divergence, scale, mask, where).sum()
    return with_score(cost, score, cost.detach())


def vi_loss(
    p_dists: Sequence[DistributionLike],
    q_dists: Sequence[DistributionLike | None],
    values: Sequence[Tensor],
    observed: Sequence[bool],
    kl_scaling: float = 1.0,
    div_fn: DivergenceFn = elbo_loss,
    scales: Sequence | None = None,
    masks: Sequence | None = None,
) -> Tensor:
    r"""The negative ELBO: observed variables' negative log likelihood plus
    ``kl_scaling`` times the divergence term of the latent ones.

    The estimator is chosen per variable (:func:`~borch.infer.variational.terms.site_terms`):
    ``div_fn`` (default :func:`elbo_loss`, reparameterised) for approximations that
    can ``rsample``; for the others, the analytic KL where torch has it and
    score-function gradients for their effect on everything else, so a discrete
    latent is learned from the data it explains. ``q_dists`` entries of observed
    variables are ignored (``None`` is fine). ``scales`` and ``masks`` (one per
    variable; :func:`borch.pq_to_infer` gives them when :func:`borch.scale` or
    :func:`borch.mask` marked a variable) multiply and mask each variable's terms.

    Example:
        >>> import torch
        >>> import torch.distributions as td
        >>> p_dists = [td.Cauchy(0.0, 1.0) for _ in range(5)]
        >>> q_dists = [td.Normal(0.0, 1.0) for _ in range(5)]
        >>> values = [torch.tensor(float(i)) for i in range(5)]
        >>> vi_loss(p_dists, q_dists, values, [False] * 5, 1)
        tensor(-6.4327)
    """
    cost, score = loss_terms(
        p_dists,
        q_dists,
        values,
        observed,
        kl_scaling,
        div_fn,
        scales=scales,
        masks=masks,
    )
    if score is None:
        return cost
    return with_score(cost, score, cost.detach())


def elbo_rb_score_function(
    sub_samples: Sequence[Mapping[str, Sequence]],
    kl_scaling: float = 1.0,
    div_fn: DivergenceFn = elbo_loss,
) -> Tensor:
    r"""Negative ELBO averaged over several draws, with variance-reduced score terms.

    Each element of ``sub_samples`` is one independent draw of the model, as returned
    by :func:`borch.pq_to_infer` (keys ``p_dists``, ``q_dists``, ``values`` and
    optionally ``observed``, default all latent, ``scales`` and ``masks``). The
    score-function weight of each draw is its cost minus the mean cost of the
    *other* draws (:func:`~borch.infer.variational.terms.leave_one_out_surrogate`).
    Needs at least two draws.

    Example:
        >>> import torch
        >>> import torch.distributions as td
        >>> logit = torch.zeros((), requires_grad=True)
        >>> def draw():
        ...     q = td.Bernoulli(logits=logit)
        ...     return {"p_dists": [td.Bernoulli(0.9)], "q_dists": [q], "values": [q.sample()]}
        >>> loss = elbo_rb_score_function([draw() for _ in range(8)])
        >>> loss.backward()
        >>> bool(logit.grad < 0)  # pushed towards the prior's 0.9
        True
    """
    if len(sub_samples) < 2:
        raise ValueError(
            f"elbo_rb_score_function needs at least 2 sub-samples, got {len(sub_samples)}"
        )
    costs, scores = [], []
    for draw in sub_samples:
        cost, score = loss_terms(
            draw["p_dists"],
            draw["q_dists"],
            draw["values"],
            draw.get("observed", [False] * len(draw["values"])),
            kl_scaling,
            div_fn,
            scales=draw.get("scales"),
            masks=draw.get("masks"),
        )
        costs.append(cost)
        scores.append(score)
    return leave_one_out_surrogate(torch.stack(costs), stacked_scores(scores))


def _at(items: Sequence | None, index: int, default):
    return default if items is None else items[index]


def _summed(values: Tensor) -> Tensor:
    return values if values.dim() == 0 else values.sum()


__all__ = [
    "analytical_kl_divergence_loss",
    "detach_distribution",
    "elbo_entropy_loss",
    "elbo_loss",
    "elbo_path_derivative_loss",
    "elbo_rb_score_function",
    "elbo_score_function",
    "vi_loss",
    "vi_regularization",
]
