"""Automatic and AsPrior: the prior's family with learnable arguments."""

import torch

import borch
from borch import distributions as dist
from borch import posterior


class Hierarchy(borch.Module):
    def __init__(self, family):
        super().__init__(posterior=family)
        self.mu = dist.StudentT(3.0, 3.0, 4.0)
        self.spread = dist.Gamma(0.5, 0.5)

    def forward(self):
        self.y = dist.Normal(self.mu, self.spread)
        return self.y


def test_arguments_start_at_the_prior_and_are_broadcast():
    model = borch.Module()
    model.x = dist.Gamma(torch.tensor([1.0, 2.0, 3.0]), 2.0)
    q = model.posterior.x
    assert torch.allclose(q.distribution.concentration, torch.tensor([1.0, 2.0, 3.0]))
    assert torch.allclose(q.distribution.rate, torch.full((3,), 2.0))
    # one learnable rate per element: mean-field
    assert q.rate.tensor.shape == (3,)


def test_hierarchy_is_kept_and_relinked():
    model = Hierarchy(posterior.Automatic())
    model()
    assert model.posterior.y.loc is model.mu
    assert model.posterior.y.scale is model.spread
    borch.sample(model)
    model()
    assert model.posterior.y.loc is model.mu
    # only the prior's constant arguments became parameters
    assert "loc" not in dict(model.posterior.y.named_parameters())


def test_as_prior_does_not_keep_the_hierarchy():
    model = Hierarchy(posterior.AsPrior())
    model()
    loc = model.posterior.y.loc
    assert isinstance(loc, torch.nn.Parameter)
    borch.sample(model)
    model()
    assert model.posterior.y.loc is loc
    assert not torch.equal(loc, model.mu)


def test_discrete_and_fixed_arguments_stay_fixed():
    model = borch.Module()
    model.k = dist.Binomial(10, torch.tensor([0.2, 0.5]))
    q = model.posterior.k
    assert q.total_count == 10
    assert [name for name, _ in q.named_parameters()] == ["probs.unconstrained"]


def test_discrete_latent_gets_a_discrete_approximation():
    model = borch.Module()
    model.z = dist.Bernoulli(0.3)
    assert type(model.posterior.z).__name__ == "Bernoulli"
    assert model.z.item() in (0.0, 1.0)


def test_a_latent_first_met_under_no_grad_is_drawn_from_its_prior():
    """Without gradients an argument computed from another variable looks like a
    constant, so no approximation is made then (nothing warns): the run draws from
    the prior, and the first assignment with gradients makes the linked
    approximation."""
    model = borch.Module()
    model.mu = dist.Normal(0.0, 1.0)
    with torch.no_grad():
        model.y = dist.Normal(model.mu + 100.0, 0.01)
        assert model.posterior.approximation("y") is None
        assert (model.y - model.mu - 100.0).abs() < 0.1
        (_, site) = borch.sites(model)
        assert site.approximation is model.prior.y and not site.observed
    model.y = dist.Normal(model.mu + 100.0, 0.01)
    assert model.posterior.y.loc is not None  # made now, linked to mu
    assert "loc" not in dict(model.posterior.y.named_parameters())
