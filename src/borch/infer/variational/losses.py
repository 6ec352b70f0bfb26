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

import copy
import math
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor
from torch.distributions import Distribution

from borch.distributions.construction import log_scale_of
from borch.distributions.kl import DistributionLike, as_distribution, kl_exists
from borch.distributions.log_density import log_density
from borch.graph import apply_to_tensors

DivergenceFn = Callable[[Distribution, Distribution, Tensor], Tensor]


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
        return _normal_kl_sum(q_dist, p_dist)
    if kl_exists(q_dist, p_dist):
        try:
            return torch.distributions.kl_divergence(q_dist, p_dist).sum()
        except NotImplementedError:
            pass
    if value is None:
        raise ValueError(
            f"no closed-form KL({type(q_dist).__name__} || {type(p_dist).__name__}) "
            "and no value to estimate it at"
        )
    return (backup_loss_fn or elbo_loss)(p_dist, q_dist, value)


def _normal_kl_sum(
    q: torch.distributions.Normal, p: torch.distributions.Normal
) -> Tensor:
    """Summed ``KL(q || p)`` of two Normals, with fewer full-size operations than
    torch's elementwise formula (the KL of every weight of a Bayesian network is
    taken on each step). A prior with one loc and scale (the usual case) is summed
    in closed form: ``n log sp - sum log sq + (sum sq^2 + sum (mq - mp)^2) / 2sp^2 - n/2``.
    """
    if p.loc.numel() != 1 or p.scale.numel() != 1:
        return torch.distributions.kl_divergence(q, p).sum()
    if p.loc.dim() == 0:
        shape = q.batch_shape  # torch's Normal holds loc and scale at this shape
    else:
        shape = torch.broadcast_shapes(q.batch_shape, p.batch_shape)
    count = shape.numel()
    q_scale, q_loc = q.scale, q.loc
    if q_scale.shape != shape:
        q_scale, q_loc = q_scale.expand(shape), q_loc.expand(shape)
        log_q_scale = q_scale.log()
    else:
        log_q_scale = log_scale_of(q)
    log_p_scale, half_precision, p_loc = _scalar_normal_constants(p)
    difference = q_loc if p_loc is None else q_loc - p_loc
    squares = q_scale.square().sum() + difference.square().sum()
    return squares * half_precision - log_q_scale.sum() + count * (log_p_scale - 0.5)


def _scalar_normal_constants(p: torch.distributions.Normal) -> tuple:
    """``(log sp, 1 / 2sp^2, loc or None when it is 0)`` of a one-element Normal:
    numbers remembered for constant priors (shared between steps), tensors recomputed
    for learnable ones."""
    loc, scale = p.loc, p.scale
    if loc.requires_grad or scale.requires_grad:
        return scale.reshape(()).log(), 0.5 / scale.reshape(()).square(), loc
    cached = p.__dict__.get("_borch_kl_constants")
    if (
        cached is not None
        and cached[0] is loc
        and cached[1] == loc._version
        and cached[2] is scale
        and cached[3] == scale._version
    ):
        return cached[4]
    # Plain numbers: tensor-with-number arithmetic skips Python-level operator
    # wrappers, and these are computed once per prior.
    sp = float(scale.reshape(()))
    constants = (
        math.log(sp),
        0.5 / sp**2,
        None if bool(loc.reshape(()) == 0) else loc,
    )
    p.__dict__["_borch_kl_constants"] = (
        loc,
        loc._version,
        scale,
        scale._version,
        constants,
    )
    return constants


# ------------------------------------------------------------- over variables
def vi_regularization(
    p_dists: Sequence[DistributionLike],
    q_dists: Sequence[DistributionLike],
    values: Sequence[Tensor],
    div_fn: DivergenceFn = elbo_loss,
) -> Tensor:
    """``sum_i div_fn(p_i, q_i, x_i)``: the divergence term over latent variables.

    Example:
        >>> import torch
        >>> import torch.distributions as td
        >>> p_dists = [td.Cauchy(0.0, 1.0) for _ in range(5)]
        >>> q_dists = [td.Normal(0.0, 1.0) for _ in range(5)]
        >>> values = [torch.tensor(float(i)) for i in range(5)]
        >>> vi_regularization(p_dists, q_dists, values, elbo_loss)
        tensor(-6.4327)
    """
    _check_lengths(p_dists=p_dists, q_dists=q_dists, values=values)
    total = torch.zeros(())
    for p_dist, q_dist, value in zip(p_dists, q_dists, values):
        total = total + div_fn(p_dist, q_dist, value)
    return total


