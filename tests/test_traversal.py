"""sample, pq_dict, pq_to_infer, named_random_variables, set_posteriors."""

import torch

import borch
from borch import distributions as dist
from borch import posterior


def make_model(family=None):
    model = borch.Module(posterior=family)
    model.observe(y=torch.tensor([0.5, 1.5]))
    model.mu = dist.Normal(0.0, 1.0)
    model.y = dist.Normal(model.mu, 1.0)
    return model


def test_sample_redraws_approximations_and_forgets_use():
    model = make_model()
    before = model.mu
    borch.sample(model)
    assert borch.pq_dict(model) == []
    assert not torch.equal(model.mu, before)


def test_sample_does_not_move_point_masses():
    model = make_model(posterior.PointMass())
    before = model.mu.detach().clone()
    borch.sample(model)
    assert torch.equal(model.mu, before)


def test_sample_prior_redraws_priors():
    model = make_model()
    before = model.prior.mu.tensor
    borch.sample(model, posterior=False, prior=True)
    assert not torch.equal(model.prior.mu.tensor, before)


def test_pq_dict_and_pq_to_infer():
    model = make_model()
    entries = borch.pq_dict(model)
    assert [list(entry) for entry in entries] == [
        ["prior", "posterior", "observed", "value"]
    ] * 2
    latent, observed = entries
    assert latent["posterior"] is model.posterior.mu and not latent["observed"]
    assert observed["posterior"] is None and observed["observed"]
    infer = borch.pq_to_infer(model)
    assert infer["observed"] == [False, True]
    assert infer["q_dists"][1] is None
    assert isinstance(infer["p_dists"][0], torch.distributions.Normal)
    assert infer["values"][0] is model.mu
    assert torch.equal(infer["values"][1], torch.tensor([0.5, 1.5]))
    # the approximating distribution is the one the value was drawn from
    assert infer["q_dists"][0] is model.posterior.mu.distribution


def test_reading_marks_variables_as_used():
    class Model(borch.Module):
        def __init__(self):
            super().__init__()
            self.w = dist.Normal(0.0, 1.0)

    model = Model()
    borch.sample(model)
    assert borch.pq_dict(model) == []
    model.w  # noqa: B018
    assert len(borch.pq_dict(model)) == 1


def test_random_variables_lists():
    model = make_model()
    assert [n for n, _ in borch.named_random_variables(model)] == ["posterior.mu"]
    assert [
        n for n, _ in borch.named_random_variables(model, posterior=False, prior=True)
    ] == [
        "prior.mu",
        "prior.y",
    ]
    assert list(borch.random_variables(model)) == [model.posterior.mu]


def test_set_posteriors_rebuilds_approximations():
    model = make_model(posterior.Normal())
    model.apply(borch.set_posteriors(posterior.PointMass))
    assert isinstance(model.posterior, posterior.PointMass)
    assert type(model.posterior.mu).__name__ == "PointMass"
    assert "y" not in model.posterior._modules
    loss = borch.infer.vi_loss(**borch.pq_to_infer(model))
    assert torch.isfinite(loss)
