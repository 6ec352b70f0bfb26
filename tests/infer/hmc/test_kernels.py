"""The kernel interface: ``init``/``step`` one step at a time, kernels through
``mcmc(kernel=...)``, and the runner storing whatever ``info`` a kernel returns.

Sampler checks compare means with exact posterior values within 4 Monte Carlo
standard errors (ArviZ's ESS-based MCSE; a false failure rate of about 6e-5 per check)
at fixed seeds.
"""

import math
import pickle
from typing import NamedTuple

import numpy as np
import pytest
import torch

import borch
from borch import distributions as dist
from borch.infer import HMC, NUTS, DiagonalMetric, Kernel, mcmc
from borch.infer.hmc.hamiltonian import HMCInfo
from borch.infer.hmc.kernels import HMCState, as_kernel
from borch.infer.hmc.nuts import NUTSInfo
from tests.infer.mcmc_stats import assert_mean_within_mcse
from tests.infer.models import linear_regression


def standard_normal(q):
    return 0.5 * float(q @ q), q.copy()


class RandomWalkState(NamedTuple):
    position: np.ndarray
    potential_energy: float
    potential: object


class RandomWalkInfo(NamedTuple):
    accept_prob: float
    accepted: bool
    jump: float  # a custom statistic: the length of the proposed move


class RandomWalk(Kernel):
    """Random-walk Metropolis (module level, so it pickles)."""

    def __init__(self, scale=1.0):
        self.scale = scale

    def init(self, position, potential):
        energy, _ = potential(position)
        return RandomWalkState(position, energy, potential)

    def step(self, state, rng):
        move = self.scale * rng.standard_normal(state.position.shape)
        proposal = state.position + move.astype(state.position.dtype)
        energy, _ = state.potential(proposal)
        accept_prob = math.exp(min(0.0, state.potential_energy - energy))
        accepted = bool(rng.random() < accept_prob)
        if accepted:
            state = state._replace(position=proposal, potential_energy=energy)
        return state, RandomWalkInfo(accept_prob, accepted, float(np.abs(move).sum()))


class KnownMean(borch.Module):
    """``mu ~ Normal(0, 10)``, ``y_i ~ Normal(mu, 1)``: a Normal posterior."""

    def forward(self, y):
        self.mu = dist.Normal(0.0, 10.0)
        self.y = dist.Normal(self.mu.expand(y.shape), 1.0)


Y = torch.tensor([1.1, 2.3, 0.7, 1.9, 1.4])
POSTERIOR_MEAN = Y.sum().item() / (len(Y) + 1 / 100)
POSTERIOR_VARIANCE = 1 / (len(Y) + 1 / 100)


def known_mean():
    model = KnownMean()
    model.observe(y=Y)
    return model


@pytest.mark.parametrize("kernel", [NUTS(), HMC(num_steps=4)], ids=repr)
def test_one_step_at_a_time_on_a_standard_normal(kernel):
    """init gives the state at the position; tune sets the step size and metric;
    step returns a state on the same potential and an info NamedTuple. Over many
    steps the draws have the standard Normal's mean and variance."""
    state = kernel.init(np.array([0.5, -1.0]), standard_normal)
    assert isinstance(state, HMCState)
    assert state.potential_energy == pytest.approx(0.625)
    np.testing.assert_array_equal(state.grad, [0.5, -1.0])
    state = kernel.tune(state, 0.7, DiagonalMetric(np.ones(2)))
    assert state.step_size == 0.7
    rng = np.random.default_rng(0)
    draws = []
    for _ in range(1500):
        state, info = kernel.step(state, rng)
        draws.append(state.position)
    assert isinstance(info, NUTSInfo if isinstance(kernel, NUTS) else HMCInfo)
    assert state.potential is standard_normal
    assert state.potential_energy == pytest.approx(standard_normal(state.position)[0])
    draws = np.array(draws)
    for k in range(2):
        assert_mean_within_mcse(draws[None, :, k], 0.0)
        assert_mean_within_mcse(draws[None, :, k] ** 2, 1.0)


