"""``mcmc(chain_method="vectorized")``: batched chains against separate ones, known
posteriors, per-chain adaptation, dense mass, the batched trace, bad arguments."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import borch
from borch import distributions as dist
from borch.infer import mcmc
from borch.infer.hmc import runner
from borch.infer.hmc.batched_nuts import (
    BatchedMetric,
    BatchedState,
    batched_nuts_transition,
)
from borch.infer.hmc.metric import MassLayout
from borch.infer.hmc.model_conversion import ModelPotential, sampling_copy
from borch.infer.hmc.runner import CHAIN_METHODS, Settings
from borch.infer.hmc.traced.batched import batched_traced_potential
from borch.infer.hmc.vectorized import sample_vectorized
from tests.infer.hmc.posteriordb import assert_matches_reference, kidiq
from tests.infer.hmc.test_kernels import (
    POSTERIOR_MEAN,
    POSTERIOR_VARIANCE,
    Y,
    known_mean,
)
from tests.infer.hmc.test_mcmc_runner import Stairs, mean_model
from tests.infer.hmc.test_mcmc_runner import Y as MEAN_Y
from tests.infer.hmc.test_trace_checks import assert_every_chain_switched
from tests.infer.hmc.test_tracing import Branching
from tests.infer.mcmc_stats import assert_mean_within_mcse, mcse_mean, rhat

SHORT = {"num_samples": 40, "warmup": 30}
VECTORIZED = {"chain_method": "vectorized", "progress": False}


@pytest.fixture(scope="module")
def known_mean_runs():
    """Four vectorised and four sequential chains on the conjugate Normal model."""
    run = {"num_samples": 600, "warmup": 300, "chains": 4, "seed": 3}
    return (
        mcmc(known_mean(), Y, **run, **VECTORIZED),
        mcmc(known_mean(), Y, **run, chain_method="sequential", progress=False),
    )


def test_vectorized_chains_recover_the_conjugate_posterior(known_mean_runs):
    """The exact posterior mean and variance, each within 4 MCSE."""
    vectorized, _ = known_mean_runs
    draws = vectorized.samples["mu"].double().numpy()
    assert_mean_within_mcse(draws, POSTERIOR_MEAN)
    assert_mean_within_mcse((draws - POSTERIOR_MEAN) ** 2, POSTERIOR_VARIANCE)
    assert vectorized.traced
    assert vectorized.divergences.sum() == 0


def test_vectorized_chains_agree_with_separate_chains(known_mean_runs):
    """Pooled with sequential chains of the same model, the r-hat is below 1.02 and
    the two means differ by less than 4 combined MCSE."""
    vectorized, sequential = known_mean_runs
    a = vectorized.samples["mu"].double().numpy()
    b = sequential.samples["mu"].double().numpy()
    assert rhat(np.concatenate([a, b])) < 1.02
    assert abs(a.mean() - b.mean()) < 4 * math.hypot(mcse_mean(a), mcse_mean(b))
    for name in ("accept_prob", "tree_depth", "num_steps", "diverging", "energy"):
        assert vectorized.stats[name].shape == sequential.stats[name].shape
        assert vectorized.stats[name].dtype == sequential.stats[name].dtype
    assert vectorized.step_size.shape == sequential.step_size.shape
    assert vectorized.inverse_mass_matrix.shape == sequential.inverse_mass_matrix.shape


def test_kidiq_vectorized_with_dense_mass_matches_stan():
    """posteriordb's kidiq-kidscore_momhsiq with a dense metric per chain: Stan's
    means and sds, in a few leapfrog steps per draw. (Trees are capped at 2**6
    steps: before the first dense estimate the identity metric would take 2**10 for
    every chain, which only costs time here.)"""
    model, args, reference = kidiq()
    result = mcmc(
        model, *args, dense_mass=True, num_samples=300, warmup=200, chains=2, seed=0,
        max_tree_depth=6, **VECTORIZED,
    )  # fmt: skip
    assert_matches_reference(result.samples, reference)
    assert result.inverse_mass_matrix.shape == (2, 4, 4)
    assert result.num_steps.double().mean().item() < 7.5


def scaled_normal(scales):
    """A batched potential where chain c targets Normal(0, scales[c]^2 I)."""
    scales = scales.unsqueeze(-1)

    def potential(q):
        return 0.5 * (q / scales).pow(2).sum(-1), q / scales**2

    return potential


@pytest.mark.parametrize("dense", [False, True])
def test_every_chain_adapts_its_own_mass_matrix(dense):
    """Chains on Normals of sd 0.1, 1 and 10 each adapt an inverse mass near their
    own variance (regularised, from a window of about 100 draws: within a factor 2)
    and draw with their own sd (within 25%)."""
    scales = torch.tensor([0.1, 1.0, 10.0], dtype=torch.float64)
    layout = MassLayout(2, [np.arange(2)] if dense else [])
    results = sample_vectorized(
        scaled_normal(scales),
        torch.zeros(3, 2, dtype=torch.float64),
        Settings(num_samples=400, warmup=300, target_accept=0.8),
        seed=0,
        layout=layout,
    )
    for scale, result in zip(scales.tolist(), results):
        inverse = result["inverse_mass"]
        variances = np.diagonal(inverse) if dense else inverse
        assert np.all(np.abs(np.log(variances / scale**2)) < math.log(2.0))
        sd = result["positions"].std(0)
        assert np.all(np.abs(sd / scale - 1) < 0.25), sd
    steps = [result["step_size"] for result in results]
    assert len(set(steps)) == 3  # three dual averagings


def test_continued_chains_keep_their_own_step_size_and_metric(known_mean_runs):
    vectorized, _ = known_mean_runs
    again = mcmc(
        known_mean(), Y, continue_from=vectorized, warmup=0, num_samples=20,
        chains=4, seed=4, **VECTORIZED,
    )  # fmt: skip
    assert torch.equal(again.step_size, vectorized.step_size)
    assert torch.equal(again.inverse_mass_matrix, vectorized.inverse_mass_matrix)
    assert len(set(vectorized.step_size.tolist())) == 4


def test_same_seed_same_draws():
    first = mcmc(mean_model(), MEAN_Y, chains=3, seed=5, **SHORT, **VECTORIZED)
    again = mcmc(mean_model(), MEAN_Y, chains=3, seed=5, **SHORT, **VECTORIZED)
    other = mcmc(mean_model(), MEAN_Y, chains=3, seed=6, **SHORT, **VECTORIZED)
    assert torch.equal(first.samples["mu"], again.samples["mu"])
    assert not torch.equal(first.samples["mu"], other.samples["mu"])
    chains = first.samples["mu"]
    assert not torch.equal(chains[0], chains[1])


@pytest.mark.parametrize("dense_mass", [False, True, [("mu",)]], ids=repr)
def test_dense_mass_layouts(dense_mass):
    """Mean has two latent coordinates (mu, sigma): the adapted inverse masses are
    diagonals or symmetric positive definite matrices with the layout's zeros."""
    result = mcmc(
        mean_model(), MEAN_Y, chains=2, seed=0, dense_mass=dense_mass, num_samples=40,
        warmup=60, **VECTORIZED,
    )  # fmt: skip
    inverse = result.inverse_mass_matrix
    if dense_mass is False:
        assert inverse.shape == (2, 2)
        assert bool((inverse > 0).all())
        return
    assert inverse.shape == (2, 2, 2)
    assert torch.equal(inverse, inverse.mT)
    assert bool((torch.linalg.eigvalsh(inverse) > 0).all())
    if dense_mass is not True:  # a dense block over mu alone: no cross term
        assert bool((inverse[:, 0, 1] == 0).all())


