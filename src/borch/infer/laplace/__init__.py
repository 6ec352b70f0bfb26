"""The Laplace approximation: a Gaussian at a minimum of a loss."""

from borch.infer.laplace.approximation import (
    Laplace,
    LaplacePosterior,
    hessian,
    laplace_posterior,
)

__all__ = ["Laplace", "LaplacePosterior", "hessian", "laplace_posterior"]