def test_find_step_size_follows_the_metric():
    """The heuristic's step size grows with the scale of the metric's velocity."""
    kernel = NUTS()
    state = kernel.init(np.zeros(3), standard_normal)
    small = kernel.find_step_size(state, np.random.default_rng(0))
    wide = kernel.tune(state, 1.0, DiagonalMetric(np.full(3, 1e-4)))
    assert kernel.find_step_size(wide, np.random.default_rng(0)) > 10 * small


def test_a_random_walk_kernel_one_step_at_a_time():
    kernel = RandomWalk(2.4)
    state = kernel.init(np.zeros(1), standard_normal)
    rng = np.random.default_rng(1)
    draws = []
    for _ in range(4000):
        state, info = kernel.step(state, rng)
        draws.append(state.position[0])
    assert isinstance(info, RandomWalkInfo)
    assert_mean_within_mcse(np.array(draws)[None], 0.0)
    assert_mean_within_mcse(np.array(draws)[None] ** 2, 1.0)


def test_a_random_walk_kernel_through_mcmc():
    """A kernel without gradients or step size: no adaptation, the info's fields
    stored as they are (typed by their values), the same draws in worker processes,
    and the conjugate posterior's mean and variance."""
    options = {"num_samples": 1500, "warmup": 200, "chains": 2, "seed": 3}
    result = mcmc(known_mean(), Y, kernel=RandomWalk(0.8), progress=False, **options)
    assert result.step_size is None
    assert result.inverse_mass_matrix is None
    assert result.tree_depth is None
    assert sorted(result.stats) == ["accept_prob", "accepted", "jump", "log_density"]
    assert result.stats["accepted"].dtype == torch.bool
    assert result.stats["jump"].dtype == torch.float64
    assert result.stats["jump"].shape == (2, 1500)
    assert result.num_divergent == 0
    assert "step sizes" not in repr(result)
    draws = result.samples["mu"].double().numpy()
    assert_mean_within_mcse(draws, POSTERIOR_MEAN)
    assert_mean_within_mcse((draws - POSTERIOR_MEAN) ** 2, POSTERIOR_VARIANCE)
    parallel = mcmc(
        known_mean(),
        Y,
        kernel=RandomWalk(0.8),
        progress=False,
        parallel=True,
        **options,
    )
    assert torch.equal(parallel.samples["mu"], result.samples["mu"])
    assert torch.equal(parallel.stats["jump"], result.stats["jump"])
    stats = result.to_arviz().sample_stats
    assert {"acceptance_rate", "accepted", "jump", "lp", "diverging"} <= set(
        stats.data_vars
    )
    assert "step_size" not in stats.data_vars


@pytest.mark.parametrize(
    "kernel", [None, "nuts", NUTS(max_tree_depth=6), "hmc", HMC(num_steps=5)], ids=repr
)
def test_kernels_through_mcmc_recover_a_gaussian_posterior(kernel):
    """Bayesian linear regression with a known Gaussian posterior: every coordinate's
    mean within 4 MCSE, with the adapted step size and diagonal metric."""
    model, args, mean, _ = linear_regression()
    result = mcmc(
        model,
        *args,
        kernel=kernel,
        num_samples=600,
        warmup=400,
        chains=2,
        seed=7,
        parallel=False,
        progress=False,
    )
    assert result.step_size.shape == (2,)
    assert result.inverse_mass_matrix.shape == (2, 3)
    assert result.num_divergent == 0
    draws = result.samples["beta"].double().numpy()
    for k in range(3):
        assert_mean_within_mcse(draws[..., k], mean[k].item())
    if kernel in ("hmc",) or isinstance(kernel, HMC):
        assert "tree_depth" not in result.stats
        expected = 10 if kernel == "hmc" else 5
        assert bool((result.num_steps == expected).all())
    else:
        assert int(result.tree_depth.max()) <= (6 if isinstance(kernel, NUTS) else 10)


class Extended(NamedTuple):
    accept_prob: float
    tree_depth: int
    num_steps: int
    diverging: bool
    energy: float
    grad_norm: float
    corner: np.ndarray  # a statistic with a shape of its own
    steps_odd: bool


