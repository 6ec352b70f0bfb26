"""Continuing chains, initial values, and checkpoints that resume a run exactly."""

import numpy as np
import pytest
import torch

import borch
from borch import distributions as dist
from borch.infer import NUTS, mcmc
from borch.infer.hmc.initialization import MEDIAN_DRAWS, check_init, initial_point
from borch.infer.hmc.model_conversion import ModelPotential, sampling_copy
from tests.infer.mcmc_stats import assert_mean_within_mcse
from tests.infer.models import linear_regression

RUN = {"chains": 2, "progress": False}


@pytest.mark.parametrize("dense_mass", [False, True])
def test_continuing_keeps_step_size_and_metric(dense_mass):
    """``warmup=0`` continues every chain from its last draw with its adapted step
    size and mass matrix; the draws are from the posterior (exact Gaussian)."""
    model, args, mean, _ = linear_regression()
    first = mcmc(
        model, *args, num_samples=50, warmup=200, seed=0, dense_mass=dense_mass, **RUN
    )
    second = mcmc(
        model, *args, num_samples=300, warmup=0, seed=1, continue_from=first, **RUN
    )
    assert torch.equal(second.step_size, first.step_size)
    assert torch.equal(second.inverse_mass_matrix, first.inverse_mass_matrix)
    assert second.dense_mass == dense_mass
    beta = second.samples["beta"]
    for i in range(beta.shape[-1]):
        assert_mean_within_mcse(beta[..., i].numpy(), float(mean[i]))
    # the first draw is one transition away from where the first run stopped
    last = first.samples["beta"][:, -1]
    assert torch.all(torch.linalg.vector_norm(beta[:, 0] - last, dim=-1) < 5)


def test_continuing_with_warmup_adapts_on():
    model, args, _, _ = linear_regression()
    first = mcmc(model, *args, num_samples=20, warmup=100, seed=0, **RUN)
    second = mcmc(
        model, *args, num_samples=20, warmup=100, seed=1, continue_from=first, **RUN
    )
    assert not torch.equal(second.inverse_mass_matrix, first.inverse_mass_matrix)


def test_continuing_needs_the_same_chains():
    model, args, _, _ = linear_regression()
    first = mcmc(model, *args, num_samples=10, warmup=10, seed=0, **RUN)
    with pytest.raises(ValueError, match="2 chains of 3 coordinates.*3 chains"):
        mcmc(
            model, *args, num_samples=10, chains=3, continue_from=first, progress=False
        )
    with pytest.raises(ValueError, match="init or continue_from"):
        mcmc(model, *args, num_samples=10, init="prior", continue_from=first, **RUN)


class Hierarchy(borch.Module):
    """mu ~ Normal(3, 2), sigma ~ LogNormal(0, 0.5), theta ~ Normal(mu, 0.01 sigma)."""

    def forward(self):
        self.mu = dist.Normal(3.0, 2.0)
        self.sigma = dist.LogNormal(0.0, 0.5)
        self.theta = dist.Normal(self.mu.expand(2), 0.01 * self.sigma)


def potential():
    return ModelPotential(sampling_copy(Hierarchy()), (), {})


def values(eager, point):
    batch = eager.constrained(eager.tensor(point.position[None]))
    return {name: value[0] for name, value in batch.items()}


def test_prior_initial_points_are_prior_draws():
    """200 prior starts: mu's mean within 4 standard errors of 3, sigma's median
    (log-normal: 1) within 4 standard errors of the median, theta drawn given mu."""
    eager = potential()
    n = 200
    draws = [values(eager, initial_point(eager, "prior", seed)) for seed in range(n)]
    mu = np.array([d["mu"].item() for d in draws])
    sigma = np.array([d["sigma"].item() for d in draws])
    assert abs(mu.mean() - 3.0) < 4 * 2.0 / np.sqrt(n)
    # sd of a sample median of n draws: 1.2533 sd / sqrt(n) (log sigma ~ N(0, .5))
    assert abs(np.log(np.median(sigma))) < 4 * 1.2533 * 0.5 / np.sqrt(n)
    theta = np.array([d["theta"].numpy() for d in draws])
    assert np.all(np.abs(theta - mu[:, None]) < 0.01 * sigma[:, None] * 6)


