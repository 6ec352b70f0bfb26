"""Inference: variational losses, MCMC (HMC and NUTS), the Laplace approximation and
posterior predictive sampling.

Every loss works on the output of :func:`borch.pq_to_infer`. The samplers follow the
convention of a ``torch.optim`` closure: ``closure()`` returns the *negative* log
density and the parameters are updated in place; :func:`mcmc` runs NUTS on a whole
model with several chains and returns draws by variable name.
"""

from borch.infer.adaptation import dual_averaging, find_reasonable_epsilon
from borch.infer.guard import NonFiniteError, check_finite_gradients, nonfinite_guard
from borch.infer.hamiltonian import hmc_step
from borch.infer.laplace import Laplace, LaplacePosterior, laplace_posterior
from borch.infer.log_prob import log_prob, negative_log_prob
from borch.infer.mcmc_result import MCMCResult
from borch.infer.mcmc_runner import mcmc
from borch.infer.model_conversion import model_to_neg_log_prob_closure
from borch.infer.nuts import nuts_step
from borch.infer.particles import particle_vi_loss
from borch.infer.predictive import VectorizationWarning, predictive
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
    "Laplace",
    "LaplacePosterior",
    "MCMCResult",
    "NonFiniteError",
    "VectorizationWarning",
    "analytical_kl_divergence_loss",
    "check_finite_gradients",
    "detach_distribution",
    "dual_averaging",
    "elbo_entropy_loss",
    "elbo_loss",
    "elbo_path_derivative_loss",
    "elbo_rb_score_function",
    "elbo_score_function",
    "find_reasonable_epsilon",
    "hmc_step",
    "laplace_posterior",
    "log_prob",
    "mcmc",
    "model_to_neg_log_prob_closure",
    "negative_log_prob",
    "nonfinite_guard",
    "nuts_step",
    "particle_vi_loss",
    "predictive",
    "vi_loss",
    "vi_regularization",
]
