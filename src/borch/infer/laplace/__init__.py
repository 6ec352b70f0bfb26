"""The Laplace approximation: a Gaussian at a minimum of a loss, dense for any loss
and, over a model's point masses, full, diagonal or Kronecker-factored from the
Gauss-Newton curvature of the model's own likelihoods."""

from borch.infer.laplace.approximation import Laplace, hessian
from borch.infer.laplace.fit import laplace_posterior
from borch.infer.laplace.posterior import LaplacePosterior

__all__ = ["Laplace", "LaplacePosterior", "hessian", "laplace_posterior"]
