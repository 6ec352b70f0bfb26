"""Inference: variational losses (and, in later modules, MCMC and Laplace).

Every loss works on the output of :func:`borch.pq_to_infer`.
"""

from borch.infer.log_prob import log_prob, negative_log_prob
from borch.infer.particles import particle_vi_loss
from borch.infer.vi import (
    analytical_kl_divergence_loss,
    detach_distribution,
    elbo_entropy_loss,
    elbo_loss,
    elbo_path_derivative_loss,
    elbo_rb_score_function,
    elbo_score_function,
    vi_loss,
    vi_regularization,
)

__all__ = [
    "analytical_kl_divergence_loss",
    "detach_distribution",
    "elbo_entropy_loss",
    "elbo_loss",
    "elbo_path_derivative_loss",
    "elbo_rb_score_function",
    "elbo_score_function",
    "log_prob",
    "negative_log_prob",
    "particle_vi_loss",
    "vi_loss",
    "vi_regularization",
]