def elbo_score_function(
    p_dists: Sequence[DistributionLike],
    q_dists: Sequence[DistributionLike],
    values: Sequence[Tensor],
    regularization: Tensor | float = 0.0,
) -> Tensor:
    r"""Score-function (REINFORCE) surrogate of the negative ELBO.

    With :math:`f = R + \sum_i \log q_i(x_i) - \log p_i(x_i)` (``R`` is the rest of
    the loss at these values, e.g. the negative log likelihood), the value of the
    returned tensor is :math:`f` and its gradient is the unbiased estimate
    :math:`\nabla f + f \sum_i \nabla \log q_i(x_i)`. The values are treated as
    fixed draws, so it works for discrete variables.

    Example:
        >>> import torch
        >>> import torch.distributions as td
        >>> p_dists = [td.Cauchy(0.0, 1.0) for _ in range(5)]
        >>> q_dists = [td.Normal(0.0, 1.0) for _ in range(5)]
        >>> values = [torch.tensor(float(i)) for i in range(5)]
        >>> elbo_score_function(p_dists, q_dists, values)
        tensor(-6.4327)
    """
    _check_lengths(p_dists=p_dists, q_dists=q_dists, values=values)
    cost = torch.as_tensor(regularization)
    score = torch.zeros(())
    for p_dist, q_dist, value in zip(p_dists, q_dists, values):
        p_dist, q_dist = as_distribution(p_dist), as_distribution(q_dist)
        value = value.detach()
        log_q = q_dist.log_prob(value).sum()
        score = score + log_q
        cost = cost + log_q - p_dist.log_prob(value).sum()
    return _with_score(cost, score, cost.detach())


def vi_loss(
    p_dists: Sequence[DistributionLike],
    q_dists: Sequence[DistributionLike | None],
    values: Sequence[Tensor],
    observed: Sequence[bool],
    kl_scaling: float = 1.0,
    div_fn: DivergenceFn = elbo_loss,
) -> Tensor:
    r"""The negative ELBO: observed variables' negative log likelihood plus
    ``kl_scaling`` times the divergence term of the latent ones.

    The estimator is chosen per variable: ``div_fn`` (default :func:`elbo_loss`,
    reparameterised) for approximations that can ``rsample``; for the others, the
    analytic KL where torch has it and score-function gradients for their effect on
    everything else, so a discrete latent is learned from the data it explains.
    ``q_dists`` entries of observed variables are ignored (``None`` is fine).

    Example:
        >>> import torch
        >>> import torch.distributions as td
        >>> p_dists = [td.Cauchy(0.0, 1.0) for _ in range(5)]
        >>> q_dists = [td.Normal(0.0, 1.0) for _ in range(5)]
        >>> values = [torch.tensor(float(i)) for i in range(5)]
        >>> vi_loss(p_dists, q_dists, values, [False] * 5, 1)
        tensor(-6.4327)
    """
    cost, score = _particle_terms(
        p_dists, q_dists, values, observed, kl_scaling, div_fn
    )
    if score is None:
        return cost
    return _with_score(cost, score, cost.detach())