def test_init_starts_every_chain_there():
    """With no warm-up and one draw every chain is one transition from its start."""
    result = mcmc(
        mean_model(), MEAN_Y, chains=2, seed=0, init={"mu": 40.0, "sigma": 1.0},
        num_samples=1, warmup=0, **VECTORIZED,
    )  # fmt: skip
    assert bool((result.samples["mu"] > 20).all())


def test_a_model_that_cannot_be_traced_runs_chain_by_chain():
    model = Branching()
    model.observe(y=torch.tensor(0.3))
    result = mcmc(model, chains=2, seed=0, **SHORT, **VECTORIZED)
    assert not result.traced
    assert result.samples["x"].shape == (2, 40)


def test_divergences_are_per_chain():
    model = Stairs()
    model.observe(y=torch.tensor(0.0))
    with pytest.warns(RuntimeWarning, match=r"chain 0 \(\d+%\), chain 1"):
        result = mcmc(model, chains=2, seed=0, **SHORT, **VECTORIZED)
    assert result.divergent_chains == [0, 1]


def test_a_wrong_trace_moves_the_chains_onto_the_model(monkeypatch):
    """A batched trace that passed its construction check but targets another
    density is caught at the first warm-up check; the chains sample the model."""
    real = runner.batched_traced_potential

    def wrong_trace(*args, **kwargs):
        right = real(*args, **kwargs)

        def wrong(q):
            energy, grad = right(q)
            offset = q - 10.0
            return energy + 5.0 * (offset**2).sum(-1), grad + 10.0 * offset

        return wrong

    monkeypatch.setattr(runner, "batched_traced_potential", wrong_trace)
    with pytest.warns(RuntimeWarning) as caught:
        result = mcmc(
            known_mean(), Y, chains=2, seed=2, num_samples=800, warmup=200,
            **VECTORIZED,
        )  # fmt: skip
    assert_every_chain_switched(caught, chains=2)
    assert result.traced_chains == [False, False]
    draws = result.samples["mu"].double().numpy()
    assert_mean_within_mcse(draws, POSTERIOR_MEAN)


