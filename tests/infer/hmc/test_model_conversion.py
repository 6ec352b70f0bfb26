"""From models to potentials: the closure of the low-level API, the flat layout of
latent variables, and the potential of every continuous distribution."""

import math

import numpy as np
import pytest
import torch
from torch.distributions import biject_to

import borch
from borch import distributions as dist
from borch import posterior
from borch.infer import dual_averaging, find_reasonable_epsilon, nuts_step
from borch.infer.hmc.model_conversion import (
    ModelPotential,
    SamplerPointMass,
    model_to_neg_log_prob_closure,
    sampling_copy,
)
from borch.posterior.approximations import canonical_support
from tests.distributions.examples import EXAMPLES
from tests.infer.mcmc_stats import assert_mean_within_mcse

#: Distributions whose support has no bijection from unconstrained space.
NO_BIJECTION = {"Wishart"}
#: Degenerate distributions that are not sampled by MCMC (a fixed or learned value).
DEGENERATE = {"Delta", "PointMass"}


def _is_discrete(name):
    return getattr(dist, name)(**EXAMPLES[name]()).distribution.support.is_discrete


CONTINUOUS = sorted(
    name
    for name in EXAMPLES
    if name not in NO_BIJECTION | DEGENERATE and not _is_discrete(name)
)
DISCRETE = sorted(name for name in EXAMPLES if _is_discrete(name))


class Single(borch.Module):
    """A model with one latent variable ``x`` of a given family."""

    def __init__(self, name):
        super().__init__()
        self.name = name

    def forward(self):
        self.x = getattr(dist, self.name)(**EXAMPLES[self.name]())


def manual_potential(name, flat):
    """-log p(T(u)) - log|det dT/du| with torch.distributions alone."""
    prior = getattr(dist, name)(**EXAMPLES[name]()).distribution
    transform = biject_to(canonical_support(prior.support))
    shape = transform.inv(prior.sample()).shape
    u = flat.reshape(shape)
    value = transform(u)
    jacobian = transform.log_abs_det_jacobian(u, value)
    return -prior.log_prob(value).sum() - jacobian.sum()


