"""Fast paths for the commonest torch distributions; depends on torch alone.

A training step builds, draws from and evaluates a handful of Normal, LogNormal and
Categorical distributions, and on small models the count of torch operations is the
step's cost. Each module here does one of those jobs with fewer operations than torch
and the same values (the tests check them against torch in value and gradient):

* :mod:`~borch.fastpath.construction` builds distributions without a no-op broadcast;
* :mod:`~borch.fastpath.draws` draws and remembers the noise of each draw;
* :mod:`~borch.fastpath.log_density` evaluates log-densities, from that noise where
  it can;
* :mod:`~borch.fastpath.kl` sums Normal KL divergences in closed form;
* :mod:`~borch.fastpath.shapes` broadcasts shapes without torch's dispatch cost;
* :mod:`~borch.fastpath.memo` is the one cache all of them share.
"""

from borch.fastpath.construction import construct, log_scale_of, remember_log_scale
from borch.fastpath.draws import draw, log_of, standard_noise
from borch.fastpath.kl import normal_kl_sum
from borch.fastpath.log_density import log_density
from borch.fastpath.shapes import broadcast_shapes

__all__ = [
    "broadcast_shapes",
    "construct",
    "draw",
    "log_density",
    "log_of",
    "log_scale_of",
    "normal_kl_sum",
    "remember_log_scale",
    "standard_noise",
]
