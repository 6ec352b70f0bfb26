"""A model's potential traced once and replayed as a straight-line program.

Behind the :class:`~borch.infer.hmc.potential.Potential` protocol: the runner asks
:func:`traced_potential` for a faster potential and falls back to the eager model when
tracing is not possible.
"""

from borch.infer.hmc.traced.tracing import TracedPotential, TraceError, traced_potential

__all__ = ["TraceError", "TracedPotential", "traced_potential"]
