"""Hamiltonian dynamics: the leapfrog integrator and the HMC transition.

Positions and momenta are flat numpy vectors (see :mod:`borch.infer.hmc.potential` for
why); the kinetic energy is given by a :class:`~borch.infer.hmc.metric.Metric` (the
mass matrix). A *potential* is ``potential(position) -> (energy, gradient)``.

References:
    R. M. Neal, "MCMC using Hamiltonian dynamics", Handbook of Markov Chain Monte
    Carlo, 2011.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import NamedTuple

import numpy as np
from torch import Tensor

from borch.infer.hmc.metric import DiagonalMetric, Metric
from borch.infer.hmc.potential import ClosurePotential, Potential, as_rng, non_finite_ok
from borch.validation import check_count

#: An energy error above this marks a transition as divergent (Stan's threshold).
MAX_ENERGY_ERROR = 1000.0


class IntegratorState(NamedTuple):
    """A point of the trajectory: position, momentum, potential energy and its gradient."""

    position: np.ndarray
    momentum: np.ndarray
    potential_energy: float
    grad: np.ndarray


class HMCInfo(NamedTuple):
    """What one HMC transition did.

    ``accept_prob`` is the Metropolis acceptance probability ``min(1, exp(-dH))`` of
    the proposal, ``num_steps`` the leapfrog steps taken, ``diverging`` whether the
    energy error passed the divergence threshold (the trajectory stops there) and
    ``energy`` the Hamiltonian at the state returned.
    """

    accept_prob: float
    num_steps: int
    diverging: bool
    energy: float


def hamiltonian(state: IntegratorState, metric: Metric) -> float:
    """Total energy of a state; ``inf`` where it is not finite (NaN included)."""
    energy = state.potential_energy + metric.kinetic_energy(state.momentum)
    return energy if math.isfinite(energy) else math.inf


def leapfrog(
    state: IntegratorState, step_size: float, metric: Metric, potential: Potential
) -> IntegratorState:
    """One leapfrog (velocity Verlet) step; a negative ``step_size`` goes backwards.

    The map is volume preserving and time reversible: negating the momentum and
    stepping again returns to the start.

    Example:
        >>> import numpy as np
        >>> potential = lambda q: (0.5 * float(q @ q), q.copy())
        >>> q = np.array([1.0])
        >>> state = IntegratorState(q, np.array([0.0]), *potential(q))
        >>> leapfrog(state, 0.1, DiagonalMetric(np.ones(1)), potential).position
        array([0.995])
    """
    half = 0.5 * step_size
    momentum = state.momentum - half * state.grad
    position = state.position + step_size * metric.velocity(momentum)
    energy, grad = potential(position)
    momentum -= half * grad
    return IntegratorState(position, momentum, energy, grad)


def initial_state(position: np.ndarray, potential: Potential) -> IntegratorState:
    """The state at ``position`` with zero momentum (momenta are drawn per transition)."""
    energy, grad = potential(position)
    return IntegratorState(position, np.zeros_like(position), energy, grad)


@non_finite_ok
def hmc_transition(
    state: IntegratorState,
    potential: Potential,
    step_size: float,
    num_steps: int,
    metric: Metric,
    rng: np.random.Generator,
) -> tuple[IntegratorState, HMCInfo]:
    """One HMC transition: fresh momentum, ``num_steps`` leapfrogs, Metropolis test.

    Returns the next state and an :class:`HMCInfo`; the acceptance probability is zero
    for a divergent or non-finite trajectory, which stops early.
    """
    start = state._replace(momentum=metric.sample_momentum(rng))
    initial_energy = hamiltonian(start, metric)
    proposal = start
    for step in range(1, num_steps + 1):
        proposal = leapfrog(proposal, step_size, metric, potential)
        energy = hamiltonian(proposal, metric)
        if energy - initial_energy > MAX_ENERGY_ERROR:
            return start, HMCInfo(0.0, step, True, initial_energy)
    accept_prob = math.exp(min(0.0, initial_energy - energy))
    if rng.random() < accept_prob:
        return proposal, HMCInfo(accept_prob, num_steps, False, energy)
    return start, HMCInfo(accept_prob, num_steps, False, initial_energy)


def hmc_step(
    epsilon: float,
    L: int,
    parameters: Iterable[Tensor],
    closure: Callable[[], Tensor],
) -> float:
    """One HMC transition that moves ``parameters`` in place.

    Args:
        epsilon: the leapfrog step size.
        L: the number of leapfrog steps.
        parameters: leaf tensors with ``requires_grad=True``, the coordinates.
        closure: returns the *negative* log density of the current ``parameters`` (a
            loss, as for a ``torch.optim`` closure).

    Returns:
        The acceptance probability of the proposal (a float in [0, 1]). The mass
        matrix is the identity; random numbers are seeded from torch's global
        generator, so ``torch.manual_seed`` makes runs repeatable.

    Reference: R. M. Neal, "MCMC using Hamiltonian dynamics", 2011.

    Example:
        >>> import torch
        >>> torch.manual_seed(0)
        <torch._C.Generator object at ...>
        >>> x = torch.zeros(2, requires_grad=True)
        >>> draws = []
        >>> for _ in range(300):
        ...     accept = hmc_step(0.5, 5, [x], lambda: 0.5 * (x**2).sum())
        ...     draws.append(x.detach().clone())
        >>> round(torch.stack(draws).var().item(), 1)  # a standard Normal
        1.0
    """
    epsilon, L = check_step_size(epsilon), check_num_steps(L, "L")
    potential = ClosurePotential(parameters, closure)
    start = closure_start(potential)
    metric = DiagonalMetric(np.ones_like(start.position))
    state, info = hmc_transition(start, potential, epsilon, L, metric, as_rng(None))
    potential.set_position(state.position)
    return info.accept_prob


def closure_start(potential: ClosurePotential) -> IntegratorState:
    """The state at the parameters' current values; an error if the closure is not
    finite there (no sampler can start from it)."""
    state = initial_state(potential.position(), potential)
    if not (math.isfinite(state.potential_energy) and np.isfinite(state.grad).all()):
        raise ValueError(
            "closure() (the negative log density) or its gradient is not finite at the "
            f"current parameters (value {state.potential_energy}); start from a point "
            "inside the support"
        )
    return state


def check_step_size(epsilon: float) -> float:
    """Validate a step size (a positive finite number)."""
    epsilon = float(epsilon)
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise ValueError(f"epsilon (the step size) must be positive, got {epsilon}")
    return epsilon


def check_num_steps(num_steps: int, name: str = "num_steps") -> int:
    """Validate a number of leapfrog steps (a positive int)."""
    return check_count(name, num_steps, minimum=1)


__all__ = [
    "MAX_ENERGY_ERROR",
    "HMCInfo",
    "IntegratorState",
    "check_num_steps",
    "check_step_size",
    "closure_start",
    "hamiltonian",
    "hmc_step",
    "hmc_transition",
    "initial_state",
    "leapfrog",
]
