"""Dense and block mass matrices: the metrics by hand, Stan's regularised covariance
per window, and NUTS on correlated posteriors (a Gaussian, posteriordb's kidiq)."""

import numpy as np
import pytest
import torch

import borch
from borch import distributions as dist
from borch.infer import mcmc
from borch.infer.hmc.adaptation import WelfordCovariance, WindowedAdaptation
from borch.infer.hmc.metric import BlockMetric, DenseMetric, DiagonalMetric, MassLayout
from tests.infer.hmc.posteriordb import assert_matches_reference, kidiq
from tests.infer.mcmc_stats import assert_mean_within_mcse

INVERSE_MASS = np.array([[2.0, 0.6, 0.0], [0.6, 1.0, -0.3], [0.0, -0.3, 0.5]])


def test_dense_metric_by_hand():
    """M^-1 p and p M^-1 p / 2 for p = (1, -1, 2): (1.4, -1.0, 1.3) and 1.5."""
    metric = DenseMetric(INVERSE_MASS)
    momentum = np.array([1.0, -1.0, 2.0])
    np.testing.assert_allclose(metric.velocity(momentum), [1.4, -1.0, 1.3])
    assert metric.kinetic_energy(momentum) == pytest.approx(0.5 * (1.4 + 1.0 + 2.6))


def test_dense_momenta_have_the_mass_as_covariance():
    """The covariance of 20000 momenta is M = inverse(M^-1): every entry within 4
    standard errors (var of a sample covariance: (M_ij^2 + M_ii M_jj) / n)."""
    mass = np.linalg.inv(INVERSE_MASS)
    metric = DenseMetric(INVERSE_MASS)
    rng = np.random.default_rng(0)
    n = 20000
    draws = np.array([metric.sample_momentum(rng) for _ in range(n)])
    se = np.sqrt((mass**2 + np.outer(np.diag(mass), np.diag(mass))) / n)
    assert np.all(np.abs(np.cov(draws.T) - mass) < 4 * se)


@pytest.mark.parametrize(
    "bad", [np.ones(3), np.ones((2, 3)), np.array([[1.0, 2.0], [2.0, 1.0]])]
)
def test_dense_inverse_mass_must_be_positive_definite(bad):
    with pytest.raises(ValueError, match="inverse_mass must be"):
        DenseMetric(bad)


def test_block_metric_is_the_block_diagonal_matrix():
    """A dense block on (0, 2) and a diagonal on (1, 3) act as their block-diagonal
    matrix, and draw momenta of its inverse's covariance."""
    dense = np.array([[2.0, 0.5], [0.5, 1.0]])
    metric = BlockMetric(
        [
            (np.array([0, 2]), DenseMetric(dense)),
            (np.array([1, 3]), DiagonalMetric(np.array([3.0, 0.25]))),
        ]
    )
    full = np.zeros((4, 4))
    full[np.ix_([0, 2], [0, 2])] = dense
    full[1, 1], full[3, 3] = 3.0, 0.25
    np.testing.assert_array_equal(metric.inverse_mass, full)
    momentum = np.array([1.0, 2.0, -1.0, 4.0])
    np.testing.assert_allclose(metric.velocity(momentum), full @ momentum)
    assert metric.kinetic_energy(momentum) == pytest.approx(
        momentum @ full @ momentum / 2
    )
    n = 20000
    rng = np.random.default_rng(1)
    draws = np.array([metric.sample_momentum(rng) for _ in range(n)])
    mass = np.linalg.inv(full)
    se = np.sqrt((mass**2 + np.outer(np.diag(mass), np.diag(mass))) / n)
    assert np.all(np.abs(np.cov(draws.T) - mass) < 4 * se)


@pytest.mark.parametrize("blocks", [[], [[0, 1, 2]], [[0, 2]], [[1], [0, 2]]])
def test_layout_round_trips_a_matrix(blocks):
    """A layout's metric from a full matrix keeps exactly the entries of its blocks."""
    layout = MassLayout(3, blocks)
    metric = layout.from_matrix(INVERSE_MASS)
    expected = np.diag(np.diag(INVERSE_MASS))
    for block in blocks:
        expected[np.ix_(block, block)] = INVERSE_MASS[np.ix_(block, block)]
    shown = metric.inverse_mass
    np.testing.assert_array_equal(
        np.diag(shown) if shown.ndim == 1 else shown, expected
    )
    again = layout.from_matrix(shown).inverse_mass
    np.testing.assert_array_equal(again, shown)


def test_welford_covariance_is_the_sample_covariance():
    draws = np.random.default_rng(3).normal(size=(50, 3)) @ INVERSE_MASS
    welford = WelfordCovariance(3)
    for x in draws:
        welford.update(x)
    np.testing.assert_allclose(welford.covariance, np.cov(draws.T))
    n = len(draws)
    np.testing.assert_allclose(
        welford.regularized_covariance(),
        n / (n + 5) * np.cov(draws.T) + 1e-3 * 5 / (n + 5) * np.eye(3),
    )


