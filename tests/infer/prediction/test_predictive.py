"""Posterior predictive sampling: shapes, state left alone, vectorised vs looped."""

import warnings

import pytest
import torch

import borch
from borch import distributions as dist
from borch import posterior
from borch.infer import VectorizationWarning, predictive

X = torch.linspace(-1.0, 1.0, 5)
Y = torch.tensor([0.1, -0.3, 0.2, 0.9, 1.4])


class Regression(borch.Module):
    """y ~ Normal(intercept + slope * x, noise) with a positive noise scale."""

    def forward(self, x):
        self.intercept = dist.Normal(0.0, 1.0)
        self.slope = dist.Normal(0.0, 1.0)
        self.noise = dist.LogNormal(-1.0, 0.5)
        mean = self.intercept + self.slope * x
        self.y = dist.Normal(mean, self.noise)
        return mean


class Nested(borch.Module):
    """A borch submodule holding the weights: qualified names get a path prefix."""

    def __init__(self):
        super().__init__()
        self.layer = Regression()

    def forward(self, x):
        return {"mean": self.layer(x), "double": 2 * self.layer.slope}


class Looping(borch.Module):
    """Uses a Python loop over the data: cannot broadcast over a sample dimension."""

    def forward(self, x):
        self.slope = dist.Normal(0.0, 1.0)
        mean = torch.stack([self.slope * float(value) for value in x])
        self.y = dist.Normal(mean, 0.5)
        return mean


def make(posterior_family=None):
    model = Regression(posterior=posterior_family)
    model.observe(y=Y.clone())
    return model


def mcmc_samples(chains=2, draws=30):
    """A hand-made MCMC-style samples dict: (chains, draws, *event) per latent."""
    generator = torch.Generator().manual_seed(1)
    return {
        "intercept": torch.randn(chains, draws, generator=generator),
        "slope": 1.0 + 0.1 * torch.randn(chains, draws, generator=generator),
        "noise": torch.rand(chains, draws, generator=generator) + 0.1,
    }


FAMILIES = {
    "automatic": None,
    "normal": posterior.Normal(),
    "point_mass": posterior.PointMass(),
}


@pytest.mark.parametrize("family", FAMILIES, ids=list(FAMILIES))
@pytest.mark.parametrize("vectorize", [False, True])
def test_shapes_vi_and_point_mass(family, vectorize):
    model = make(FAMILIES[family])
    draws = predictive(model, X, num_samples=7, vectorize=vectorize)
    assert list(draws) == ["intercept", "slope", "noise", "y", "_return"]
    assert {name: tuple(value.shape) for name, value in draws.items()} == {
        "intercept": (7,),
        "slope": (7,),
        "noise": (7,),
        "y": (7, 5),
        "_return": (7, 5),
    }
    assert not any(value.requires_grad for value in draws.values())


def test_point_mass_latents_are_equal_but_observed_are_simulated():
    model = make(posterior.PointMass())
    draws = predictive(model, X, num_samples=20)
    for name in ("intercept", "slope", "noise"):
        assert torch.equal(draws[name], draws[name][:1].expand(20))
    assert torch.equal(draws["_return"], draws["_return"][:1].expand(20, 5))
    # observed draws vary around the (fixed) mean instead of copying the data
    assert (draws["y"].std(0) > 0).all()
    assert not torch.equal(draws["y"][0], Y)


def test_observed_variables_are_drawn_from_the_likelihood_not_copied():
    """y's draws are mean + noise * eps; standardised residuals are N(0, 1).

    With 400 x 5 residuals the sample mean has standard error 1/sqrt(2000) ~ 0.022 and
    the sample variance ~ sqrt(2/2000) ~ 0.032; the bounds are 5 standard errors."""
    model = make()
    draws = predictive(model, X, num_samples=400)
    z = (draws["y"] - draws["_return"]) / draws["noise"][:, None]
    assert abs(z.mean().item()) < 5 * 0.022
    assert abs(z.var().item() - 1.0) < 5 * 0.032


