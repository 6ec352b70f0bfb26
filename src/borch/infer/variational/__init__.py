"""Variational inference: the negative ELBO, its estimators and multi-sample ELBOs.

:mod:`~borch.infer.variational.terms` makes the one per-site choice every loss here
shares (observed: likelihood; reparameterisable: ``div_fn``; otherwise score function
with an analytic KL where one exists); :mod:`~borch.infer.variational.losses` holds
the losses users call on :func:`borch.pq_to_infer` output,
:mod:`~borch.infer.variational.particles` the vectorised multi-sample ELBO and
:mod:`~borch.infer.variational.likelihood` plain log likelihoods.
"""

from borch.infer.variational import likelihood, losses, particles
from borch.infer.variational.likelihood import *  # noqa: F403
from borch.infer.variational.losses import *  # noqa: F403
from borch.infer.variational.particles import *  # noqa: F403
from borch.infer.variational.terms import register_elementwise

__all__ = [
    *likelihood.__all__,
    *losses.__all__,
    *particles.__all__,
    "register_elementwise",
]
