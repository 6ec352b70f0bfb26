"""Prior factories of borch.rv_factories (kept with the nn tests: borch.nn is their
user)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from borch import distributions as dist
from borch import nn, rv_factories
from borch import posterior as borch_posterior

FACTORIES = [
    rv_factories.parameter_to_normal_rv,
    rv_factories.parameter_to_scaled_normal_rv,
    rv_factories.kaiming_normal_rv,
    rv_factories.xavier_normal_rv,
    rv_factories.parameter_to_maxwidth_uniform,
    rv_factories.delta_rv,
    rv_factories.default_rv_factory,
]
SHAPES = [(4,), (3, 5), (2, 3, 3, 3)]


@pytest.mark.parametrize("factory", FACTORIES, ids=lambda f: f.__name__)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_prior_starts_at_the_parameter_and_fits_its_shape(factory, shape):
    parameter = torch.nn.Parameter(torch.randn(shape) * 0.3)
    prior = factory("weight", parameter)
    assert isinstance(prior, dist.Normal | dist.Uniform | dist.Delta)
    torch.testing.assert_close(prior.tensor, parameter.detach())
    assert not prior.tensor.requires_grad
    assert prior.tensor is not parameter
    assert torch.isfinite(prior.log_prob()).all()
    shape_of = prior.distribution.batch_shape + prior.distribution.event_shape
    assert torch.broadcast_shapes(shape_of, parameter.shape) == parameter.shape
    with torch.no_grad():
        parameter.add_(1.0)  # the prior's value is a copy
    assert not torch.equal(prior.tensor, parameter.detach())


@pytest.mark.parametrize("factory", FACTORIES, ids=lambda f: f.__name__)
def test_every_factory_builds_a_working_layer(factory):
    torch.manual_seed(0)
    reference = torch.nn.Conv2d(2, 3, 3)
    torch.manual_seed(0)
    posterior = (
        borch_posterior.PointMass()
        if factory is rv_factories.delta_rv
        else borch_posterior.Normal(loc_at_prior_mean=False, log_scale=-5.0)
    )
    layer = nn.Conv2d(2, 3, 3, rv_factory=factory, posterior=posterior)
    for name in ("weight", "bias"):
        distribution = layer._modules["posterior"]._modules[name].distribution
        if isinstance(distribution, torch.distributions.Normal):
            start = distribution.loc
        elif isinstance(distribution, torch.distributions.TransformedDistribution):
            # a Normal on the unconstrained line, mapped into a bounded support
            start = distribution.transforms[0](distribution.base_dist.loc)
        else:  # a point mass
            start = getattr(layer, name)
        torch.testing.assert_close(start, getattr(reference, name).detach())
    assert torch.isfinite(layer(torch.randn(1, 2, 5, 5))).all()


def test_scales():
    weight = torch.zeros(4, 2, 3, 3)  # fan_in 18, fan_out 36
    assert rv_factories.kaiming_normal_rv("w", weight).scale == pytest.approx(
        math.sqrt(2 / 18)
    )
    assert rv_factories.xavier_normal_rv("w", weight).scale == pytest.approx(
        math.sqrt(2 / 54)
    )
    assert rv_factories.parameter_to_scaled_normal_rv(
        "w", weight, std_scale=3.0
    ).scale == pytest.approx(3 / math.sqrt(18))
    custom = rv_factories.parameter_to_scaled_normal_rv(
        "w", weight, std_fn=lambda p: 0.25, std_scale=2.0
    )
    assert custom.scale == pytest.approx(0.5)
    normal = rv_factories.parameter_to_normal_rv("b", torch.zeros(3), 1.0, 2.0)
    assert (normal.loc, normal.scale) == (1.0, 2.0)


def test_maxwidth_uniform_contains_the_parameter():
    parameter = torch.tensor([-0.7, 0.2, 0.7])
    prior = rv_factories.parameter_to_maxwidth_uniform("w", parameter)
    assert float(prior.high) == pytest.approx(0.7, rel=1e-5)
    assert bool(prior.distribution.support.check(parameter).all())
    zeros = rv_factories.parameter_to_maxwidth_uniform("w", torch.zeros(2))
    assert float(zeros.high) == 1.0
    with pytest.raises(ValueError, match="parameter 'w' has non-finite values"):
        rv_factories.parameter_to_maxwidth_uniform("w", torch.tensor([math.inf]))


@given(st.one_of(st.floats(max_value=0.0), st.just(math.nan), st.just(math.inf)))
def test_bad_scales_are_value_errors(value):
    with pytest.raises(ValueError, match="prior_sd must be a positive finite number"):
        rv_factories.parameter_to_normal_rv("b", torch.zeros(2), prior_sd=value)
    with pytest.raises(ValueError, match="std_scale must be a positive finite"):
        rv_factories.parameter_to_scaled_normal_rv(
            "w", torch.zeros(2, 2), std_scale=value
        )
    with pytest.raises(ValueError, match=r"std_fn\('w'\) must be a positive"):
        rv_factories.parameter_to_scaled_normal_rv(
            "w", torch.zeros(2, 2), std_fn=lambda p: value
        )
