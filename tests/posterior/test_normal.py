"""Normal and ScaledNormal approximations."""

import math

import pytest
import torch

import borch
from borch import distributions as dist
from borch import posterior


def test_loc_at_prior_mean_and_scale_from_log_scale():
    model = borch.Module(posterior=posterior.Normal(log_scale=-2.0))
    model.x = dist.Normal(torch.tensor([1.0, 2.0]), 3.0)
    q = model.posterior.x.distribution
    assert torch.equal(q.loc, torch.tensor([1.0, 2.0]))
    assert torch.allclose(q.scale, torch.full((2,), math.exp(-2.0)))


def test_loc_at_current_value():
    model = borch.Module(posterior=posterior.Normal(loc_at_prior_mean=False))
    prior = dist.Normal(0.0, 1.0)
    prior.tensor = torch.tensor(0.7)
    model.x = prior
    assert model.posterior.x.distribution.loc.item() == pytest.approx(0.7)


def test_priors_without_a_mean_start_at_the_median():
    model = borch.Module(posterior=posterior.Normal())
    model.x = dist.Cauchy(2.0, 1.0)
    assert model.posterior.x.distribution.loc.item() == pytest.approx(2.0)


@pytest.mark.parametrize(
    "prior",
    [
        dist.Gamma(2.0, 2.0),
        dist.Beta(2.0, 3.0),
        dist.Dirichlet(torch.ones(3)),
        dist.Uniform(-1.0, 4.0),
        dist.LKJCholesky(3, 1.0),
    ],
)
def test_constrained_supports_are_respected(prior):
    model = borch.Module(posterior=posterior.Normal(log_scale=1.0))
    model.x = prior
    support = model.prior.x.distribution.support
    for _ in range(20):
        borch.sample(model)
        assert support.check(model.x).all()


@pytest.mark.parametrize(
    "prior", [dist.Gamma(2.0, 2.0), dist.Beta(2.0, 3.0), dist.Dirichlet(torch.ones(3))]
)
def test_constrained_loc_starts_at_the_prior_mean(prior):
    model = borch.Module(posterior=posterior.Normal(log_scale=-20.0))
    model.x = prior
    assert torch.allclose(model.x, model.prior.x.distribution.mean, atol=1e-5)


def test_scaled_normal_scales():
    model = borch.Module(posterior=posterior.ScaledNormal(scaling=0.1))
    model.normal = dist.Normal(0.0, 2.0)
    model.student = dist.StudentT(
        3.0, 3.0, 4.0
    )  # its scale, not its infinite-tailed sd
    model.gamma = dist.Gamma(4.0, 2.0)
    assert model.posterior.normal.scale.item() == pytest.approx(0.2)
    assert model.posterior.student.scale.item() == pytest.approx(0.4)
    # Gamma: sd 1 at mean 2 carried through log: sd_u = sd / mean
    base = model.posterior.gamma.distribution.base_dist
    assert base.scale.item() == pytest.approx(0.1 * 1.0 / 2.0, rel=1e-5)
    assert base.loc.item() == pytest.approx(math.log(2.0), rel=1e-5)


def test_scaled_normal_heavy_tails_use_a_robust_spread():
    model = borch.Module(posterior=posterior.ScaledNormal(scaling=1.0))
    state = torch.random.get_rng_state()
    model.x = dist.HalfCauchy(1.0)  # infinite sd
    assert torch.equal(torch.random.get_rng_state(), state), "user RNG untouched"
    base = model.posterior.x.distribution.base_dist
    # log|C| for C ~ Cauchy has interquartile range 2*log(1+sqrt2)... ~ sd 1.307
    assert base.scale.item() == pytest.approx(1.31, abs=0.1)


def test_options_are_checked():
    with pytest.raises(ValueError, match="log_scale must be finite"):
        posterior.Normal(log_scale=float("inf"))
    with pytest.raises(ValueError, match="scaling must be a positive number"):
        posterior.ScaledNormal(scaling=0.0)


def test_scaled_normal_skewed_prior_gets_a_sound_spread():
    """The delta method gave LogNormal(0, e^2) an unconstrained sd of 7e11 in
    float64 (draws inf and 0, NaN loss); its log-scale sd is e^2 = 7.39, which the
    robust sampled estimate recovers to within its IQR noise (2000 draws: ~3%)."""
    model = borch.Module(posterior=posterior.ScaledNormal(scaling=1.0))
    model.x = dist.LogNormal(torch.zeros(2, dtype=torch.float64), math.exp(2.0))
    base = model.posterior.x.distribution.base_dist
    assert torch.allclose(
        base.scale, torch.full_like(base.scale, math.exp(2)), rtol=0.1
    )
    assert torch.isfinite(borch.infer.vi_loss(**borch.pq_to_infer(model)))


@pytest.mark.parametrize("family", [posterior.Normal, posterior.ScaledNormal])
def test_loc_at_prior_mean_gives_every_element_of_a_shaped_value_a_location(family):
    """borch.nn's priors are numbers holding their parameter's value: the
    approximation must have the value's shape, each loc at the prior's mean."""
    from borch import nn

    layer = nn.Linear(3, 4, posterior=family(loc_at_prior_mean=True))
    assert layer.posterior.weight.loc.shape == (4, 3)
    assert torch.equal(layer.posterior.weight.loc.detach(), torch.zeros(4, 3))
    assert layer(torch.ones(2, 3)).shape == (2, 4)
