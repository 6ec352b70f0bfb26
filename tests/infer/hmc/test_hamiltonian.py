"""The leapfrog integrator against exact solutions, and the HMC transition.

Float64 throughout, so exactness checks can use tolerances near machine precision.
"""

import math

import numpy as np
import pytest
import torch

from borch.infer import hmc_step
from borch.infer.hmc.hamiltonian import (
    IntegratorState,
    hamiltonian,
    hmc_transition,
    initial_state,
    leapfrog,
)
from borch.infer.hmc.metric import DiagonalMetric
from tests.infer.mcmc_stats import assert_mean_within_mcse


def oscillator(q):
    """Harmonic oscillator potential ``q**2 / 2`` (unit frequency)."""
    return 0.5 * float(q @ q), q.copy()


def quartic(q):
    """An anharmonic potential, for tests that should not rely on linearity."""
    return float((q**4).sum() / 4 + (q**2).sum() / 2), q**3 + q


def trajectory(state, step_size, steps, potential):
    metric = DiagonalMetric(np.ones_like(state.position))
    states = [state]
    for _ in range(steps):
        states.append(leapfrog(states[-1], step_size, metric, potential))
    return states


def start(q, p, potential):
    q = np.asarray(q, dtype=np.float64)
    return initial_state(q, potential)._replace(momentum=np.asarray(p, np.float64))


@pytest.mark.parametrize(("h", "steps"), [(0.1, 1), (0.1, 37), (0.7, 10), (1.9, 5)])
def test_leapfrog_is_the_exact_discrete_map_of_the_harmonic_oscillator(h, steps):
    """For U = q^2/2 one leapfrog step is the linear map
    [[1 - h^2/2, h], [-h (1 - h^2/4), 1 - h^2/2]] on (q, p)."""
    step = np.array([[1 - h**2 / 2, h], [-h * (1 - h**2 / 4), 1 - h**2 / 2]])
    exact = np.linalg.matrix_power(step, steps) @ np.array([0.3, -1.2])
    end = trajectory(start([0.3], [-1.2], oscillator), h, steps, oscillator)[-1]
    np.testing.assert_allclose([end.position[0], end.momentum[0]], exact, atol=1e-12)


def test_leapfrog_converges_to_the_true_flow_at_second_order():
    """The error against q(t) = q0 cos t + p0 sin t at t = 1 shrinks 4x when h halves."""
    q0, p0 = 0.8, 0.5
    errors = []
    for h in (0.02, 0.01, 0.005):
        end = trajectory(start([q0], [p0], oscillator), h, round(1 / h), oscillator)[-1]
        exact = np.array([q0 * math.cos(1) + p0 * math.sin(1)])
        errors.append(abs(end.position[0] - exact[0]))
    ratios = [errors[0] / errors[1], errors[1] / errors[2]]
    assert all(3.8 < r < 4.2 for r in ratios), ratios


def test_energy_error_stays_bounded_on_an_anisotropic_gaussian():
    """Leapfrog conserves a nearby 'shadow' energy: the error is O(h^2) and does not
    drift, so the worst error over the second half of a long run is no larger than
    over the first half (up to rounding)."""
    scales = np.array([1.0, 0.3])

    def gaussian(q):
        return 0.5 * float(((q / scales) ** 2).sum()), q / scales**2

    h = 0.05
    states = trajectory(start([1.0, 0.5], [0.2, -1.0], gaussian), h, 4000, gaussian)
    metric = DiagonalMetric(np.ones(2))
    h0 = hamiltonian(states[0], metric)
    errors = np.array([abs(hamiltonian(s, metric) - h0) for s in states])
    assert errors.max() < (h / scales.min()) ** 2
    assert errors[2000:].max() <= errors[:2000].max() * 1.01


@pytest.mark.parametrize("potential", [oscillator, quartic])
def test_leapfrog_is_reversible(potential):
    """L steps, negate the momentum, L steps: back at the start."""
    first = start([0.4, -1.1, 2.0], [1.0, 0.3, -0.7], potential)
    forward = trajectory(first, 0.05, 50, potential)[-1]
    back = trajectory(forward._replace(momentum=-forward.momentum), 0.05, 50, potential)
    np.testing.assert_allclose(back[-1].position, first.position, atol=1e-10)
    np.testing.assert_allclose(-back[-1].momentum, first.momentum, atol=1e-10)


