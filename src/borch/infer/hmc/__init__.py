"""Hamiltonian Monte Carlo: the integrator, HMC and NUTS kernels, Stan-style warm-up
and the multi-chain runner :func:`borch.infer.mcmc`.

Kernels (:mod:`~borch.infer.hmc.kernels`: ``init(position, potential) -> state``,
``step(state, rng) -> (state, info)``) keep their state in numpy and move on a
:class:`~borch.infer.hmc.potential.Potential` (the negative log density and its
gradient on a flat vector), with the kinetic energy of a
:class:`~borch.infer.hmc.metric.Metric`; a model becomes a potential in
:mod:`~borch.infer.hmc.model_conversion`, and :mod:`borch.infer.hmc.traced` replays a
trace of it for speed. ``mcmc(chain_method="vectorized")`` moves all chains at
once instead: :mod:`~borch.infer.hmc.batched_nuts` in torch on a
:mod:`~borch.infer.hmc.batched_potential` (:mod:`~borch.infer.hmc.vectorized`).
"""

from borch.infer.hmc.adaptation import dual_averaging, find_reasonable_epsilon
from borch.infer.hmc.hamiltonian import hmc_step
from borch.infer.hmc.kernels import HMC, NUTS, Kernel
from borch.infer.hmc.metric import BlockMetric, DenseMetric, DiagonalMetric, Metric
from borch.infer.hmc.model_conversion import model_to_neg_log_prob_closure
from borch.infer.hmc.nuts import nuts_step
from borch.infer.hmc.result import MCMCResult
from borch.infer.hmc.runner import mcmc

__all__ = [
    "HMC",
    "NUTS",
    "BlockMetric",
    "DenseMetric",
    "DiagonalMetric",
    "Kernel",
    "MCMCResult",
    "Metric",
    "dual_averaging",
    "find_reasonable_epsilon",
    "hmc_step",
    "mcmc",
    "model_to_neg_log_prob_closure",
    "nuts_step",
]
