"""NUTS transitions: the invariant distribution, the tree and its statistics, and the
low-level ``nuts_step`` API."""

import math

import numpy as np
import pytest
import torch

from borch.infer import dual_averaging, find_reasonable_epsilon, nuts_step
from borch.infer.hmc.hamiltonian import initial_state
from borch.infer.hmc.metric import DiagonalMetric
from borch.infer.hmc.nuts import nuts_transition
from tests.infer.mcmc_stats import assert_mean_within_mcse, rhat


def gaussian_potential(covariance):
    precision = np.linalg.inv(covariance)

    def potential(q):
        grad = precision @ q
        return 0.5 * float(q @ grad), grad

    return potential


def run(potential, dim, step_size, inv_mass, draws, chains=4, seed=0, depth=10):
    """``(chains, draws, dim)`` positions and the per-transition infos."""
    positions = np.empty((chains, draws, dim))
    metric = DiagonalMetric(inv_mass)
    infos = []
    for chain in range(chains):
        rng = np.random.default_rng([seed, chain])
        state = initial_state(rng.normal(size=dim), potential)
        for i in range(draws):
            state, info = nuts_transition(
                state, potential, step_size, metric, rng, depth
            )
            positions[chain, i] = state.position
            infos.append(info)
    return positions, infos


COVARIANCES = {
    "correlated": np.array([[1.0, 0.95], [0.95, 1.0]]),
    "anisotropic": np.diag([0.25, 1.0, 4.0]),
}


@pytest.mark.parametrize("name", sorted(COVARIANCES))
def test_nuts_leaves_the_gaussian_invariant(name):
    """Means, variances and the covariance of the first two coordinates within 4
    Monte Carlo standard errors (ESS-based) of the exact values, with r-hat < 1.01.
    The mass matrix is the identity so the sampler must handle the geometry itself."""
    covariance = COVARIANCES[name]
    dim = len(covariance)
    scale = math.sqrt(np.linalg.eigvalsh(covariance).min())
    positions, infos = run(
        gaussian_potential(covariance), dim, 0.5 * scale, np.ones(dim), draws=600
    )
    assert not any(info.diverging for info in infos)
    for k in range(dim):
        assert_mean_within_mcse(positions[..., k], 0.0)
        assert_mean_within_mcse(positions[..., k] ** 2, covariance[k, k])
        assert rhat(positions[..., k]) < 1.01
    assert_mean_within_mcse(positions[..., 0] * positions[..., 1], covariance[0, 1])


def test_nuts_uses_the_mass_matrix():
    """With the inverse mass equal to the covariance, an anisotropic Gaussian is as
    easy as a standard one: short trees and correct variances."""
    variances = np.logspace(-2, 2, 6)
    potential = gaussian_potential(np.diag(variances))
    positions, infos = run(potential, 6, 0.7, variances, draws=500)
    assert np.mean([info.tree_depth for info in infos]) < 3.5
    for k in range(6):
        assert_mean_within_mcse(positions[..., k] ** 2 / variances[k], 1.0)


def test_tree_depth_and_steps_are_capped():
    """Depth limit d: at most 1 + 2 + ... + 2^(d-1) = 2^d - 1 leapfrog steps."""
    potential = gaussian_potential(np.eye(3))
    _, infos = run(potential, 3, 0.01, np.ones(3), draws=20, chains=1, depth=3)
    assert all(info.tree_depth == 3 and info.num_steps == 7 for info in infos)


def test_trajectories_stop_at_the_u_turn():
    """On the unit harmonic oscillator a U-turn happens after about half a period
    (pi / step_size = 63 steps at step 0.05): trees stop at depth 6 or 7, far from
    the limit of 10."""
    potential = gaussian_potential(np.eye(1))
    _, infos = run(potential, 1, 0.05, np.ones(1), draws=200, chains=1)
    depths = [info.tree_depth for info in infos]
    assert max(depths) <= 7
    assert np.mean(depths) > 4


def test_energy_and_acceptance_statistics():
    """``energy`` is the Hamiltonian of the chosen state; acceptance in (0, 1]."""
    potential = gaussian_potential(np.eye(2))
    rng = np.random.default_rng(4)
    state = initial_state(np.array([0.5, -0.2]), potential)
    new, info = nuts_transition(state, potential, 0.3, DiagonalMetric(np.ones(2)), rng)
    assert 0.0 < info.accept_prob <= 1.0
    assert info.energy >= new.potential_energy
    assert info.num_steps >= 1
    assert not info.diverging


def test_divergence_is_detected():
    """An energy jump of 1e6 after any move marks the transition divergent and
    keeps the current state."""

    def cliff(q):
        return (0.0 if np.abs(q).max() < 1e-9 else 1e6), np.zeros_like(q)

    state = initial_state(np.zeros(2), cliff)
    metric = DiagonalMetric(np.ones(2))
    new, info = nuts_transition(state, cliff, 0.1, metric, np.random.default_rng(0))
    assert info.diverging
    assert info.tree_depth == 0
    assert info.num_steps == 1
    np.testing.assert_array_equal(new.position, state.position)


def test_nan_energy_counts_as_divergent():
    def broken(q):
        return (0.0 if np.abs(q).max() < 1e-9 else math.nan), np.zeros_like(q)

    state = initial_state(np.zeros(1), broken)
    metric = DiagonalMetric(np.ones(1))
    _, info = nuts_transition(state, broken, 0.1, metric, np.random.default_rng(0))
    assert info.diverging
    assert info.accept_prob == 0.0


def test_the_documented_low_level_loop():
    """The loop from the original's documentation samples Normal(2, 0.5^2) in 3
    dimensions: mean within 4 MCSE after warm-up."""
    torch.manual_seed(0)
    x = torch.zeros(3, dtype=torch.float64, requires_grad=True)

    def closure():
        return (0.5 * ((x - 2.0) / 0.5) ** 2).sum()

    parameters, warmup, N = [x], 200, 1200
    eps0, eps_bar, h_bar = find_reasonable_epsilon(parameters, closure)
    eps, draws, accepts = eps0, [], []
    for i in range(1, N):
        accept = nuts_step(eps, parameters, closure)
        if i < warmup:
            eps, eps_bar, h_bar = dual_averaging(accept, i, eps0, eps_bar, h_bar)
        else:
            eps = eps_bar
            draws.append(x.detach().numpy().copy())
            accepts.append(accept)
    draws = np.array(draws)
    for k in range(3):
        assert_mean_within_mcse(draws[None, :, k], 2.0)
        assert_mean_within_mcse((draws[None, :, k] - 2.0) ** 2, 0.25)
    assert 0.6 < np.mean(accepts) <= 1.0


def test_nuts_step_is_repeatable_from_torch_seed():
    def once():
        torch.manual_seed(5)
        x = torch.zeros(2, requires_grad=True)
        for _ in range(5):
            nuts_step(0.3, [x], lambda: (x**2).sum())
        return x.detach().clone()

    assert torch.equal(once(), once())


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"epsilon": -1.0}, ValueError, "epsilon"),
        ({"max_tree_depth": 0}, ValueError, "max_tree_depth must be a positive int"),
        ({"max_tree_depth": 2.5}, TypeError, "max_tree_depth must be a positive int"),
    ],
)
def test_nuts_step_rejects_bad_input(kwargs, error, match):
    x = torch.zeros(2, requires_grad=True)
    arguments = {"epsilon": 0.1, "parameters": [x], "closure": lambda: (x**2).sum()}
    arguments.update(kwargs)
    with pytest.raises(error, match=match):
        nuts_step(**arguments)