def test_median_initial_point():
    """The median of 15 prior draws: mu within 4 standard errors of the prior's
    median (sd of a median of 15 Normal draws ~ 1.2533 * 2 / sqrt(15))."""
    eager = potential()
    for seed in range(3):
        mu = values(eager, initial_point(eager, "median", seed))["mu"].item()
        assert abs(mu - 3.0) < 4 * 1.2533 * 2.0 / np.sqrt(MEDIAN_DRAWS)


def test_initial_values_by_name():
    """Named values start there (in their own space); the others start uniformly."""
    eager = potential()
    init = {"sigma": 2.5, "theta": [1.0, 2.0]}
    start = values(eager, initial_point(eager, check_init(init, eager), 0))
    assert start["sigma"].item() == pytest.approx(2.5)
    assert start["theta"].tolist() == pytest.approx([1.0, 2.0])
    result = mcmc(Hierarchy(), num_samples=5, warmup=0, init=init, seed=0, **RUN)
    assert result.samples["mu"].shape == (2, 5)


@pytest.mark.parametrize(
    ("init", "error", "match"),
    [
        ({"nope": 1.0}, ValueError, r"\['nope'\].*they are \['mu', 'sigma', 'theta'\]"),
        ({"theta": 1.0}, ValueError, r"init\['theta'\] has shape \(\).*\(2,\)"),
        ({"sigma": -1.0}, ValueError, r"init\['sigma'\] = -1.0 is outside the support"),
        ("random", ValueError, "init must be one of"),
        (3, TypeError, "init must be one of"),
    ],
)
def test_bad_initial_values(init, error, match):
    with pytest.raises(error, match=match):
        mcmc(Hierarchy(), num_samples=5, warmup=0, init=init, seed=0, **RUN)


class Crash(RuntimeError):
    pass


class CrashingNUTS(NUTS):
    """NUTS that crashes the run after ``after`` transitions in this process."""

    def __init__(self, after):
        super().__init__()
        self.after, self.steps = after, 0

    def step(self, state, rng):
        self.steps += 1
        if self.steps > self.after:
            raise Crash("the machine went down")
        return super().step(state, rng)


CHECKPOINTED = {"num_samples": 40, "warmup": 30, "chains": 2, "seed": 3}
CHECKPOINTED.update(progress=False, parallel=False, checkpoint_every=10)


@pytest.mark.parametrize(
    ("after", "dense_mass"),
    [(10, False), (55, False), (125, True)],
    ids=["in-warmup", "chain-0-draw-25", "chain-1-draw-25"],
)
def test_resuming_from_a_checkpoint_gives_the_uninterrupted_draws(
    tmp_path, after, dense_mass
):
    model, args, _, _ = linear_regression()
    expected = mcmc(model, *args, dense_mass=dense_mass, **CHECKPOINTED)
    with pytest.raises(Crash):
        mcmc(
            model,
            *args,
            kernel=CrashingNUTS(after),
            dense_mass=dense_mass,
            checkpoint=tmp_path,
            **CHECKPOINTED,
        )
    saved = sorted(p.name for p in tmp_path.glob("chain_*.pt"))
    assert saved == (
        []
        if after < 30
        else ["chain_0.pt"]
        if after < 70
        else ["chain_0.pt", "chain_1.pt"]
    )
    for path in tmp_path.glob("chain_*.pt"):
        assert torch.load(path, weights_only=True)["draw"] % 10 == 0
    resumed = mcmc(
        model, *args, dense_mass=dense_mass, checkpoint=tmp_path, **CHECKPOINTED
    )
    assert torch.equal(resumed.samples["beta"], expected.samples["beta"])
    for name, value in expected.stats.items():
        assert torch.equal(resumed.stats[name], value), name
    assert torch.equal(resumed.step_size, expected.step_size)
    assert torch.equal(resumed.inverse_mass_matrix, expected.inverse_mass_matrix)


def test_a_checkpoint_of_another_run_is_refused(tmp_path):
    model, args, _, _ = linear_regression()
    mcmc(model, *args, checkpoint=tmp_path, **CHECKPOINTED)
    with pytest.raises(ValueError, match="is of another run"):
        mcmc(model, *args, checkpoint=tmp_path, **{**CHECKPOINTED, "seed": 4})
    with pytest.raises(ValueError, match="checkpoint needs a seed"):
        mcmc(model, *args, checkpoint=tmp_path, **{**CHECKPOINTED, "seed": None})
