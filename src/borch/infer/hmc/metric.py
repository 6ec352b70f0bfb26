"""The metric of Hamiltonian Monte Carlo: the mass matrix of the kinetic energy.

A Euclidean metric gives momenta the distribution ``Normal(0, M)`` and the kinetic
energy ``K(p) = p @ M^-1 @ p / 2``; the position moves with the *velocity*
``M^-1 p``. Since ``K(p) = p @ velocity(p) / 2`` for every such metric, the samplers
compute a state's kinetic energy from the velocity they already have.

:class:`Metric` is the interface the integrator and NUTS use; :class:`DiagonalMetric`
is the diagonal mass matrix the runner adapts by default, :class:`DenseMetric` a dense
one (for correlated posteriors) and :class:`BlockMetric` one made of independent blocks
of coordinates, each diagonal or dense. :class:`MassLayout` says which coordinates share
a dense block.

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


class DenseMetric(Metric):
    """A dense mass matrix given by its inverse (a symmetric positive definite matrix,
    the posterior covariance the warm-up estimates).

    Momenta are drawn as ``L^-T z`` with ``L`` the Cholesky factor of ``M^-1`` and
    ``z`` standard Normal, so their covariance is ``M``.

    Example:
        >>> import numpy as np
        >>> metric = DenseMetric(np.array([[2.0, 1.0], [1.0, 2.0]]))
        >>> metric.velocity(np.array([1.0, 0.0]))
        array([2., 1.])
        >>> metric.kinetic_energy(np.array([1.0, 0.0]))
        1.0
    """

    __slots__ = ("_momentum_scale", "inverse_mass")

    def __init__(self, inverse_mass: np.ndarray) -> None:
        inverse_mass = np.asarray(inverse_mass)
        square = (
            inverse_mass.ndim == 2 and inverse_mass.shape[0] == inverse_mass.shape[1]
        )
        if not square or not np.allclose(inverse_mass, inverse_mass.T):
            raise ValueError(
                "inverse_mass must be a symmetric square matrix (the inverse mass "
                f"matrix), got shape {inverse_mass.shape}"
            )
        try:
            cholesky = np.linalg.cholesky(inverse_mass.astype(np.float64))
        except np.linalg.LinAlgError:
            raise ValueError(
                "inverse_mass must be positive definite (it has no Cholesky factor)"
            ) from None
        self.inverse_mass = inverse_mass
        scale = np.linalg.inv(cholesky).T
        self._momentum_scale = scale.astype(inverse_mass.dtype)

    def velocity(self, momentum: np.ndarray) -> np.ndarray:
        return self.inverse_mass @ momentum

    def sample_momentum(self, rng: np.random.Generator) -> np.ndarray:
        noise = rng.standard_normal(self.inverse_mass.shape[0])
        return self._momentum_scale @ noise.astype(self.inverse_mass.dtype, copy=False)

    def __repr__(self) -> str:
        return f"DenseMetric(inverse_mass={self.inverse_mass!r})"


class BlockMetric(Metric):
    """A block-diagonal mass matrix: independent metrics on sets of coordinates.

    Args:
        blocks: ``[(indices, metric), ...]``; the index arrays partition
            ``range(dim)`` and each metric has as many dimensions as its indices.

    Example:
        >>> import numpy as np
        >>> metric = BlockMetric([
        ...     (np.array([0, 2]), DenseMetric(np.array([[2.0, 1.0], [1.0, 2.0]]))),
        ...     (np.array([1]), DiagonalMetric(np.array([3.0]))),
        ... ])
        >>> metric.velocity(np.array([1.0, 1.0, 0.0]))
        array([2., 3., 1.])
        >>> metric.inverse_mass
        array([[2., 0., 1.],
               [0., 3., 0.],
               [1., 0., 2.]])
    """

    __slots__ = ("blocks", "inverse_mass")

    def __init__(self, blocks: list[tuple[np.ndarray, Metric]]) -> None:
        indices = np.concatenate([np.asarray(index) for index, _ in blocks])
        dim = indices.size
        if not np.array_equal(np.sort(indices), np.arange(dim)):
            raise ValueError(
                "the blocks' indices must partition range(dim) (each coordinate in "
                f"exactly one block), got {sorted(indices.tolist())}"
            )
        self.blocks = [(np.asarray(index), metric) for index, metric in blocks]
        dtype = blocks[0][1].inverse_mass.dtype
        self.inverse_mass = np.zeros((dim, dim), dtype=dtype)
        for index, metric in self.blocks:
            self.inverse_mass[np.ix_(index, index)] = _as_matrix(metric.inverse_mass)

    def velocity(self, momentum: np.ndarray) -> np.ndarray:
        velocity = np.empty_like(momentum)
        for index, metric in self.blocks:
            velocity[index] = metric.velocity(momentum[index])
        return velocity

    def sample_momentum(self, rng: np.random.Generator) -> np.ndarray:
        momentum = np.empty(self.inverse_mass.shape[0], self.inverse_mass.dtype)
        for index, metric in self.blocks:
            momentum[index] = metric.sample_momentum(rng)
        return momentum

    def __repr__(self) -> str:
        return f"BlockMetric(blocks={self.blocks!r})"


def _as_matrix(inverse_mass: np.ndarray) -> np.ndarray:
    return np.diag(inverse_mass) if inverse_mass.ndim == 1 else inverse_mass


class MassLayout:
    """Which coordinates of a ``dim``-dimensional position share a dense block of the
    mass matrix; every other coordinate has its own diagonal entry.

    Args:
        dim: the dimension of the position.
        dense_blocks: index arrays, disjoint; ``[]`` is a diagonal mass matrix and
            ``[range(dim)]`` a dense one.

    Example:
        >>> import numpy as np
        >>> layout = MassLayout(3, [[0, 1]])
        >>> layout.metric([np.array([[1.0, 0.5], [0.5, 1.0]])], np.array([2.0]))
        BlockMetric(...)
        >>> MassLayout(2).identity()
        DiagonalMetric(inverse_mass=array([1., 1.]))
    """

    def __init__(self, dim: int, dense_blocks: list = ()) -> None:
        self.dim = dim
        self.dense_blocks = [
            np.asarray(block, dtype=np.int64) for block in dense_blocks
        ]
        dense = (
            np.concatenate(self.dense_blocks)
            if self.dense_blocks
            else np.zeros(0, np.int64)
        )
        if np.unique(dense).size != dense.size:
            raise ValueError("the dense blocks of the mass matrix overlap")
        self.diagonal = np.setdiff1d(np.arange(dim), dense)

    @property
    def is_diagonal(self) -> bool:
        return not self.dense_blocks

    def metric(
        self, dense_inverses: list[np.ndarray], diagonal_inverse: np.ndarray
    ) -> Metric:
        """The metric with these inverse mass blocks (in the order of
        ``dense_blocks``) and this diagonal for the other coordinates."""
        if self.is_diagonal:
            return DiagonalMetric(diagonal_inverse)
        blocks = [
            (index, DenseMetric(inverse))
            for index, inverse in zip(self.dense_blocks, dense_inverses)
        ]
        if self.diagonal.size:
            blocks.append((self.diagonal, DiagonalMetric(diagonal_inverse)))
        if len(blocks) == 1 and np.array_equal(blocks[0][0], np.arange(self.dim)):
            return blocks[0][1]
        return BlockMetric(blocks)

    def identity(self, dtype: np.dtype | type = np.float64) -> Metric:
        """The unit mass matrix in this layout."""
        return self.from_matrix(np.ones(self.dim, dtype=dtype))

    def from_matrix(self, inverse_mass: np.ndarray) -> Metric:
        """The metric in this layout with the blocks of ``inverse_mass`` (a full
        ``(dim, dim)`` matrix, or its diagonal ``(dim,)``)."""
        inverse_mass = np.asarray(inverse_mass)
        if inverse_mass.shape not in ((self.dim,), (self.dim, self.dim)):
            raise ValueError(
                f"inverse_mass must have shape ({self.dim},) or ({self.dim}, "
                f"{self.dim}) for a {self.dim}-dimensional position, got "
                f"{inverse_mass.shape}"
            )
        matrix = _as_matrix(inverse_mass)
        return self.metric(
            [matrix[np.ix_(block, block)] for block in self.dense_blocks],
            np.diagonal(matrix)[self.diagonal].copy(),
        )


__all__ = ["BlockMetric", "DenseMetric", "DiagonalMetric", "MassLayout", "Metric"]
