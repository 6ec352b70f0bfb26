"""The metric of Hamiltonian Monte Carlo: the mass matrix of the kinetic energy.

A Euclidean metric gives momenta the distribution ``Normal(0, M)`` and the kinetic
energy ``K(p) = p @ M^-1 @ p / 2``; the position moves with the *velocity*
``M^-1 p``. Since ``K(p) = p @ velocity(p) / 2`` for every such metric, the samplers
compute a state's kinetic energy from the velocity they already have.

:class:`Metric` is the interface the integrator and NUTS use; :class:`DiagonalMetric`
is the diagonal mass matrix the runner adapts. A dense mass matrix is another
subclass with the same three methods.

Reference: M. Betancourt, "A Conceptual Introduction to Hamiltonian Monte Carlo",
arXiv:1701.02434, 2017, section 4.2.
"""

from __future__ import annotations

import numpy as np


class Metric:
    """The kinetic energy of a mass matrix ``M``, given by its inverse.

    Subclasses implement the three methods below on flat numpy vectors; states hold a
    metric, so it must be picklable (chains run in worker processes).
    """

    __slots__ = ()

    #: the inverse mass matrix, as the subclass stores it
    inverse_mass: np.ndarray

    def kinetic_energy(self, momentum: np.ndarray) -> float:
        """``momentum @ M^-1 @ momentum / 2``."""
        return 0.5 * float(momentum.dot(self.velocity(momentum)))

    def velocity(self, momentum: np.ndarray) -> np.ndarray:
        """``M^-1 @ momentum``, the rate of change of the position."""
        raise NotImplementedError

    def sample_momentum(self, rng: np.random.Generator) -> np.ndarray:
        """A momentum drawn from ``Normal(0, M)``."""
        raise NotImplementedError


class DiagonalMetric(Metric):
    """A diagonal mass matrix given by the diagonal of its inverse.

    Args:
        inverse_mass: the diagonal of ``M^-1`` (a positive vector); its dtype is that
            of the momenta drawn.

    Example:
        >>> import numpy as np
        >>> metric = DiagonalMetric(np.array([1.0, 4.0]))
        >>> metric.velocity(np.array([1.0, 1.0]))
        array([1., 4.])
        >>> metric.kinetic_energy(np.array([1.0, 1.0]))
        2.5
        >>> metric.sample_momentum(np.random.default_rng(0)).shape
        (2,)
    """

    __slots__ = ("_sqrt_inverse_mass", "inverse_mass")

    def __init__(self, inverse_mass: np.ndarray) -> None:
        inverse_mass = np.asarray(inverse_mass)
        if inverse_mass.ndim != 1 or not (inverse_mass > 0).all():
            raise ValueError(
                "inverse_mass must be a vector of positive numbers (the diagonal of "
                f"the inverse mass matrix), got shape {inverse_mass.shape}"
            )
        self.inverse_mass = inverse_mass
        self._sqrt_inverse_mass = np.sqrt(inverse_mass)

    @classmethod
    def identity(cls, dim: int, dtype: np.dtype | type = np.float64) -> DiagonalMetric:
        """The unit mass matrix in ``dim`` dimensions."""
        return cls(np.ones(dim, dtype=dtype))

    def kinetic_energy(self, momentum: np.ndarray) -> float:
        return 0.5 * float(momentum.dot(self.inverse_mass * momentum))

    def velocity(self, momentum: np.ndarray) -> np.ndarray:
        return self.inverse_mass * momentum

    def sample_momentum(self, rng: np.random.Generator) -> np.ndarray:
        noise = rng.standard_normal(self.inverse_mass.shape)
        return noise.astype(self.inverse_mass.dtype, copy=False) / (
            self._sqrt_inverse_mass
        )

    def __repr__(self) -> str:
        return f"DiagonalMetric(inverse_mass={self.inverse_mass!r})"


__all__ = ["DiagonalMetric", "Metric"]
