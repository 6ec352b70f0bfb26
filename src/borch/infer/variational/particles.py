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

from typing import Any

import torch
from torch import Tensor, nn

from borch.infer.variational.losses import elbo_loss
from borch.infer.variational.terms import (
    DivergenceFn,
    PerParticle,
    leave_one_out_surrogate,
    loss_terms,
    stacked_scores,
)
from borch.random_variable import particles
from borch.traversal import pq_to_infer, sample
from borch.validation import check_count


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
        kl_scaling, div_fn: as for :func:`borch.infer.vi_loss`. Vectorised, a
            ``div_fn`` with an elementwise form (those of borch.infer, or one
            declared with :func:`borch.infer.register_elementwise`) is evaluated in
            one pass; any other is called once per particle.

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
    num_particles = check_count("num_particles", num_particles, minimum=1)
    batch_dims = check_count("batch_dims", batch_dims, minimum=0)
    if vectorize:
        costs, scores = _vectorized_terms(
            model, args, kwargs, num_particles, batch_dims, kl_scaling, div_fn
        )
    else:
        costs, scores = _looped_terms(
            model, args, kwargs, num_particles, kl_scaling, div_fn
        )
    return leave_one_out_surrogate(costs, scores)


def _looped_terms(model, args, kwargs, count, kl_scaling, div_fn):
    costs, scores = [], []
    for _ in range(count):
        sample(model)
        model(*args, **kwargs)
        cost, score = _terms(pq_to_infer(model), kl_scaling, div_fn)
        costs.append(cost)
        scores.append(score)
    return torch.stack(costs), stacked_scores(scores)


def _vectorized_terms(model, args, kwargs, count, batch_dims, kl_scaling, div_fn):
    with particles(count, batch_dims):
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
    try:
        return _terms(inputs, kl_scaling, div_fn, PerParticle(count, batch_dims))
    finally:
        # Particle-shaped draws must not outlive this call.
        sample(model)


def _terms(inputs, kl_scaling, div_fn, reduction=None):
    extra = {} if reduction is None else {"reduction": reduction}
    return loss_terms(
        inputs["p_dists"],
        inputs["q_dists"],
        inputs["values"],
        inputs["observed"],
        kl_scaling,
        div_fn,
        scales=inputs.get("scales"),
        masks=inputs.get("masks"),
        **extra,
    )


__all__ = ["particle_vi_loss"]
