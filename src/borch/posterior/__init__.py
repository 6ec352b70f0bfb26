"""Posterior families: how the approximating variable of each prior is created.

* :class:`Automatic` (default): the prior's family, learnable arguments, hierarchy kept.
* :class:`Normal`, :class:`ScaledNormal`: Normal approximations in unconstrained space.
* :class:`AsPrior`: the prior's family, every argument learnable, mean-field.
* :class:`PointMass`: point estimates (MAP, MCMC state).
* :class:`Manual`: approximations set by hand.
* :class:`MultivariateNormal`, :class:`LowRankMultivariateNormal`: all latent
  variables as one Gaussian in unconstrained space (:mod:`borch.posterior.joint`).
* :class:`NormalizingFlow`: all latent variables as one normalizing flow (zuko).
"""

from borch.posterior.as_prior import AsPrior
from borch.posterior.automatic import Automatic
from borch.posterior.base import Posterior
from borch.posterior.flow import NormalizingFlow
from borch.posterior.gaussian import LowRankMultivariateNormal, MultivariateNormal
from borch.posterior.joint import JointPosterior
from borch.posterior.manual import Manual
from borch.posterior.normal import Normal, ScaledNormal
from borch.posterior.point_mass import PointMass

__all__ = [
    "AsPrior",
    "Automatic",
    "JointPosterior",
    "LowRankMultivariateNormal",
    "Manual",
    "MultivariateNormal",
    "Normal",
    "NormalizingFlow",
    "PointMass",
    "Posterior",
    "ScaledNormal",
]