def test_a_chain_that_stopped_does_not_move():
    """One transition of three chains where chain 1 diverges at once (a huge step
    size): it stays where it was, with one leapfrog step, while the others move."""
    potential = scaled_normal(torch.ones(3, dtype=torch.float64))
    q = torch.full((3, 2), 0.5, dtype=torch.float64)
    state = BatchedState(q, *potential(q))
    step_size = torch.tensor([0.3, 1e3, 0.3], dtype=torch.float64)
    metric = BatchedMetric(torch.ones(3, 2, dtype=torch.float64))
    new, info = batched_nuts_transition(
        state, potential, step_size, metric, torch.Generator().manual_seed(0)
    )
    assert info.diverging.tolist() == [False, True, False]
    assert info.num_steps[1] == 1
    assert torch.equal(new.position[1], q[1])
    assert bool((info.num_steps[[0, 2]] > 1).all())


class Family(borch.Module):
    """A latent variable of the family ``FAMILY`` feeding one observation."""

    FAMILY = "Normal"

    def forward(self):
        self.z = PRIORS[self.FAMILY]()
        self.y = dist.Normal(self.z.sum() * 0.1, 1.0)


PRIORS = {
    "Normal": lambda: dist.Normal(torch.zeros(3), 1.0),
    "HalfNormal": lambda: dist.HalfNormal(torch.ones(3)),
    "Gamma": lambda: dist.Gamma(torch.full((3,), 2.0), 1.0),
    "LogNormal": lambda: dist.LogNormal(torch.zeros(3), 0.5),
    "Beta": lambda: dist.Beta(torch.full((3,), 2.0), 3.0),
    "Uniform": lambda: dist.Uniform(torch.zeros(3), 2.0),
    "Dirichlet": lambda: dist.Dirichlet(torch.ones(3)),
    "MultivariateNormal": lambda: dist.MultivariateNormal(
        torch.zeros(3), torch.eye(3) * 2.0
    ),
}


@pytest.mark.parametrize("family", PRIORS)
def test_the_batched_trace_agrees_with_the_model(family):
    """For every constraint family the trace batched over 5 chains gives each row's
    energy and gradient of the model (checked inside, and here at other points)."""
    model = type(family, (Family,), {"FAMILY": family})()
    model.observe(y=torch.tensor(0.4))
    eager = ModelPotential(sampling_copy(model), (), {})
    rng = np.random.default_rng(0)
    points = rng.uniform(-1.5, 1.5, (5, eager.dim)).astype(eager.numpy_dtype)
    potential = batched_traced_potential(
        eager.evaluate, eager, points, eager.device, eager.dtype
    )
    others = rng.uniform(-1.5, 1.5, (5, eager.dim)).astype(eager.numpy_dtype)
    energies, grads = potential(torch.from_numpy(others))
    for row, point in enumerate(others):
        energy, grad = eager(point)
        assert energies[row].item() == pytest.approx(energy, rel=1e-5, abs=1e-5)
        np.testing.assert_allclose(grads[row].numpy(), grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"chain_method": "threads"}, ValueError, "chain_method must be one of"),
        (
            {"chain_method": "vectorized", "parallel": True},
            ValueError,
            "one of the two",
        ),
        ({"chain_method": "parallel", "parallel": False}, ValueError, "one of the two"),
        ({"parallel": "yes"}, TypeError, "parallel must be True, False or None"),
        ({"chain_method": "vectorized", "kernel": "hmc"}, ValueError, "NUTS kernel"),
    ],
)
def test_bad_chain_methods(kwargs, error, match):
    with pytest.raises(error, match=match):
        mcmc(mean_model(), MEAN_Y, chains=2, seed=0, progress=False, **SHORT, **kwargs)


def test_vectorized_refuses_checkpoints(tmp_path):
    with pytest.raises(ValueError, match="does not write checkpoints"):
        mcmc(
            mean_model(), MEAN_Y, chains=2, seed=0, checkpoint=tmp_path, **SHORT,
            **VECTORIZED,
        )  # fmt: skip


@settings(max_examples=25, deadline=None)
@given(st.text(max_size=12).filter(lambda s: s not in CHAIN_METHODS))
def test_any_other_chain_method_is_refused(name):
    with pytest.raises(ValueError, match="chain_method must be one of"):
        runner._chain_method(name, None)


@pytest.mark.parametrize(("method", "parallel"), [("sequential", False)])
def test_agreeing_parallel_and_chain_method_run(method, parallel):
    result = mcmc(
        mean_model(), MEAN_Y, chains=2, seed=0, chain_method=method, parallel=parallel,
        progress=False, **SHORT,
    )  # fmt: skip
    assert result.samples["mu"].shape == (2, 40)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_vectorized_chains_on_the_gpu():
    """The chains run on the GPU; their mean agrees with the exact posterior."""
    result = mcmc(
        known_mean().cuda(), Y.cuda(), chains=8, seed=0, num_samples=400, warmup=300,
        **VECTORIZED,
    )  # fmt: skip
    assert result.samples["mu"].device.type == "cuda"
    assert result.traced
    assert_mean_within_mcse(result.samples["mu"].double().cpu().numpy(), POSTERIOR_MEAN)


def test_the_progress_bar_shows_the_chains(capfd):
    mcmc(mean_model(), MEAN_Y, chains=3, seed=5, chain_method="vectorized", **SHORT)
    err = capfd.readouterr().err
    for text in ("3 chains (vectorized)", "median step", "accept", "divergent"):
        assert text in err
