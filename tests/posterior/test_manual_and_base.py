"""Manual posteriors, point masses and the Posterior base class."""

import pytest
import torch

import borch
from borch import distributions as dist
from borch import posterior


def test_manual_posterior_uses_what_was_set():
    q = posterior.Manual()
    q.loc = torch.nn.Parameter(torch.zeros(2))
    q.x = dist.Normal(q.loc, 1.0)
    model = borch.Module(posterior=q)
    model.x = dist.Normal(torch.zeros(2), 5.0)
    assert model.posterior.x is q.x
    assert list(model.parameters()) == [q.loc]  # shared parameter listed once
    assert sorted(model.state_dict()) == ["posterior.loc", "posterior.x.loc"]


def test_manual_posterior_names_a_missing_variable():
    model = borch.Module(posterior=posterior.Manual())
    with pytest.raises(LookupError, match="no approximating variable 'missing'"):
        model.missing = dist.Normal(0.0, 1.0)


def test_manual_hierarchy_inside_the_posterior():
    q = posterior.Manual()
    q.loc = torch.nn.Parameter(torch.tensor(3.0))
    q.t = dist.StudentT(3.0, q.loc, 1.0)
    q.y = dist.Normal(q.t, 0.001)
    model = borch.Module(posterior=q)
    model.t = dist.StudentT(3.0, 3.0, 4.0)
    model.y = dist.Normal(model.t, 0.3)
    assert torch.allclose(model.y, model.t, atol=0.01)


def test_point_mass_values_stay_and_track_their_parameter():
    model = borch.Module(posterior=posterior.PointMass(loc_at_prior_mean=True))
    model.rate = dist.Gamma(2.0, 1.0)
    assert model.rate.item() == pytest.approx(2.0)
    borch.sample(model)
    assert model.rate.item() == pytest.approx(2.0)
    with torch.no_grad():
        model.posterior.rate.unconstrained_value.fill_(0.0)
    assert model.rate.item() == pytest.approx(1.0)


def test_point_mass_refuses_discrete_priors():
    model = borch.Module(posterior=posterior.PointMass())
    with pytest.raises(ValueError, match="'k'.*discrete support"):
        model.k = dist.Poisson(2.0)


def test_custom_family_from_the_base_class():
    class Laplacian(posterior.Posterior):
        def register_random_variable(self, name, prior):
            shape = prior.distribution.batch_shape
            return dist.Laplace(torch.nn.Parameter(torch.zeros(shape)), 0.1)

    model = borch.Module(posterior=Laplacian())
    model.w = dist.Normal(torch.zeros(3), 1.0)
    assert type(model.posterior.w).__name__ == "Laplace"
    assert model.posterior.w.name == "w"

    class Broken(posterior.Posterior):
        def register_random_variable(self, name, prior):
            return torch.zeros(1)

    with pytest.raises(TypeError, match="must return a RandomVariable"):
        borch.Module(posterior=Broken()).w = dist.Normal(0.0, 1.0)

    with pytest.raises(NotImplementedError):
        borch.Module(posterior=posterior.Posterior()).w = dist.Normal(0.0, 1.0)


def test_posterior_is_not_called_and_rejects_non_variables():
    family = posterior.Normal()
    with pytest.raises(RuntimeError, match="is not called"):
        family()
    with pytest.raises(TypeError, match="must be a RandomVariable"):
        family.set_approximation("x", torch.zeros(1))
