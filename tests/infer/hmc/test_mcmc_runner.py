"""The ``mcmc`` runner: results, reproducibility, the user's model, bad input."""

import warnings

import numpy as np
import pytest
import torch

import borch
from borch import distributions as dist
from borch import posterior
from borch.infer import MCMCResult, mcmc
from tests.infer.hmc.test_model_conversion import Network
from tests.infer.hmc.test_tracing import Branching
from tests.infer.models import linear_regression

SHORT = {"num_samples": 40, "warmup": 30, "progress": False}


class Mean(borch.Module):
    def forward(self, y):
        self.mu = dist.Normal(0.0, 10.0)
        self.sigma = dist.HalfNormal(2.0)
        self.y = dist.Normal(self.mu.expand(y.shape), self.sigma)


Y = torch.tensor([1.1, 2.3, 0.7, 1.9, 1.4])


def mean_model():
    model = Mean()
    model.observe(y=Y)
    return model


def network():
    model = Network()
    model.observe(y=torch.tensor([0.5, -0.3, 1.0, 0.2]))
    return model, (torch.randn(4, 2, generator=torch.Generator().manual_seed(0)),)


def test_result_shapes_and_names():
    model, args = network()
    result = mcmc(model, *args, chains=3, seed=0, **SHORT)
    assert isinstance(result, MCMCResult)
    assert {k: tuple(v.shape) for k, v in result.samples.items()} == {
        "layer.scale": (3, 40),
        "layer.weight": (3, 40, 2, 3),
        "mu": (3, 40),
    }
    assert bool((result.samples["layer.scale"] > 0).all())
    for stat in (
        result.divergences,
        result.accept_prob,
        result.tree_depth,
        result.num_steps,
        result.energy,
        result.log_density,
    ):
        assert stat.shape == (3, 40)
    assert result.divergences.dtype == torch.bool
    assert result.step_size.shape == (3,)
    assert result.inverse_mass_matrix.shape == (3, 8)
    assert result.num_divergent == int(result.divergences.sum())
    assert result.traced
    assert "3 chains x 40 draws" in repr(result)


def test_same_seed_same_draws_in_parallel_or_not():
    first = mcmc(mean_model(), Y, chains=2, seed=5, parallel=True, **SHORT)
    second = mcmc(mean_model(), Y, chains=2, seed=5, parallel=False, **SHORT)
    for name in first.samples:
        assert torch.equal(first.samples[name], second.samples[name])
    assert torch.equal(first.step_size, second.step_size)
    assert torch.equal(first.tree_depth, second.tree_depth)
    other = mcmc(mean_model(), Y, chains=2, seed=6, parallel=False, **SHORT)
    assert not torch.equal(first.samples["mu"], other.samples["mu"])


def test_chains_differ_and_seed_defaults_to_torch():
    torch.manual_seed(9)
    first = mcmc(mean_model(), Y, chains=2, parallel=False, **SHORT)
    torch.manual_seed(9)
    second = mcmc(mean_model(), Y, chains=2, parallel=False, **SHORT)
    assert first.seed == second.seed
    assert torch.equal(first.samples["mu"], second.samples["mu"])
    assert not torch.equal(first.samples["mu"][0], first.samples["mu"][1])


def test_the_users_model_is_unchanged_and_usable():
    model, args = network()
    model(*args)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    mcmc(model, *args, chains=1, seed=0, **SHORT)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert type(model.posterior) is posterior.Normal
    borch.sample(model)
    model(*args)
    loss = borch.infer.vi_loss(**borch.pq_to_infer(model))
    loss.backward()