@pytest.mark.parametrize("vectorize", [False, True])
def test_mcmc_style_samples_dict(vectorize):
    samples = mcmc_samples(chains=2, draws=30)
    model = make()
    draws = predictive(
        model, X, posterior_samples=samples, num_samples=None, vectorize=vectorize
    )
    assert draws["y"].shape == (60, 5)
    for name, value in samples.items():  # chains flattened, chain after chain
        assert torch.equal(draws[name], value.reshape(60))
    expected_mean = samples["intercept"].reshape(60, 1) + samples["slope"].reshape(
        60, 1
    ) * X.expand(60, 5)
    torch.testing.assert_close(draws["_return"], expected_mean)


def test_mcmc_num_samples_thins_evenly():
    samples = mcmc_samples(chains=2, draws=30)
    draws = predictive(make(), X, posterior_samples=samples, num_samples=6)
    flat = samples["slope"].reshape(60)
    assert torch.equal(draws["slope"], flat[torch.tensor([0, 10, 20, 30, 40, 50])])


def test_accepts_an_actual_mcmc_result():
    model = make()
    result = borch.infer.mcmc(
        model, X, num_samples=8, warmup=8, chains=1, seed=0, progress=False
    )
    draws = predictive(model, X, posterior_samples=result, num_samples=None)
    assert {name: tuple(value.shape) for name, value in draws.items()} == {
        "intercept": (8,),
        "slope": (8,),
        "noise": (8,),
        "y": (8, 5),
        "_return": (8, 5),
    }
    assert torch.equal(draws["noise"], result.samples["noise"].reshape(8))


def test_nested_names_and_structured_return():
    model = Nested()
    model.layer.observe(y=Y.clone())
    draws = predictive(model, X, num_samples=4)
    assert set(draws) == {
        "layer.intercept",
        "layer.slope",
        "layer.noise",
        "layer.y",
        "_return",
    }
    assert draws["_return"]["mean"].shape == (4, 5)
    torch.testing.assert_close(draws["_return"]["double"], 2 * draws["layer.slope"])


def test_return_sites_filter():
    draws = predictive(make(), X, num_samples=3, return_sites=["y", "_return"])
    assert list(draws) == ["y", "_return"]


@pytest.mark.parametrize("vectorize", [False, True])
def test_leaves_observed_parameters_and_training_flag_unchanged(vectorize):
    model = make()
    model(X)  # create the approximations
    model.train()
    model.posterior.eval()  # a mixed set of flags must come back as it was
    flags = {name: module.training for name, module in model.named_modules()}
    state = {key: value.clone() for key, value in model.state_dict().items()}
    predictive(model, X, num_samples=5, vectorize=vectorize)
    assert {name: module.training for name, module in model.named_modules()} == flags
    after = model.state_dict()
    assert list(after) == list(state)
    for key, value in state.items():
        assert torch.equal(after[key], value), key
    assert torch.equal(model.observed.y, Y)
    # the model still trains afterwards
    borch.sample(model)
    model(X)
    loss = borch.infer.vi_loss(**borch.pq_to_infer(model))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_runs_under_no_grad_and_eval_mode():
    """Every run is in eval mode; all but the first (which may create approximations
    and is detached afterwards) run without gradients."""
    seen = []

    class Spy(Regression):
        def forward(self, x):
            seen.append((torch.is_grad_enabled(), self.training))
            return super().forward(x)

    model = Spy()
    model.observe(y=Y.clone())
    model(X)
    seen.clear()
    predictive(model, X, num_samples=3)
    assert [training for _, training in seen] == [False] * 3
    assert [grad for grad, _ in seen[1:]] == [False] * 2


