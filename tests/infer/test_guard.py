"""The optional non-finite guard names the variables and parameters at fault."""

import math

import pytest
import torch

import borch
from borch import distributions as dist
from borch import posterior
from borch.infer import NonFiniteError, check_finite_gradients, nonfinite_guard


def _model():
    model = borch.Module()
    model.observe(y=torch.tensor([0.5, 1.5]))
    return model


def _forward(model):
    model.scale = dist.LogNormal(0.0, 1.0)
    model.loc = dist.Normal(0.0, 1.0)
    model.y = dist.Normal(model.loc, model.scale)
    return borch.infer.vi_loss(**borch.pq_to_infer(model))


def test_a_finite_loss_passes_through_unchanged():
    model = _model()
    loss = _forward(model)
    assert nonfinite_guard(model, loss) is loss
    loss.backward()
    check_finite_gradients(model)  # does not raise


def test_a_diverged_parameter_is_named_with_the_variables_it_breaks():
    model = _model()
    _forward(model)
    with torch.no_grad():
        model.posterior.loc.loc.fill_(math.nan)
    borch.sample(model)
    with borch.validate_args(False):  # else y's NaN loc is refused at assignment
        loss = _forward(model)
    with pytest.raises(NonFiniteError) as info:
        nonfinite_guard(model, loss)
    message = str(info.value)
    assert "loss is nan" in message
    assert "parameter 'posterior.loc.loc'" in message
    assert "value of 'loc'" in message
    assert "likelihood of 'y'" in message
    assert "'scale'" not in message  # a finite variable is not blamed


def test_an_observation_outside_the_support_is_named_in_a_submodule():
    outer = torch.nn.Module()
    outer.inner = borch.Module()
    with borch.validate_args(False):  # the opt-out lets the bad datum through
        outer.inner.observe(r=torch.tensor([0.5, 1.5]))
        outer.inner.r = dist.Beta(2.0, 2.0)
    loss = borch.infer.vi_loss(**borch.pq_to_infer(outer))
    with pytest.raises(NonFiniteError, match="likelihood of 'inner.r' at its value"):
        nonfinite_guard(outer, loss)


def test_a_nan_from_outside_the_variables_says_so():
    model = _model()
    loss = _forward(model) * math.nan
    with pytest.raises(NonFiniteError, match="came from outside them"):
        nonfinite_guard(model, loss)


def test_float32_underflow_is_caught_by_the_guard():
    """In float32, FisherSnedecor(df2=e^-3) draws 7.6e22 (seed 0): the loss is finite
    but the reparameterisation gradient of df2 is NaN (torch's Gamma sampler
    underflows); see tests/test_properties.py."""
    torch.manual_seed(0)
    model = borch.Module(posterior=posterior.Automatic())
    model.x = dist.FisherSnedecor(torch.tensor([1.0, math.e]), math.exp(-3))
    loss = nonfinite_guard(model, borch.infer.vi_loss(**borch.pq_to_infer(model)))
    loss.backward()
    with pytest.raises(
        NonFiniteError, match="gradient of parameter 'posterior.x.df2.unconstrained'"
    ):
        check_finite_gradients(model)