def test_acceptance_follows_the_target():
    """A higher target_accept gives smaller steps and higher acceptance, and the
    acceptance after warm-up does not fall short of the target by more than 0.1
    (dual averaging's averaged step size is conservative: in low dimensions the
    acceptance sits above the target, as in Stan). A Gaussian posterior, so that no
    region needs smaller steps than the adapted ones."""
    model, args, _, _ = linear_regression()
    results = {
        target: mcmc(
            model,
            *args,
            chains=1,
            seed=1,
            target_accept=target,
            num_samples=300,
            warmup=300,
            progress=False,
        )
        for target in (0.6, 0.95)
    }
    accept = {t: r.accept_prob.mean().item() for t, r in results.items()}
    assert results[0.6].step_size[0] > results[0.95].step_size[0]
    assert accept[0.6] < accept[0.95]
    assert all(accept[t] > t - 0.1 for t in accept)


def test_arviz_conversion_and_summary():
    model, args = network()
    result = mcmc(model, *args, chains=2, seed=0, **SHORT)
    idata = result.to_arviz()
    assert set(idata.groups()) == {
        "posterior",
        "sample_stats",
        "log_likelihood",
        "observed_data",
    }
    assert idata.log_likelihood["y"].shape == (2, 40, 4)
    assert set(result.to_arviz(log_likelihood=False).groups()) == {
        "posterior",
        "sample_stats",
    }
    assert idata.posterior["layer.weight"].shape == (2, 40, 2, 3)
    np.testing.assert_array_equal(
        idata.sample_stats["diverging"].values, result.divergences.numpy()
    )
    table = result.summary()
    for column in ("mean", "sd", "hdi_3%", "hdi_97%", "ess_bulk", "ess_tail", "r_hat"):
        assert column in table.columns
    assert len(table) == 1 + 6 + 1
    assert table.attrs["num_divergent"] == result.num_divergent


def test_models_that_cannot_be_traced_are_run():
    model = Branching()
    model.observe(y=torch.tensor(0.3))
    result = mcmc(model, chains=1, seed=0, **SHORT)
    assert not result.traced
    assert result.samples["x"].shape == (1, 40)


def test_progress_bars_show_the_sampler_state(capfd):
    mcmc(mean_model(), Y, chains=2, seed=0, num_samples=20, warmup=20, parallel=False)
    err = capfd.readouterr().err
    assert "chain 0" in err
    assert "chain 1" in err
    assert "step" in err
    assert "accept" in err
    assert "divergent" in err


def test_progress_false_is_silent(capfd):
    mcmc(mean_model(), Y, chains=2, seed=0, **SHORT)
    captured = capfd.readouterr()
    assert captured.err == ""
    assert captured.out == ""


class Stairs(borch.Module):
    """A log density made of steps 100 units high: every move across a step is an
    energy jump far over the divergence threshold."""

    def forward(self):
        self.x = dist.Normal(0.0, 1.0)
        self.y = dist.Normal(100.0 * torch.floor(100.0 * self.x), 1.0)


def test_divergent_chains_are_reported():
    model = Stairs()
    model.observe(y=torch.tensor(0.0))
    with pytest.warns(RuntimeWarning, match=r"chain 0 \(\d+%\), chain 1"):
        result = mcmc(model, chains=2, seed=0, **SHORT)
    assert result.divergent_chains == [0, 1]
    assert "unreliable chains: [0, 1]" in repr(result)
    with pytest.warns(RuntimeWarning, match="not samples from"):
        table = result.summary()
    assert "chain 0" in table.attrs["warning"]


def test_a_healthy_run_gives_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = mcmc(mean_model(), Y, chains=1, seed=0, **SHORT)
        result.summary()
    assert result.divergent_chains == []


class Discrete(borch.Module):
    def forward(self):
        self.rate = dist.Gamma(2.0, 1.0)
        self.count = dist.Poisson(self.rate)


class Observed(borch.Module):
    def forward(self):
        self.y = dist.Normal(0.0, 1.0)


class OutOfReach(borch.Module):
    """The data need theta > 100, but initial points give theta = exp(u) < 7.4."""

    def forward(self, y):
        self.theta = dist.HalfNormal(200.0)
        self.y = dist.Uniform(torch.zeros_like(y), self.theta.expand(y.shape))


def test_no_latent_variables():
    model = Observed()
    model.observe(y=torch.tensor(0.0))
    with pytest.raises(ValueError, match="no latent random variables"):
        mcmc(model, **SHORT)


