"""Multi-sample ELBOs: the negative ELBO averaged over many draws ("particles").

``particle_vi_loss(model, *args, num_particles=K)`` runs ``model(*args)`` and averages
the negative ELBO over ``K`` independent draws of every latent variable. With
``vectorize=True`` all draws happen in one pass: each latent gets a leading particle
dimension, placed to the left of the ``batch_dims`` batch dimensions the model's
variables use (as Pyro's ``vectorize_particles`` does with ``max_plate_nesting``), so
the model's code must broadcast over it. ``vectorize=False`` loops and works for any
model.

Averaging over ``K`` draws divides the variance of the gradient estimate by ``K``; for
variables without reparameterised draws the score-function weights also use a
leave-one-out baseline across the particles, which removes most of their variance.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from borch.distributions.kl import as_distribution, kl_exists
from borch.infer.vi import (
    DivergenceFn,
    _particle_terms,
    analytical_kl_divergence_loss,
    detach_distribution,
    elbo_entropy_loss,
    elbo_loss,
    elbo_path_derivative_loss,
)
from borch.random_variable import _PARTICLES
from borch.traversal import pq_to_infer, sample


def particle_vi_loss(
    model: nn.Module,
    *args: Any,
    num_particles: int = 8,
    vectorize: bool = True,
    batch_dims: int = 1,
    kl_scaling: float = 1.0,
    div_fn: DivergenceFn = elbo_loss,
    **kwargs: Any,
) -> Tensor:
    """Negative ELBO of ``model(*args, **kwargs)`` averaged over ``num_particles`` draws.

    Draws anew (it calls :func:`borch.sample` itself), runs the model and returns a
    scalar loss for a plain ``torch.optim`` loop.

    Args:
        model: a module whose forward assigns the random variables.
        num_particles: how many independent draws to average.
        vectorize: draw all particles in one pass (the model must broadcast over a
            leading particle dimension); ``False`` loops over particles.
        batch_dims: how many batch dimensions the model's variables use; the particle
            dimension goes to their left (dimension ``-(batch_dims + 1)``).
        kl_scaling, div_fn: as for :func:`borch.infer.vi_loss` (vectorised mode
            supports the div_fns of borch.infer).

    Example:
        >>> import torch
        >>> import borch
        >>> from borch import distributions as dist
        >>> class Regression(borch.Module):
        ...     def forward(self, x):
        ...         self.slope = dist.Normal(0.0, 3.0)
        ...         self.y = dist.Normal(self.slope * x, 1.0)
        ...         return self.y
        >>> model = Regression()
        >>> model.observe(y=torch.tensor([0.9, 2.1, 2.9]))
        >>> loss = particle_vi_loss(model, torch.tensor([1.0, 2.0, 3.0]), num_particles=16)
        >>> loss.backward()
        >>> model.posterior.slope.loc.grad is not None
        True
    """
    if not isinstance(num_particles, int) or num_particles < 1:
        raise ValueError(f"num_particles must be a positive int, got {num_particles!r}")
    if not isinstance(batch_dims, int) or batch_dims < 0:
        raise ValueError(f"batch_dims must be a non-negative int, got {batch_dims!r}")
    if vectorize:
        costs, scores = _vectorized_terms(
            model, args, kwargs, num_particles, batch_dims, kl_scaling, div_fn
        )
    else:
        costs, scores = _looped_terms(
            model, args, kwargs, num_particles, kl_scaling, div_fn
        )
    return _combine(costs, scores)


def _looped_terms(model, args, kwargs, count, kl_scaling, div_fn):
    costs, scores = [], []
    for _ in range(count):
        sample(model)
        model(*args, **kwargs)
        cost, score = _particle_terms(
            **pq_to_infer(model), kl_scaling=kl_scaling, div_fn=div_fn
        )
        costs.append(cost)
        scores.append(score)
    has_score = any(score is not None for score in scores)
    stacked_scores = (
        torch.stack([s if s is not None else torch.zeros(()) for s in scores])
        if has_score
        else None
    )
    return torch.stack(costs), stacked_scores


def _vectorized_terms(model, args, kwargs, count, batch_dims, kl_scaling, div_fn):
    elementwise = _ELEMENTWISE.get(div_fn)
    if elementwise is None:
        raise ValueError(
            f"particle_vi_loss(vectorize=True) supports the div_fns of borch.infer, not "
            f"{getattr(div_fn, '__name__', div_fn)!r}; use vectorize=False"
        )
    token = _PARTICLES.set((count, batch_dims))
    try:
        sample(model)
        try:
            model(*args, **kwargs)
        except RuntimeError as error:
            raise RuntimeError(
                f"the model failed with {count} particles in dimension "
                f"{-(batch_dims + 1)}: {error}. Its code must broadcast over that "
                "dimension: raise batch_dims, or use vectorize=False"
            ) from error
        inputs = pq_to_infer(model)
    finally:
        _PARTICLES.reset(token)
    try:
        return _terms_per_particle(inputs, count, batch_dims, kl_scaling, elementwise)
    finally:
        # Particle-shaped draws must not outlive this call.
        sample(model)


def _terms_per_particle(inputs, count, batch_dims, kl_scaling, elementwise):
    def per_particle(term: Tensor, name: str) -> Tensor:
        return _reduce(term, count, batch_dims, name)

    nll = divergence = 0.0
    score = None
    rows = zip(
        inputs["p_dists"], inputs["q_dists"], inputs["values"], inputs["observed"]
    )
    for index, (p_dist, q_dist, value, observed) in enumerate(rows):
        name = f"variable {index}"
        p_dist = as_distribution(p_dist)
        if observed:
            nll = nll - per_particle(p_dist.log_prob(value), name)
            continue
        q_dist = as_distribution(q_dist)
        if q_dist.has_rsample:
            divergence = divergence + per_particle(
                elementwise(p_dist, q_dist, value), name
            )
            continue
        value = value.detach()
        log_q = per_particle(q_dist.log_prob(value), name)
        score = log_q if score is None else score + log_q
        if kl_exists(q_dist, p_dist):
            try:
                kl = torch.distributions.kl_divergence(q_dist, p_dist)
                divergence = divergence + per_particle(kl, name)
                continue
            except NotImplementedError:
                pass
        divergence = divergence + log_q - per_particle(p_dist.log_prob(value), name)
    cost = nll + kl_scaling * divergence
    if not isinstance(cost, Tensor):  # a model without random variables
        cost = torch.zeros(count)
    return cost, score


def _reduce(term: Tensor, count: int, batch_dims: int, name: str) -> Tensor:
    """Sum a log-density term per particle: ``(count,)``."""
    if term.dim() <= batch_dims:  # no particle dimension: the same for every draw
        return term.sum().expand(count)
    if term.dim() != batch_dims + 1:
        raise ValueError(
            f"{name}: a log density of shape {tuple(term.shape)} has more than "
            f"batch_dims={batch_dims} batch dimensions besides the particles; raise "
            "batch_dims"
        )
    return term.reshape(term.shape[0], -1).sum(-1).expand(count)


def _combine(costs: Tensor, scores: Tensor | None) -> Tensor:
    count = costs.shape[0]
    if scores is None:
        return costs.mean()
    weights = costs.detach()
    if count > 1:  # leave-one-out baseline: unbiased, much lower variance
        weights = weights - (weights.sum() - weights) / (count - 1)
    return (costs + (scores - scores.detach()) * weights).mean()


_ELEMENTWISE: dict[Callable, Callable] = {
    elbo_loss: lambda p, q, v: q.log_prob(v) - p.log_prob(v),
    elbo_path_derivative_loss: lambda p, q, v: (
        detach_distribution(q).log_prob(v) - p.log_prob(v)
    ),
    elbo_entropy_loss: lambda p, q, v: -p.log_prob(v) - q.entropy(),
    analytical_kl_divergence_loss: lambda p, q, v: _analytic_or_sampled(p, q, v),
}


def _analytic_or_sampled(p, q, value):
    if kl_exists(q, p):
        try:
            return torch.distributions.kl_divergence(q, p)
        except NotImplementedError:
            pass
    return q.log_prob(value) - p.log_prob(value)


__all__ = ["particle_vi_loss"]
