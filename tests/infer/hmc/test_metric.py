"""The metric: kinetic energy, velocity and momenta against hand computation, and a
dense metric written against the interface alone, run through NUTS."""

import numpy as np
import pytest

from borch.infer import DiagonalMetric
from borch.infer.hmc.hamiltonian import IntegratorState, hamiltonian, initial_state
from borch.infer.hmc.metric import Metric
from borch.infer.hmc.nuts import nuts_transition
from tests.infer.mcmc_stats import assert_mean_within_mcse


def test_kinetic_energy_and_velocity_by_hand():
    """M^-1 = diag(0.5, 2, 4), p = (2, -1, 0.5): velocity (1, -2, 2) and
    K = (0.5 * 4 + 2 * 1 + 4 * 0.25) / 2 = 2.5."""
    metric = DiagonalMetric(np.array([0.5, 2.0, 4.0]))
    momentum = np.array([2.0, -1.0, 0.5])
    np.testing.assert_array_equal(metric.velocity(momentum), [1.0, -2.0, 2.0])
    assert metric.kinetic_energy(momentum) == 2.5
    state = IntegratorState(np.zeros(3), momentum, 1.25, np.zeros(3))
    assert hamiltonian(state, metric) == 3.75


def test_momenta_have_the_mass_as_covariance():
    """Variances of 20000 draws within 4 standard errors (sd of a sample variance of
    n Normal draws: sigma^2 sqrt(2 / (n - 1))) of the mass 1 / inverse_mass."""
    inverse_mass = np.array([0.25, 1.0, 9.0])
    metric = DiagonalMetric(inverse_mass)
    rng = np.random.default_rng(0)
    draws = np.array([metric.sample_momentum(rng) for _ in range(20000)])
    mass = 1 / inverse_mass
    assert np.all(np.abs(draws.var(0, ddof=1) - mass) < 4 * mass * np.sqrt(2 / 19999))
    assert np.all(np.abs(draws.mean(0)) < 4 * np.sqrt(mass / 20000))


def test_momenta_keep_the_dtype():
    metric = DiagonalMetric(np.ones(4, dtype=np.float32))
    assert metric.sample_momentum(np.random.default_rng(0)).dtype == np.float32


@pytest.mark.parametrize("bad", [np.array([1.0, 0.0]), np.ones((2, 2)), [np.nan]])
def test_inverse_mass_must_be_a_positive_vector(bad):
    with pytest.raises(ValueError, match="positive"):
        DiagonalMetric(bad)


class DenseMetric(Metric):
    """A dense mass matrix through the interface alone (as a later one will be)."""

    def __init__(self, inverse_mass):
        self.inverse_mass = inverse_mass
        self.cholesky_of_mass = np.linalg.cholesky(np.linalg.inv(inverse_mass))

    def velocity(self, momentum):
        return self.inverse_mass @ momentum

    def sample_momentum(self, rng):
        return self.cholesky_of_mass @ rng.standard_normal(len(self.inverse_mass))


def test_the_default_kinetic_energy_uses_the_velocity():
    inverse_mass = np.array([[2.0, 0.5], [0.5, 1.0]])
    momentum = np.array([1.0, -2.0])
    expected = 0.5 * momentum @ inverse_mass @ momentum
    assert DenseMetric(inverse_mass).kinetic_energy(momentum) == pytest.approx(expected)


def test_nuts_with_a_dense_metric_samples_a_correlated_gaussian():
    """With the inverse mass equal to the covariance of a strongly correlated
    Gaussian, NUTS needs short trees, and its moments are right (4 MCSE)."""
    covariance = np.array([[1.0, 0.98], [0.98, 1.0]])
    precision = np.linalg.inv(covariance)

    def potential(q):
        grad = precision @ q
        return 0.5 * float(q @ grad), grad

    metric = DenseMetric(covariance)
    rng = np.random.default_rng(2)
    state = initial_state(np.zeros(2), potential)
    draws, depths = [], []
    for _ in range(2000):
        state, info = nuts_transition(state, potential, 0.8, metric, rng)
        draws.append(state.position)
        depths.append(info.tree_depth)
    draws = np.array(draws)[None]
    assert np.mean(depths) < 3
    for k in range(2):
        assert_mean_within_mcse(draws[..., k], 0.0)
        assert_mean_within_mcse(draws[..., k] ** 2, 1.0)
    assert_mean_within_mcse(draws[..., 0] * draws[..., 1], 0.98)
