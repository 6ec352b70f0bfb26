"""borch.sites: the one record of a model run."""

import pytest
import torch
from torch import nn

import borch
from borch import distributions as dist
from borch import posterior


class Layer(borch.Module):
    def forward(self, x):
        self.weight = dist.Normal(torch.zeros(2), 1.0)
        return x * self.weight


class Model(borch.Module):
    def __init__(self):
        super().__init__()
        self.layer = Layer()
        self.shared = Layer()
        self.again = self.shared  # the same module under two names

    def forward(self, x):
        self.noise = dist.LogNormal(0.0, 1.0)
        hidden = self.layer(x) + self.shared(x)
        self.y = dist.Normal(hidden, self.noise)
        return self.y


def fitted_model():
    model = Model()
    model.observe(y=torch.tensor([0.5, -0.5]))
    model(torch.ones(2))
    return model


def test_names_kinds_and_values_of_nested_modules():
    model = fitted_model()
    found = borch.sites(model)
    assert [site.name for site in found] == [
        "noise",
        "y",
        "layer.weight",
        "shared.weight",
    ]
    by_name = {site.name: site for site in found}
    y = by_name["y"]
    assert y.observed and y.approximation is None
    assert torch.equal(y.value, model.observed.y)
    assert y.prior is model.prior.y
    weight = by_name["layer.weight"]
    assert not weight.observed
    assert weight.approximation is model.layer.posterior.weight
    assert weight.prior is model.layer.prior.weight
    assert torch.equal(weight.value, model.layer.weight)
    assert weight.value.requires_grad  # the draw the loss differentiates
    for site in found:
        assert (site.scale, site.mask, site.plates) == (1.0, None, ())


def test_the_record_is_empty_after_sample_until_the_model_runs():
    model = fitted_model()
    borch.sample(model)
    assert borch.sites(model) == []
    _ = model.layer.weight  # reading a variable uses it
    assert [site.name for site in borch.sites(model)] == ["layer.weight"]
    model(torch.ones(2))
    assert len(borch.sites(model)) == 4


def test_pq_to_infer_and_pq_dict_are_adapters_of_sites():
    model = fitted_model()
    found = borch.sites(model)
    inputs = borch.pq_to_infer(model)
    assert list(inputs) == ["p_dists", "q_dists", "values", "observed"]
    assert inputs["observed"] == [site.observed for site in found]
    for site, p, q, value in zip(
        found, inputs["p_dists"], inputs["q_dists"], inputs["values"]
    ):
        assert p is site.prior.distribution
        assert q is (
            None if site.approximation is None else site.approximation.distribution
        )
        assert value is site.value
    entries = borch.pq_dict(model)
    assert [entry["prior"] for entry in entries] == [site.prior for site in found]
    assert [entry["posterior"] for entry in entries] == [
        site.approximation for site in found
    ]


def test_conditioned_and_simulated_variables_are_data():
    model = fitted_model()
    borch.sample(model)
    with borch.condition(model, {"layer.weight": torch.tensor([3.0, 4.0])}):
        model(torch.ones(2))
        weight = {site.name: site for site in borch.sites(model)}["layer.weight"]
    assert weight.observed and weight.approximation is None
    assert torch.equal(weight.value, torch.tensor([3.0, 4.0]))
    borch.sample(model)
    with borch.simulate_observed(model):
        model(torch.ones(2))
        y = {site.name: site for site in borch.sites(model)}["y"]
    assert y.observed
    assert not torch.equal(y.value, model.observed.y)  # a draw, not the data


def test_a_wrapped_model_has_prefixed_names_and_deleted_variables_go():
    wrapper = nn.Sequential(fitted_model())
    assert borch.sites(wrapper)[0].name == "0.noise"
    model = wrapper[0]
    del model.noise
    assert "0.noise" not in [site.name for site in borch.sites(wrapper)]


def test_a_used_latent_without_approximation_gets_one():
    model = borch.Module()
    model.observe(x=torch.tensor(1.0))
    model.x = dist.Normal(0.0, 1.0)
    model.observe(x=None)  # no longer data; the posterior has nothing for it yet
    (site,) = borch.sites(model)
    assert not site.observed
    assert site.approximation is model.posterior.x


def test_every_posterior_family_gives_its_approximation():
    for family in (
        posterior.Automatic,
        posterior.Normal,
        posterior.ScaledNormal,
        posterior.AsPrior,
        posterior.PointMass,
    ):
        model = borch.Module(posterior=family())
        model.z = dist.Gamma(2.0, 2.0)
        (site,) = borch.sites(model)
        assert site.approximation is model.posterior.z
        assert torch.equal(site.value, model.z)


def test_sites_needs_a_module():
    with pytest.raises(TypeError, match="module must be a torch.nn.Module"):
        borch.sites("model")
