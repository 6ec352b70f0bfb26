"""Posterior predictive sampling (the function is :func:`borch.infer.predictive`)."""

from borch.infer.prediction.sampling import RETURN, VectorizationWarning, predictive

__all__ = ["RETURN", "VectorizationWarning", "predictive"]