def two_sample_z(first, second):
    """Largest |z| of the difference of the means and of the second central moments,
    elementwise, with each standard error estimated from the draws."""
    n, m = first.shape[0], second.shape[0]
    z_mean = (first.mean(0) - second.mean(0)) / (
        first.var(0) / n + second.var(0) / m
    ).sqrt()
    sq1 = (first - first.mean(0)) ** 2
    sq2 = (second - second.mean(0)) ** 2
    z_var = (sq1.mean(0) - sq2.mean(0)) / (sq1.var(0) / n + sq2.var(0) / m).sqrt()
    return max(z_mean.abs().max().item(), z_var.abs().max().item())


@pytest.mark.parametrize("source", ["vi", "mcmc", "point_mass"])
def test_vectorised_and_looped_agree_in_distribution(source):
    """Two-sample z-tests of the mean and variance of every site.

    Each z statistic is the difference of the two estimates over its Monte Carlo
    standard error (estimated from the draws). There are at most 2 x 9 statistics
    per case, so a bound of 4.5 keeps the false-failure rate below 2e-4 per case
    (Bonferroni). Power, measured on this model: the agreeing modes give max |z|
    ~ 1.6; scaling the vectorised spread by 1.2 gives ~ 8.6 and shifting it by 0.2
    standard deviations ~ 6.7."""
    family = posterior.PointMass() if source == "point_mass" else None
    model = make(family)
    kwargs = {"num_samples": 2000}
    if source == "mcmc":
        kwargs = {"num_samples": None, "posterior_samples": mcmc_samples(4, 500)}
    looped = predictive(model, X, **kwargs)
    vectorised = predictive(model, X, vectorize=True, **kwargs)
    for name in ("y", "_return", "slope", "noise"):
        assert vectorised[name].shape == looped[name].shape
        if looped[name].var(0).min() == 0:  # constant sites must agree exactly
            torch.testing.assert_close(vectorised[name], looped[name])
        else:
            assert two_sample_z(looped[name], vectorised[name]) < 4.5, name


def test_vectorize_falls_back_with_a_warning():
    model = Looping()
    model.observe(y=Y.clone())
    with pytest.warns(VectorizationWarning, match="fell back"):
        draws = predictive(model, X, num_samples=4, vectorize=True)
    assert draws["y"].shape == (4, 5)


def test_vectorize_does_not_warn_for_a_broadcasting_model():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        predictive(make(), X, num_samples=4, vectorize=True)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_samples": 0}, ValueError, "num_samples"),
        ({"num_samples": 2.5}, TypeError, "num_samples"),
        ({"num_samples": None}, ValueError, "num_samples"),
        ({"posterior_samples": [1, 2]}, TypeError, "posterior_samples"),
        ({"posterior_samples": {}}, ValueError, "posterior_samples"),
        ({"posterior_samples": {"slope": torch.zeros(3)}}, ValueError, "slope"),
        (
            {"posterior_samples": {"slope": torch.zeros(2, 3), "noise": torch.ones(2)}},
            ValueError,
            "noise",
        ),
        ({"posterior_samples": {"nope": torch.zeros(1, 3)}}, ValueError, "nope"),
        ({"return_sites": "y"}, TypeError, "return_sites"),
        ({"return_sites": ["nope"]}, ValueError, "nope"),
        ({"batch_dims": -1}, ValueError, "batch_dims"),
    ],
)
def test_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        predictive(make(), X, **kwargs)


def test_model_must_be_a_module():
    with pytest.raises(TypeError, match="model"):
        predictive(lambda x: x, X)


@pytest.mark.parametrize("vectorize", [False, True])
def test_draws_stay_on_the_model_device(device, vectorize):
    """On CPU everywhere; on CUDA where the machine has a GPU (``device`` fixture)."""
    model = Regression().to(device)
    model.observe(y=Y.to(device))
    x = X.to(device)
    samples = {name: value.to(device) for name, value in mcmc_samples(1, 4).items()}
    for kwargs in ({"num_samples": 4}, {"posterior_samples": samples}):
        draws = predictive(model, x, vectorize=vectorize, **kwargs)
        assert {value.device.type for value in draws.values()} == {device.type}
        assert draws["y"].shape == (4, 5)
