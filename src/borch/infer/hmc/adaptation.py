"""Warm-up adaptation: step size by dual averaging, a diagonal or dense mass matrix
from running (co)variance estimates, and Stan's schedule of adaptation windows.

References:
    M. D. Hoffman and A. Gelman, "The No-U-Turn Sampler", JMLR 15, 2014
    (Algorithms 4 and 5: the initial step size heuristic and dual averaging).
    B. P. Welford, "Note on a method for calculating corrected sums of squares and
    products", Technometrics 4, 1962.
    Stan Reference Manual, "HMC algorithm parameters: automatic parameter tuning"
    (the windowed warm-up and the regularisation of the variance estimate).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np
from torch import Tensor

from borch.infer.hmc.hamiltonian import (
    IntegratorState,
    closure_start,
    hamiltonian,
    leapfrog,
)
from borch.infer.hmc.metric import DiagonalMetric, MassLayout, Metric
from borch.infer.hmc.potential import ClosurePotential, Potential, as_rng, non_finite_ok

#: Doublings/halvings the step size heuristic tries before giving up.
_MAX_HEURISTIC_STEPS = 100


def dual_averaging(
    accept_prob: float,
    m: int,
    initial_epsilon: float,
    epsilon_bar: float,
    h_bar: float,
    delta: float = 0.8,
    gamma: float = 0.05,
    t0: float = 10,
    kappa: float = 0.75,
) -> tuple[float, float, float]:
    """One update of the dual averaging step size adaptation.

    Args:
        accept_prob: the acceptance statistic of iteration ``m``.
        m: the iteration number, starting at 1.
        initial_epsilon: the step size adaptation started from (it sets the point
            ``log(10 * initial_epsilon)`` the iterates shrink towards).
        epsilon_bar: the averaged step size so far (1 at the start).
        h_bar: the averaged gap ``delta - accept_prob`` so far (0 at the start).
        delta: the target acceptance statistic.
        gamma, t0, kappa: the shrinkage, the stabilisation offset and the decay of the
            averaging weights (Hoffman and Gelman's defaults).

    Returns:
        ``(epsilon, epsilon_bar, h_bar)``: the step size to use next, the averaged step
        size (use it after warm-up) and the new ``h_bar``.

    Reference: Hoffman and Gelman, "The No-U-Turn Sampler", 2014, Algorithm 5.

    Example:
        >>> eps_bar, h_bar = 1.0, 0.0
        >>> for m in range(1, 51):  # too few acceptances: the step size shrinks
        ...     eps, eps_bar, h_bar = dual_averaging(0.2, m, 1.0, eps_bar, h_bar)
        >>> eps < 1.0
        True
    """
    if isinstance(m, bool) or int(m) != m or m < 1:
        raise ValueError(f"m (the iteration number) must be an integer >= 1, got {m}")
    if not 0.0 <= accept_prob <= 1.0:
        raise ValueError(f"accept_prob must be in [0, 1], got {accept_prob}")
    if not (initial_epsilon > 0 and epsilon_bar > 0):
        raise ValueError(
            "initial_epsilon and epsilon_bar must be positive, got "
            f"{initial_epsilon} and {epsilon_bar}"
        )
    mu = math.log(10.0 * initial_epsilon)
    eta = 1.0 / (m + t0)
    h_bar = (1.0 - eta) * h_bar + eta * (delta - accept_prob)
    log_epsilon = mu - math.sqrt(m) / gamma * h_bar
    weight = m ** (-kappa)
    log_epsilon_bar = weight * log_epsilon + (1.0 - weight) * math.log(epsilon_bar)
    return math.exp(log_epsilon), math.exp(log_epsilon_bar), h_bar


class DualAveraging:
    """Stateful step size adaptation around :func:`dual_averaging`.

    Args:
        step_size: where to start (the heuristic's result).
        target_accept: the target mean acceptance statistic.

    Example:
        >>> adapt = DualAveraging(1.0, target_accept=0.8)
        >>> for _ in range(50):
        ...     step_size = adapt.update(0.95)  # everything is accepted: grow
        >>> adapt.final_step_size > 1.0
        True
    """

    def __init__(self, step_size: float, target_accept: float = 0.8) -> None:
        self.target_accept = target_accept
        self.restart(step_size)

    def restart(self, step_size: float) -> None:
        """Start anew from ``step_size`` (after the mass matrix changed)."""
        self.initial_step_size = float(step_size)
        self.step_size = float(step_size)
        self.final_step_size = 1.0
        self.h_bar = 0.0
        self.count = 0

    def update(self, accept_prob: float) -> float:
        """Learn from one acceptance statistic; return the next step size."""
        self.count += 1
        self.step_size, self.final_step_size, self.h_bar = dual_averaging(
            min(1.0, max(0.0, accept_prob)),
            self.count,
            self.initial_step_size,
            self.final_step_size,
            self.h_bar,
            delta=self.target_accept,
        )
        return self.step_size


@non_finite_ok
def initial_step_size(
    state: IntegratorState,
    potential: Potential,
    metric: Metric,
    rng: np.random.Generator,
    step_size: float = 1.0,
) -> float:
    """A step size whose single leapfrog step has acceptance about 1/2.

    Doubles (or halves) ``step_size`` until the Metropolis ratio of one leapfrog step
    from ``state`` with a fresh momentum crosses 1/2. Non-finite energies count as
    rejections, so the result is always a step size with a finite trajectory.

    Reference: Hoffman and Gelman, "The No-U-Turn Sampler", 2014, Algorithm 4.
    """
    start = state._replace(momentum=metric.sample_momentum(rng))
    energy = hamiltonian(start, metric)

    def log_ratio(eps: float) -> float:
        proposal = leapfrog(start, eps, metric, potential)
        if not np.isfinite(proposal.grad).all():
            return -math.inf
        return energy - hamiltonian(proposal, metric)

    current = log_ratio(step_size)
    direction = 1 if current > math.log(0.5) else -1
    for _ in range(_MAX_HEURISTIC_STEPS):
        if direction * current <= -direction * math.log(2.0):
            return step_size
        step_size *= 2.0**direction
        current = log_ratio(step_size)
    if direction < 0 and not math.isfinite(current):
        raise ValueError(
            "no step size gives a finite energy after one leapfrog step from the "
            f"current position (tried down to {step_size:.3g}): the log density or "
            "its gradient is not finite near it"
        )
    return step_size


def find_reasonable_epsilon(
    parameters: Iterable[Tensor], closure: Callable[[], Tensor]
) -> tuple[float, float, float]:
    """A starting step size for :func:`hmc_step` / :func:`nuts_step`.

    Args:
        parameters: leaf tensors with ``requires_grad=True`` (left unchanged).
        closure: returns the *negative* log density of the current ``parameters``.

    Returns:
        ``(epsilon, epsilon_bar, h_bar)``: the step size and the initial state of
        :func:`dual_averaging` (``epsilon_bar=1``, ``h_bar=0``). The momentum is drawn
        with a generator seeded from torch's global one.

    Reference: Hoffman and Gelman, "The No-U-Turn Sampler", 2014, Algorithm 4.

    Example:
        >>> import torch
        >>> torch.manual_seed(0)
        <torch._C.Generator object at ...>
        >>> x = torch.zeros(3, requires_grad=True)
        >>> eps, eps_bar, h_bar = find_reasonable_epsilon([x], lambda: (x**2).sum() / 2)
        >>> eps, eps_bar, h_bar
        (2.0, 1.0, 0.0)
    """
    potential = ClosurePotential(parameters, closure)
    start = closure_start(potential)
    try:
        metric = DiagonalMetric(np.ones_like(start.position))
        epsilon = initial_step_size(start, potential, metric, as_rng(None))
    finally:
        potential.set_position(start.position)
    return epsilon, 1.0, 0.0


class WelfordVariance:
    """Running mean and variance of vectors, one pass, numerically stable.

    Example:
        >>> import numpy as np
        >>> welford = WelfordVariance(2)
        >>> for x in np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 3.0]]):
        ...     welford.update(x)
        >>> welford.mean, welford.variance
        (array([2., 1.]), array([1., 3.]))
    """

    def __init__(self, dim: int, dtype: np.dtype | type = np.float64) -> None:
        self.dim, self.dtype = dim, dtype
        self.reset()

    def reset(self) -> None:
        """Forget every vector seen."""
        self.count = 0
        self.mean = np.zeros(self.dim, dtype=self.dtype)
        self._m2 = np.zeros(self.dim, dtype=self.dtype)

    def update(self, x: np.ndarray) -> None:
        """Add one vector."""
        self.count += 1
        delta = x - self.mean
        self.mean = self.mean + delta / self.count
        self._m2 = self._m2 + delta * (x - self.mean)

    @property
    def variance(self) -> np.ndarray:
        """The sample variance (denominator ``count - 1``)."""
        if self.count < 2:
            raise ValueError(f"the variance needs 2 or more vectors, got {self.count}")
        return self._m2 / (self.count - 1)

    def regularized_variance(self) -> np.ndarray:
        """Stan's estimate for the inverse mass matrix: the variance shrunk towards
        ``1e-3`` with the weight of 5 pseudo-observations."""
        return _shrink(self.count, self.variance, 1e-3)


def _shrink(n: int, estimate: np.ndarray, target: np.ndarray | float) -> np.ndarray:
    """Stan's regularisation: ``n / (n + 5)`` of the estimate plus ``5 / (n + 5)``
    of a small target."""
    return (n / (n + 5.0)) * estimate + (5.0 / (n + 5.0)) * target


class WelfordCovariance:
    """Running mean and covariance matrix of vectors, one pass (Welford's update of
    the sums of products).

    Example:
        >>> import numpy as np
        >>> welford = WelfordCovariance(2)
        >>> for x in np.array([[1.0, 2.0], [2.0, 4.0], [3.0, 6.0]]):
        ...     welford.update(x)
        >>> welford.covariance
        array([[1., 2.],
               [2., 4.]])
    """

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.reset()

    def reset(self) -> None:
        """Forget every vector seen."""
        self.count = 0
        self.mean = np.zeros(self.dim)
        self._m2 = np.zeros((self.dim, self.dim))

    def update(self, x: np.ndarray) -> None:
        """Add one vector."""
        self.count += 1
        delta = x - self.mean
        self.mean = self.mean + delta / self.count
        self._m2 = self._m2 + np.outer(x - self.mean, delta)

    @property
    def covariance(self) -> np.ndarray:
        """The sample covariance (denominator ``count - 1``)."""
        if self.count < 2:
            raise ValueError(
                f"the covariance needs 2 or more vectors, got {self.count}"
            )
        covariance = self._m2 / (self.count - 1)
        return (covariance + covariance.T) / 2

    def regularized_covariance(self) -> np.ndarray:
        """Stan's estimate for a dense inverse mass matrix: the covariance shrunk
        towards ``1e-3 * I`` with the weight of 5 pseudo-observations."""
        return _shrink(self.count, self.covariance, 1e-3 * np.eye(self.dim))


class MetricEstimator:
    """The (co)variance of the draws of a window in the blocks of a
    :class:`~borch.infer.hmc.metric.MassLayout`, and the metric it gives.

    Example:
        >>> import numpy as np
        >>> estimator = MetricEstimator(MassLayout(3, [[0, 1]]))
        >>> for x in np.random.default_rng(0).standard_normal((20, 3)):
        ...     estimator.update(x)
        >>> estimator.metric(np.float64).inverse_mass.shape
        (3, 3)
    """

    def __init__(self, layout: MassLayout) -> None:
        self.layout = layout
        self.dense = [WelfordCovariance(block.size) for block in layout.dense_blocks]
        self.diagonal = WelfordVariance(layout.diagonal.size)

    def update(self, position: np.ndarray) -> None:
        """Add one draw."""
        for block, welford in zip(self.layout.dense_blocks, self.dense):
            welford.update(position[block])
        if self.layout.diagonal.size:
            self.diagonal.update(position[self.layout.diagonal])

    def metric(self, dtype: np.dtype | type) -> Metric:
        """The regularised estimate of the window as a metric; starts a new window."""
        dense = [w.regularized_covariance().astype(dtype) for w in self.dense]
        diagonal = (
            self.diagonal.regularized_variance().astype(dtype)
            if self.layout.diagonal.size
            else np.zeros(0, dtype)
        )
        for welford in (*self.dense, self.diagonal):
            welford.reset()
        return self.layout.metric(dense, diagonal)


def warmup_windows(
    num_warmup: int, init_buffer: int = 75, term_buffer: int = 50, base_window: int = 25
) -> list[tuple[int, int]]:
    """Stan's slow adaptation windows ``[(start, end), ...]`` (end exclusive).

    After an initial fast window of ``init_buffer`` iterations (step size only), the
    mass matrix is estimated over windows of ``base_window``, twice that, and so on;
    the last one is stretched to end ``term_buffer`` iterations before the end of
    warm-up (a final fast window). Short warm-ups use 15% / 75% / 10%; under 20
    iterations there is no slow window.

    Example:
        >>> warmup_windows(1000)
        [(75, 100), (100, 150), (150, 250), (250, 450), (450, 950)]
    """
    if num_warmup < 20:
        return []
    if init_buffer + base_window + term_buffer > num_warmup:
        init_buffer = int(0.15 * num_warmup)
        term_buffer = int(0.1 * num_warmup)
        base_window = num_warmup - init_buffer - term_buffer
    windows = []
    start, size, last = init_buffer, base_window, num_warmup - term_buffer
    while start < last:
        end = start + size
        if end + 2 * size > last:
            end = last
        windows.append((start, end))
        start, size = end, 2 * size
    return windows


def check_iterations(warmup: int) -> set[int]:
    """The warm-up iterations after which a traced potential is compared with the
    model: the first, the last of every adaptation window, and the last.

    Example:
        >>> sorted(check_iterations(1000))
        [0, 99, 149, 249, 449, 949, 999]
    """
    ends = {end - 1 for _, end in warmup_windows(warmup)}
    return {i for i in {0, warmup - 1, *ends} if 0 <= i < warmup}


class WindowedAdaptation:
    """Stan-style warm-up: dual averaging throughout, the mass matrix per window.

    Args:
        num_warmup: the number of warm-up iterations.
        dim: the dimension of the position.
        step_size: the initial step size.
        target_accept: the target mean acceptance statistic.
        dtype: of the inverse mass matrix (the running estimates use float64).

    Call :meth:`update` after every warm-up iteration. When it returns ``True`` the
    inverse mass matrix has just changed: find a new initial step size for it and
    call :meth:`restart`. After the last warm-up iteration, ``step_size`` is the
    averaged step size to sample with, and ``metric`` the last estimate.
    """

    def __init__(
        self,
        num_warmup: int,
        layout: int | MassLayout,
        step_size: float,
        target_accept: float = 0.8,
        dtype: np.dtype | type = np.float64,
    ) -> None:
        self.num_warmup = num_warmup
        self.windows = warmup_windows(num_warmup)
        self.window_ends = {end for _, end in self.windows}
        self.dtype = dtype
        layout = MassLayout(layout) if isinstance(layout, int) else layout
        self.metric = layout.identity(dtype)
        self.estimator = MetricEstimator(layout)
        self.dual_averaging = DualAveraging(step_size, target_accept)
        self.step_size = float(step_size)

    def in_window(self, iteration: int) -> bool:
        """Whether ``iteration`` (from 0) falls in a slow window."""
        return any(start <= iteration < end for start, end in self.windows)

    def update(self, iteration: int, position: np.ndarray, accept_prob: float) -> bool:
        """Learn from warm-up ``iteration`` (from 0); return whether the metric changed."""
        self.step_size = self.dual_averaging.update(accept_prob)
        if self.in_window(iteration):
            self.estimator.update(position)
        changed = False
        if iteration + 1 in self.window_ends:
            self.metric = self.estimator.metric(self.dtype)
            changed = True
        if iteration + 1 == self.num_warmup:
            self.step_size = self.dual_averaging.final_step_size
        return changed

    def restart(self, step_size: float) -> None:
        """Restart the step size adaptation from ``step_size``."""
        self.dual_averaging.restart(step_size)
        self.step_size = float(step_size)


__all__ = [
    "DualAveraging",
    "MetricEstimator",
    "WelfordCovariance",
    "WelfordVariance",
    "WindowedAdaptation",
    "check_iterations",
    "dual_averaging",
    "find_reasonable_epsilon",
    "initial_step_size",
    "warmup_windows",
]