@pytest.mark.parametrize("name", CONTINUOUS)
def test_potential_is_the_unconstrained_negative_log_density(name):
    """The potential and its gradient equal the hand-built formula at random points
    (float32; relative tolerance 1e-4)."""
    potential = ModelPotential(sampling_copy(Single(name)), (), {})
    rng = np.random.default_rng(0)
    for _ in range(2):
        q = rng.uniform(-1, 1, potential.dim).astype(np.float32)
        energy, grad = potential(q)
        flat = torch.from_numpy(q.copy()).requires_grad_(True)
        expected = manual_potential(name, flat)
        (expected_grad,) = torch.autograd.grad(expected, flat)
        assert energy == pytest.approx(expected.item(), rel=1e-4, abs=1e-5)
        np.testing.assert_allclose(grad, expected_grad.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", DISCRETE)
def test_discrete_latents_are_refused_with_advice(name):
    with pytest.raises(ValueError, match=r"'x'.*discrete.*[Mm]arginalise.*variational"):
        ModelPotential(sampling_copy(Single(name)), (), {})


@pytest.mark.parametrize("name", sorted(NO_BIJECTION))
def test_supports_without_bijection_are_refused(name):
    with pytest.raises(ValueError, match="'x'.*bijection"):
        ModelPotential(sampling_copy(Single(name)), (), {})


class Regression(borch.Module):
    def forward(self, x):
        self.tau = dist.HalfCauchy(5.0)
        self.y = dist.Normal(torch.zeros_like(x), self.tau)


def test_closure_includes_the_log_det_jacobian():
    """For tau = exp(u): potential = -log HalfCauchy(tau) - log N(y | 0, tau) - u."""
    model = Regression(posterior=posterior.PointMass())
    y = torch.tensor([0.5, -1.0, 2.0])
    model.observe(y=y)
    neg_log_prob = model_to_neg_log_prob_closure(lambda: model(y), model)
    first = neg_log_prob()
    u = model.posterior.tau.unconstrained_value
    tau = u.exp()
    expected = (
        -torch.distributions.HalfCauchy(5.0).log_prob(tau)
        - torch.distributions.Normal(0.0, tau).log_prob(y).sum()
        - u
    )
    assert first.item() == pytest.approx(expected.item(), rel=1e-6)
    with torch.no_grad():
        u.add_(0.7)  # the closure sees new parameter values
    assert neg_log_prob().item() != pytest.approx(first.item())


def test_the_documented_loop_on_a_model():
    """Low-level NUTS on a model's parameters: Normal mean with known noise, whose
    posterior is Normal(sum(y) / (n + 1/100), 1 / (n + 1/100)); mean within 4 MCSE."""
    torch.manual_seed(2)

    class Mean(borch.Module):
        def forward(self, y):
            self.mu = dist.Normal(0.0, 10.0)
            self.y = dist.Normal(self.mu.expand(y.shape), 1.0)

    y = torch.tensor([1.2, 0.4, 2.2, 1.6])
    model = Mean(posterior=posterior.PointMass())
    model.observe(y=y)
    closure = model_to_neg_log_prob_closure(lambda: model(y), model)
    closure()  # creates the point mass
    parameters = list(model.parameters())
    eps0, eps_bar, h_bar = find_reasonable_epsilon(parameters, closure)
    eps, draws = eps0, []
    for i in range(1, 350):
        accept = nuts_step(eps, parameters, closure)
        if i < 100:
            eps, eps_bar, h_bar = dual_averaging(accept, i, eps0, eps_bar, h_bar)
        else:
            eps = eps_bar
            draws.append(model.mu.item())
    precision = len(y) + 1 / 100
    assert_mean_within_mcse(np.array(draws)[None], y.sum().item() / precision)


def test_closure_requires_point_masses():
    model = Regression(posterior=posterior.Normal())
    model.observe(y=torch.zeros(3))
    neg_log_prob = model_to_neg_log_prob_closure(lambda: model(torch.zeros(3)), model)
    with pytest.raises(TypeError, match="'tau'.*PointMass"):
        neg_log_prob()


def test_closure_of_a_model_without_random_variables():
    model = borch.Module()
    with pytest.raises(ValueError, match="no random variables"):
        model_to_neg_log_prob_closure(lambda: None, model)()


@pytest.mark.parametrize(
    ("closure", "model", "error"),
    [("model", borch.Module(), TypeError), (lambda: None, "model", TypeError)],
)
def test_closure_rejects_bad_arguments(closure, model, error):
    with pytest.raises(error):
        model_to_neg_log_prob_closure(closure, model)


class Layer(borch.Module):
    def __init__(self):
        super().__init__()
        self.scale = dist.Gamma(2.0, 2.0)

    def forward(self, x):
        self.weight = dist.Normal(torch.zeros(2, 3), 1.0)
        return x @ self.weight * self.scale


class Network(borch.Module):
    def __init__(self):
        super().__init__(posterior=posterior.Normal())
        self.layer = Layer()

    def forward(self, x):
        self.mu = dist.Normal(0.0, 1.0)
        self.y = dist.Normal(self.layer(x).sum(-1) + self.mu, 1.0)


def test_layout_names_and_shapes():
    """Names are the paths borch.condition accepts; constrained values have the
    variables' shapes and supports."""
    model = Network()
    x = torch.ones(4, 2)
    model.observe(y=torch.zeros(4))
    potential = ModelPotential(sampling_copy(model), (x,), {})
    names = {latent.name: latent.size for latent in potential.latents}
    assert names == {"layer.scale": 1, "layer.weight": 6, "mu": 1}
    assert potential.dim == 8
    positions = torch.randn(5, 7, potential.dim)
    values = potential.constrained(positions)
    assert values["layer.weight"].shape == (5, 7, 2, 3)
    assert values["mu"].shape == (5, 7)
    assert bool((values["layer.scale"] > 0).all())
    with borch.condition(model, {k: v[0, 0] for k, v in values.items()}):
        model(x)
        assert torch.equal(model.layer.weight, values["layer.weight"][0, 0])


def test_sampling_copy_leaves_the_model_alone():
    model = Network()
    model.observe(y=torch.zeros(4))
    model(torch.ones(4, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    copy = sampling_copy(model)
    assert isinstance(copy.posterior, SamplerPointMass)
    assert isinstance(copy.layer.posterior, SamplerPointMass)
    assert type(model.posterior) is posterior.Normal
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_sampling_copy_needs_a_borch_module():
    with pytest.raises(TypeError, match=r"borch\.Module"):
        sampling_copy(torch.nn.Linear(2, 3))


def test_models_without_latent_variables_are_refused():
    model = Regression()
    model.observe(y=torch.zeros(3), tau=torch.tensor(1.0))
    with pytest.raises(ValueError, match="no latent random variables"):
        ModelPotential(sampling_copy(model), (torch.zeros(3),), {})


def test_changing_latent_variables_are_refused():
    class Dynamic(borch.Module):
        calls = 0

        def forward(self):
            Dynamic.calls += 1
            self.a = dist.Normal(0.0, 1.0)
            if Dynamic.calls > 1:
                self.b = dist.Normal(0.0, 1.0)

    potential = ModelPotential(sampling_copy(Dynamic()), (), {})
    with pytest.raises(RuntimeError, match="same continuous latent variables"):
        potential(np.zeros(1, dtype=np.float32))


def test_log_density_terms_name_every_variable():
    model = Network()
    model.observe(y=torch.zeros(4))
    potential = ModelPotential(sampling_copy(model), (torch.ones(4, 2),), {})
    terms = dict(potential.log_density_terms(np.zeros(potential.dim, np.float32)))
    assert set(terms) == {"layer.scale", "layer.weight", "mu", "y"}
    assert all(math.isfinite(v) for v in terms.values())