def test_discrete_latent_variables():
    with pytest.raises(ValueError, match=r"'count'.*discrete.*[Mm]arginalise"):
        mcmc(Discrete(), **SHORT)


def test_log_density_not_finite_at_any_initial_point():
    model = OutOfReach()
    y = torch.tensor([50.0, 120.0])
    model.observe(y=y)
    with (
        borch.validate_args(False),
        pytest.raises(ValueError, match=r"not finite.*'y' \(-inf\)"),
    ):
        mcmc(model, y, chains=1, **SHORT)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_samples": 0}, ValueError, "num_samples must be a positive int, got 0"),
        ({"num_samples": 1.5}, TypeError, "num_samples must be a positive int"),
        ({"warmup": -1}, ValueError, "warmup must be a non-negative int, got -1"),
        ({"chains": 0}, ValueError, "chains must be a positive int, got 0"),
        ({"chains": True}, TypeError, "chains must be a positive int, got True"),
        ({"seed": "a"}, TypeError, "seed must be a non-negative int or None"),
        ({"seed": -3}, ValueError, "seed must be a non-negative int or None, got -3"),
        ({"target_accept": 1.0}, ValueError, "target_accept"),
        ({"max_tree_depth": 0}, ValueError, "max_tree_depth must be a positive int"),
    ],
)
def test_bad_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        mcmc(mean_model(), Y, **{**SHORT, **kwargs})


def test_model_must_be_a_borch_module():
    with pytest.raises(TypeError, match=r"borch\.Module"):
        mcmc(torch.nn.Linear(2, 2), **SHORT)


def test_keyword_arguments_reach_the_model():
    class Scaled(borch.Module):
        def forward(self, *, scale):
            self.x = dist.Normal(0.0, scale)

    result = mcmc(Scaled(), scale=100.0, chains=1, seed=0, **SHORT)
    assert result.samples["x"].std() > 10


def test_zero_warmup_and_small_warmup_run():
    for warmup in (0, 10):
        result = mcmc(
            mean_model(),
            Y,
            chains=1,
            seed=0,
            num_samples=10,
            warmup=warmup,
            progress=False,
        )
        assert result.samples["mu"].shape == (1, 10)


def test_missing_arviz_is_explained(monkeypatch):
    result = mcmc(mean_model(), Y, chains=1, seed=0, **SHORT)
    monkeypatch.setitem(__import__("sys").modules, "arviz", None)
    with pytest.raises(ImportError, match=r"borch\[mcmc\]"):
        result.to_arviz()


def test_plot_trace_returns_the_figure(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    result = mcmc(mean_model(), Y, chains=2, seed=0, **SHORT)
    figure = result.plot_trace(["mu"])
    assert len(figure.axes) == 2
    path = tmp_path / "trace.png"
    result.plot_trace(path=path)
    assert path.stat().st_size > 10_000


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_a_model_on_the_gpu():
    """Chains run in this process; draws come back on the model's device and agree
    with the same model on the CPU in distribution (means within 0.3 posterior sd)."""
    model = mean_model().cuda()
    result = mcmc(
        model, Y.cuda(), chains=2, seed=0, num_samples=200, warmup=200, progress=False
    )
    assert result.samples["mu"].device.type == "cuda"
    assert result.traced
    cpu = mcmc(
        mean_model(), Y, chains=2, seed=0, num_samples=200, warmup=200, progress=False
    )
    sd = cpu.samples["mu"].std().item()
    assert (
        abs(result.samples["mu"].mean().item() - cpu.samples["mu"].mean().item())
        < 0.3 * sd
    )


def test_random_log_densities_are_refused():
    class Noisy(borch.Module):
        def forward(self):
            self.x = dist.Normal(0.0, 1.0)
            self.y = dist.Normal(self.x + torch.randn(()), 1.0)

    model = Noisy()
    model.observe(y=torch.tensor(0.0))
    with pytest.raises(ValueError, match="changed between two evaluations.*random"):
        mcmc(model, **SHORT)