@pytest.mark.parametrize("blocks", [[[0, 1, 2]], [[0, 2]]])
def test_windowed_adaptation_estimates_the_covariance_per_window(blocks):
    """At each window's end the dense blocks hold Stan's regularised covariance of the
    window's positions and the other coordinates the regularised variance."""
    rng = np.random.default_rng(4)
    positions = rng.normal(size=(200, 3)) @ INVERSE_MASS
    adaptation = WindowedAdaptation(200, MassLayout(3, blocks), step_size=0.5)
    changes = 0
    for iteration, position in enumerate(positions):
        if adaptation.update(iteration, position, 0.8):
            changes += 1
            start, end = next(w for w in adaptation.windows if w[1] == iteration + 1)
            n = end - start
            covariance = np.cov(positions[start:end].T)
            expected = n / (n + 5) * covariance + 1e-3 * 5 / (n + 5) * np.eye(3)
            keep = np.eye(3, dtype=bool)
            for block in blocks:
                keep[np.ix_(block, block)] = True
            np.testing.assert_allclose(
                adaptation.metric.inverse_mass, np.where(keep, expected, 0.0)
            )
            adaptation.restart(0.5)
    assert changes == len(adaptation.windows)


#: A Gaussian with correlation 0.99 between coordinates of scales 1 and 10.
SCALES = torch.tensor([1.0, 10.0], dtype=torch.float64)
CORRELATION = 0.99


class Correlated(borch.Module):
    def forward(self):
        correlation = torch.tensor(
            [[1.0, CORRELATION], [CORRELATION, 1.0]], dtype=torch.float64
        )
        covariance = correlation * torch.outer(SCALES, SCALES)
        self.x = dist.MultivariateNormal(
            torch.zeros(2, dtype=torch.float64), covariance
        )


RUN = {"num_samples": 300, "warmup": 300, "chains": 2, "seed": 0, "progress": False}


def test_dense_mass_shortens_trajectories_on_a_correlated_gaussian():
    """With a dense metric the posterior is isotropic (a couple of leapfrog steps a
    draw); a diagonal one needs trajectories about 1 / sqrt(1 - 0.99^2) = 7 times
    longer. Both sample the right means."""
    dense = mcmc(Correlated(), dense_mass=True, **RUN)
    diagonal = mcmc(Correlated(), dense_mass=False, **RUN)
    assert dense.inverse_mass_matrix.shape == (2, 2, 2)
    assert diagonal.inverse_mass_matrix.shape == (2, 2)
    dense_steps = dense.num_steps.double().mean().item()
    diagonal_steps = diagonal.num_steps.double().mean().item()
    assert dense_steps * 3 < diagonal_steps, (dense_steps, diagonal_steps)
    for result in (dense, diagonal):
        for i in range(2):
            assert_mean_within_mcse(result.samples["x"][..., i].numpy(), 0.0)
    # the adapted dense matrix is the posterior covariance (within 30%: the last window has ~150 draws)
    covariance = (torch.tensor([[1.0, CORRELATION], [CORRELATION, 1.0]])) * torch.outer(
        SCALES, SCALES
    )
    np.testing.assert_allclose(
        dense.inverse_mass_matrix[0].numpy(), covariance.numpy(), rtol=0.3
    )


def test_kidiq_with_dense_mass_matches_stan_in_few_steps():
    """posteriordb's kidiq-kidscore_momhsiq (intercept and slope at correlation
    -0.95): Stan's means and sds, in about 5 leapfrog steps per draw (NumPyro's
    dense metric takes about 5; a diagonal one needs about 30)."""
    model, args, reference = kidiq()
    result = mcmc(model, *args, dense_mass=True, **RUN)
    assert_matches_reference(result.samples, reference)
    assert result.num_steps.double().mean().item() < 7.5


def test_dense_blocks_by_name():
    """``dense_mass=[("a", "b")]`` couples a and b; c keeps a diagonal entry."""

    class Three(borch.Module):
        def forward(self):
            self.a = dist.Normal(0.0, 1.0)
            self.b = dist.Normal(self.a, 0.1)
            self.c = dist.Normal(torch.zeros(2), 1.0)

    result = mcmc(Three(), dense_mass=[("a", "b")], **{**RUN, "num_samples": 100})
    matrix = result.inverse_mass_matrix[0]
    assert matrix.shape == (4, 4)
    assert matrix[0, 1] != 0 and matrix[0, 1] == matrix[1, 0]
    off_block = matrix.clone()
    off_block[:2, :2] = 0
    assert torch.equal(off_block, torch.diag(torch.diag(off_block)))
    assert result.dense_mass == [("a", "b")]


@pytest.mark.parametrize(
    ("dense_mass", "error", "match"),
    [
        ([("a", "nope")], ValueError, r"'nope'.*not a latent.*\['a', 'b'"),
        ([("a",), ("a", "b")], ValueError, "'a' in two blocks"),
        ("a", TypeError, "list of tuples of variable names"),
    ],
)
def test_bad_dense_mass(dense_mass, error, match):
    class Two(borch.Module):
        def forward(self):
            self.a = dist.Normal(0.0, 1.0)
            self.b = dist.Normal(0.0, 1.0)

    with pytest.raises(error, match=match):
        mcmc(Two(), dense_mass=dense_mass, **RUN)