def test_negative_step_size_runs_backwards():
    first = start([0.4, -1.1], [1.0, 0.3], quartic)
    forward = trajectory(first, 0.1, 20, quartic)[-1]
    back = trajectory(forward, -0.1, 20, quartic)[-1]
    np.testing.assert_allclose(back.position, first.position, atol=1e-10)


def test_leapfrog_preserves_volume():
    """The Jacobian determinant of 10 steps on a non-linear potential is 1
    (central finite differences, error ~1e-8)."""

    def flow(z):
        state = start(z[:2], z[2:], quartic)
        end = trajectory(state, 0.1, 10, quartic)[-1]
        return np.concatenate([end.position, end.momentum])

    z0, delta = np.array([0.3, -0.6, 0.9, 0.1]), 1e-5
    jacobian = np.stack(
        [
            (flow(z0 + delta * e) - flow(z0 - delta * e)) / (2 * delta)
            for e in np.eye(4)
        ],
        axis=1,
    )
    assert abs(np.linalg.det(jacobian) - 1) < 1e-6


def test_mass_matrix_scales_the_velocity():
    """With inverse mass m, the position moves by h * m * p for zero gradient."""

    def flat(q):
        return 0.0, np.zeros_like(q)

    state = IntegratorState(np.zeros(2), np.array([1.0, 1.0]), 0.0, np.zeros(2))
    end = leapfrog(state, 0.5, DiagonalMetric(np.array([1.0, 4.0])), flat)
    np.testing.assert_allclose(end.position, [0.5, 2.0])


def test_hmc_transition_rejects_divergent_trajectories():
    """A potential that jumps by 1e6 away from the origin gives zero acceptance."""

    def cliff(q):
        return (0.0 if abs(q[0]) < 0.01 else 1e6), np.zeros_like(q)

    state = initial_state(np.zeros(1), cliff)
    rng = np.random.default_rng(0)
    new, info = hmc_transition(state, cliff, 1.0, 3, DiagonalMetric(np.ones(1)), rng)
    assert info.accept_prob == 0.0
    assert info.diverging
    assert info.num_steps == 1
    assert new.position[0] == 0.0


def test_hmc_step_samples_a_gaussian():
    """Mean and variance of Normal(3, 2) within 4 Monte Carlo standard errors
    (ArviZ's ESS-based MCSE; the variance through the draws' squared deviations)."""
    torch.manual_seed(3)
    x = torch.zeros(1, dtype=torch.float64, requires_grad=True)

    def closure():
        return (0.5 * ((x - 3.0) / 2.0) ** 2).sum()

    draws = []
    for _ in range(800):
        accept = hmc_step(1.2, 3, [x], closure)
        assert 0.0 <= accept <= 1.0
        draws.append(x.item())
    draws = np.array(draws)[None]
    assert_mean_within_mcse(draws, 3.0)
    assert_mean_within_mcse((draws - 3.0) ** 2, 4.0)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"epsilon": 0.0}, ValueError, "epsilon"),
        ({"epsilon": float("nan")}, ValueError, "epsilon"),
        ({"L": 0}, ValueError, "L must be a positive int, got 0"),
        ({"L": 2.5}, TypeError, "L must be a positive int, got 2.5"),
        ({"parameters": []}, ValueError, "empty"),
        ({"parameters": [torch.zeros(2)]}, ValueError, "requires_grad"),
        ({"parameters": [torch.zeros(2, dtype=torch.long)]}, TypeError, "floating"),
        ({"parameters": [[0.0]]}, TypeError, "tensor"),
        ({"closure": "loss"}, TypeError, "callable"),
        ({"closure": lambda: torch.zeros(3, requires_grad=True)}, TypeError, "scalar"),
        ({"closure": lambda: torch.tensor(1.0)}, ValueError, "without gradient"),
        (
            {"closure": lambda: torch.tensor(float("inf"), requires_grad=True)},
            ValueError,
            "not finite",
        ),
    ],
)
def test_hmc_step_rejects_bad_input(kwargs, error, match):
    x = torch.zeros(2, requires_grad=True)
    arguments = {
        "epsilon": 0.1,
        "L": 3,
        "parameters": [x],
        "closure": lambda: (x**2).sum(),
    }
    arguments.update(kwargs)
    with pytest.raises(error, match=match):
        hmc_step(**arguments)