def elbo_rb_score_function(
    sub_samples: Sequence[Mapping[str, Sequence]],
    kl_scaling: float = 1.0,
    div_fn: DivergenceFn = elbo_loss,
) -> Tensor:
    r"""Negative ELBO averaged over several draws, with variance-reduced score terms.

    Each element of ``sub_samples`` is one independent draw of the model, as returned
    by :func:`borch.pq_to_infer` (keys ``p_dists``, ``q_dists``, ``values`` and
    optionally ``observed``, default all latent). The score-function weight of each
    draw is its cost minus the mean cost of the *other* draws: a control variate that
    keeps the estimate unbiased and removes most of the variance of plain REINFORCE
    (cf. Ranganath et al., 2014, "Black Box Variational Inference"). Needs at least
    two draws.

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
        observed = draw.get("observed", [False] * len(draw["values"]))
        cost, score = _particle_terms(
            draw["p_dists"],
            draw["q_dists"],
            draw["values"],
            observed,
            kl_scaling,
            div_fn,
        )
        costs.append(cost)
        scores.append(score)
    count = len(costs)
    detached = torch.stack([cost.detach() for cost in costs])
    total = detached.sum()
    loss = torch.zeros(())
    for cost, score, own in zip(costs, scores, detached):
        if score is None:
            loss = loss + cost
        else:
            baseline = (total - own) / (count - 1)
            loss = loss + _with_score(cost, score, own - baseline)
    return loss / count


# ------------------------------------------------------------------- helpers
def _particle_terms(
    p_dists, q_dists, values, observed, kl_scaling, div_fn
) -> tuple[Tensor, Tensor | None]:
    """The loss of one draw, and the summed ``log q`` of its non-reparameterised
    latents (``None`` when there are none)."""
    count = len(values)
    if len(p_dists) != count or len(q_dists) != count or len(observed) != count:
        _check_lengths(
            p_dists=p_dists, q_dists=q_dists, values=values, observed=observed
        )
    log_likelihood = divergence = score = None
    for p_dist, q_dist, value, is_observed in zip(p_dists, q_dists, values, observed):
        if not isinstance(p_dist, Distribution):
            p_dist = as_distribution(p_dist)
        if is_observed:
            log_likelihood = _plus(log_likelihood, _summed(log_density(p_dist, value)))
            continue
        if q_dist is None:
            raise ValueError("a latent variable has no approximating distribution")
        if not isinstance(q_dist, Distribution):
            q_dist = as_distribution(q_dist)
        if q_dist.has_rsample:
            divergence = _plus(divergence, div_fn(p_dist, q_dist, value))
            continue
        value = value.detach()
        log_q = q_dist.log_prob(value).sum()
        score = _plus(score, log_q)
        divergence = _plus(
            divergence, _non_reparameterised_divergence(p_dist, q_dist, value, log_q)
        )
    if divergence is not None and kl_scaling != 1:
        divergence = kl_scaling * divergence
    if log_likelihood is None:
        cost = torch.zeros(()) if divergence is None else divergence
    else:
        cost = -log_likelihood if divergence is None else divergence - log_likelihood
    return cost, score


def _plus(total: Tensor | None, term: Tensor) -> Tensor:
    # Sums start from the first term: adding it to 0.0 is one more operation.
    return term if total is None else total + term


def _summed(values: Tensor) -> Tensor:
    return values if values.dim() == 0 else values.sum()


def _non_reparameterised_divergence(p_dist, q_dist, value, log_q) -> Tensor:
    # The analytic KL has no sampling noise; its own score term is then not needed
    # (the weight below only carries a constant for it, which adds no bias).
    if kl_exists(q_dist, p_dist):
        try:
            return torch.distributions.kl_divergence(q_dist, p_dist).sum()
        except NotImplementedError:
            pass
    return log_q - log_density(p_dist, value).sum()


def _with_score(cost: Tensor, score: Tensor, weight: Tensor) -> Tensor:
    """``cost`` in value, ``grad cost + weight * grad score`` in gradient."""
    return cost + (score - score.detach()) * weight


def detach_distribution(distribution: Distribution) -> Distribution:
    """A copy of a torch distribution whose tensors are cut from the autograd graph."""
    clone = copy.copy(distribution)
    for key, value in vars(distribution).items():
        if isinstance(value, Distribution):
            value = detach_distribution(value)
        else:
            value = apply_to_tensors(value, Tensor.detach)
        clone.__dict__[key] = value
    return clone


def _check_lengths(**sequences: Sequence) -> None:
    lengths = {name: len(sequence) for name, sequence in sequences.items()}
    if len(set(lengths.values())) > 1:
        details = ", ".join(f"{name}={length}" for name, length in lengths.items())
        raise ValueError(f"the input lists must have the same length, got {details}")
