"""Inference: variational losses, MCMC (HMC and NUTS), the Laplace approximation and
posterior predictive sampling.

Every loss works on the output of :func:`borch.pq_to_infer`. The samplers follow the
convention of a ``torch.optim`` closure: ``closure()`` returns the *negative* log
density and the parameters are updated in place; :func:`mcmc` runs NUTS on a whole
model with several chains and returns draws by variable name.
"""

from borch.infer import hmc, variational
from borch.infer.guard import NonFiniteError, check_finite_gradients, nonfinite_guard
from borch.infer.hmc import *  # noqa: F403
from borch.infer.laplace import Laplace, LaplacePosterior, laplace_posterior
from borch.infer.prediction import VectorizationWarning, predictive
from borch.infer.variational import *  # noqa: F403

__all__ = [
    "Laplace",
    "LaplacePosterior",
    "NonFiniteError",
    "VectorizationWarning",
    "check_finite_gradients",
    *hmc.__all__,
    "laplace_posterior",
    "nonfinite_guard",
    "predictive",
    *variational.__all__,
]