class InstrumentedNUTS(NUTS):
    """NUTS reporting extra statistics: the runner stores them without being told."""

    def step(self, state, rng):
        state, info = super().step(state, rng)
        extra = (
            float(np.linalg.norm(state.grad)),
            np.abs(state.position[:2]),
            info.num_steps % 2 == 1,
        )
        return state, Extended(*info, *extra)


def test_the_runner_stores_custom_info_fields():
    result = mcmc(
        known_mean(), Y, kernel=InstrumentedNUTS(), chains=2, seed=0,
        num_samples=30, warmup=30, progress=False,
    )  # fmt: skip
    assert result.stats["grad_norm"].shape == (2, 30)
    assert result.stats["grad_norm"].dtype == torch.float64
    assert result.stats["steps_odd"].dtype == torch.bool
    assert result.stats["corner"].shape == (2, 30, 1)
    assert torch.equal(result.stats["steps_odd"], result.num_steps % 2 == 1)
    assert result.step_size.shape == (2,)
    assert "grad_norm" in result.to_arviz().sample_stats


class WithLogDensity(NamedTuple):
    log_density: float


class Clashing(RandomWalk):
    def step(self, state, rng):
        state, _ = super().step(state, rng)
        return state, WithLogDensity(-state.potential_energy)


class NotNamed(RandomWalk):
    def step(self, state, rng):
        state, info = super().step(state, rng)
        return state, tuple(info)


@pytest.mark.parametrize(
    ("kernel", "error", "match"),
    [
        (3, TypeError, r"kernel must be None, 'nuts', 'hmc' or a borch\.infer\.Kernel"),
        ("nutz", TypeError, r"kernel must be None, 'nuts', 'hmc'.*got 'nutz'"),
        (NUTS, TypeError, r"got the class NUTS.*kernel=NUTS\(\)"),
        (Clashing(), ValueError, "field 'log_density'"),
        (NotNamed(), TypeError, "info a NamedTuple"),
    ],
)
def test_bad_kernels_are_refused(kernel, error, match):
    with pytest.raises(error, match=match):
        mcmc(known_mean(), Y, kernel=kernel, num_samples=5, warmup=5, progress=False)


def test_max_tree_depth_belongs_to_nuts():
    assert as_kernel("NUTS", 7).max_tree_depth == 7
    with pytest.raises(ValueError, match=r"kernel=NUTS\(max_tree_depth=7\)"):
        mcmc(known_mean(), Y, kernel="hmc", max_tree_depth=7, progress=False)


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: NUTS(0), ValueError, "max_tree_depth must be a positive int, got 0"),
        (lambda: NUTS(2.5), TypeError, "max_tree_depth must be a positive int"),
        (lambda: HMC(0), ValueError, "num_steps must be a positive int, got 0"),
        (lambda: HMC(True), TypeError, "num_steps must be a positive int"),
    ],
)
def test_kernel_settings_are_validated(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_kernels_and_metrics_pickle():
    for kernel in (NUTS(4), HMC(7), RandomWalk(0.3)):
        copy = pickle.loads(pickle.dumps(kernel))
        assert type(copy) is type(kernel)
        assert vars(copy) == vars(kernel)
    metric = pickle.loads(pickle.dumps(DiagonalMetric(np.array([1.0, 4.0]))))
    np.testing.assert_array_equal(metric.velocity(np.ones(2)), [1.0, 4.0])


def test_the_base_kernel_says_what_is_missing():
    kernel = Kernel()
    with pytest.raises(NotImplementedError, match="init"):
        kernel.init(np.zeros(1), standard_normal)
    with pytest.raises(NotImplementedError, match="step"):
        kernel.step(None, np.random.default_rng(0))
    with pytest.raises(TypeError, match="no step size"):
        RandomWalk().tune(None, 0.1, DiagonalMetric(np.ones(1)))
    with pytest.raises(ValueError, match="not finite at the initial position"):
        NUTS().init(np.zeros(1), lambda q: (math.inf, np.full(1, np.nan)))
