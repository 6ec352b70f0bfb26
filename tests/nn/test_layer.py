"""Construction of borch.nn layers: priors, posteriors, overrides and their errors."""

from __future__ import annotations

import inspect
import math
import pickle

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import borch
from borch import distributions as dist
from borch import nn, posterior, rv_factories
from borch.nn.defaults import DEFAULT_LOG_SCALE


def test_posterior_starts_at_torch_initialisation():
    torch.manual_seed(3)
    reference = torch.nn.Linear(5, 4)
    torch.manual_seed(3)
    layer = nn.Linear(5, 4)
    torch.testing.assert_close(layer.posterior.weight.loc, reference.weight)
    torch.testing.assert_close(layer.posterior.bias.loc, reference.bias)
    scale = layer.posterior.weight.distribution.scale
    torch.testing.assert_close(
        scale, torch.full_like(scale, math.exp(DEFAULT_LOG_SCALE))
    )


def test_default_priors_are_standard_normal():
    """``Normal(0, 1)`` on every parameter, whatever the layer's fan-in."""
    for layer in (nn.Conv2d(3, 8, 5), nn.Linear(300, 2), nn.Embedding(10, 4)):
        for name, prior in layer.prior.named_children():
            assert isinstance(prior, dist.Normal), name
            assert (prior.loc, prior.scale) == (0.0, 1.0), name
    assert set(dict(nn.Conv2d(3, 8, 5).prior.named_children())) == {"weight", "bias"}


def test_parameters_are_the_posterior_parameters():
    layer = nn.Linear(3, 2)
    names = {name for name, _ in layer.named_parameters()}
    assert names == {
        "posterior.weight.loc",
        "posterior.weight.scale.log_scale",
        "posterior.bias.loc",
        "posterior.bias.scale.log_scale",
    }


def test_reading_a_weight_gives_the_current_draw():
    layer = nn.Linear(3, 2)
    first = layer.weight
    assert type(first) is torch.Tensor and first.shape == (2, 3)
    assert layer.weight is first  # cached until the next draw
    borch.sample(layer)
    assert not torch.equal(layer.weight, first)


def test_bool_bias_goes_to_torch_and_random_variable_overrides():
    layer = nn.Linear(3, 2, bias=False, weight=dist.Laplace(0.0, 0.1))
    assert layer.bias is None
    assert type(layer.prior.weight).__name__ == "Laplace"
    assert "bias" not in layer.prior._modules
    override = nn.Linear(3, 2, bias=dist.Normal(0.0, 0.5))
    assert override.prior.bias.scale == 0.5


def test_override_starts_the_posterior_at_torch_initialisation():
    torch.manual_seed(0)
    reference = torch.nn.Linear(3, 2)
    torch.manual_seed(0)
    layer = nn.Linear(3, 2, weight=dist.Laplace(0.0, 0.1))
    torch.testing.assert_close(layer.posterior.weight.loc, reference.weight)


def test_override_outside_the_support_keeps_the_prior_draw():
    layer = nn.Linear(3, 2, weight=dist.Gamma(2.0, 2.0))
    assert bool((layer.weight > 0).all())


def test_unknown_override_names_the_parameter_and_lists_the_real_ones():
    with pytest.raises(ValueError, match=r"no parameter 'wieght'.*weight, bias"):
        nn.Linear(3, 2, wieght=dist.Normal(0.0, 1.0))
    with pytest.raises(ValueError, match="no parameter 'bias_k'"):
        nn.MultiheadAttention(4, 2, bias_k=dist.Normal(0.0, 1.0))


def test_override_of_the_wrong_shape_is_an_error():
    with pytest.raises(ValueError, match=r"Linear.weight has shape \(5,\)"):
        nn.Linear(3, 2, weight=dist.Normal(torch.zeros(5), 1.0))


def test_posterior_argument():
    layer = nn.Linear(3, 2, posterior=posterior.ScaledNormal(0.1))
    assert isinstance(layer.posterior, posterior.ScaledNormal)
    with pytest.raises(TypeError, match=r"posterior=Automatic\(\)"):
        nn.Linear(3, 2, posterior=posterior.Automatic)
    with pytest.raises(TypeError, match="got str"):
        nn.Linear(3, 2, posterior="normal")


def test_rv_factory_argument():
    layer = nn.Linear(3, 2, rv_factory=rv_factories.xavier_normal_rv)
    assert layer.prior.weight.scale == pytest.approx(math.sqrt(2 / 5))
    with pytest.raises(TypeError, match="rv_factory must be a callable"):
        nn.Linear(3, 2, rv_factory=1.0)
    with pytest.raises(TypeError, match="returned float for parameter 'weight'"):
        nn.Linear(3, 2, rv_factory=lambda name, parameter: 1.0)


def test_factory_may_keep_a_parameter():
    layer = nn.Linear(
        3,
        2,
        rv_factory=lambda name, p: (
            None if name == "bias" else rv_factories.delta_rv(name, p)
        ),
        posterior=posterior.PointMass(),
    )
    assert isinstance(layer._parameters["bias"], torch.nn.Parameter)
    assert "weight" in layer.prior._modules


def test_normalisation_layers_keep_parameters_unless_told():
    norm = nn.LayerNorm(4)
    assert isinstance(norm._parameters["weight"], torch.nn.Parameter)
    assert not norm.prior._modules
    random = nn.LayerNorm(4, weight=dist.Normal(1.0, 0.1))
    assert "weight" in random.prior._modules
    assert isinstance(random._parameters["bias"], torch.nn.Parameter)
    factory = nn.BatchNorm1d(4, rv_factory=rv_factories.parameter_to_normal_rv)
    assert set(factory.prior._modules) == {"weight", "bias"}


def test_dtype_and_device_arguments_reach_the_posterior():
    layer = nn.Linear(3, 2, dtype=torch.float64)
    assert layer.posterior.weight.loc.dtype == torch.float64
    assert layer(torch.ones(1, 3, dtype=torch.float64)).dtype == torch.float64
    moved = nn.Linear(3, 2).double()
    assert moved(torch.ones(1, 3, dtype=torch.float64)).dtype == torch.float64


def test_signature_shows_torch_arguments_and_ours():
    parameters = inspect.signature(nn.Linear).parameters
    assert list(parameters)[:3] == ["in_features", "out_features", "bias"]
    for name in ("posterior", "rv_factory", "estimator", "priors"):
        assert name in parameters
    assert "estimator" not in inspect.signature(nn.LSTM).parameters


def test_state_dict_round_trip():
    torch.manual_seed(0)
    source = nn.Linear(3, 2)
    with torch.no_grad():
        source.posterior.weight.loc.add_(1.0)
    target = nn.Linear(3, 2)
    target.load_state_dict(source.state_dict())
    torch.testing.assert_close(target.posterior.weight.loc, source.posterior.weight.loc)
    clone = pickle.loads(pickle.dumps(source))
    torch.testing.assert_close(clone.posterior.weight.loc, source.posterior.weight.loc)


def test_lazy_layer_converts_once_materialised():
    layer = nn.LazyLinear(4, weight=dist.Laplace(0.0, 1.0), estimator="flipout")
    assert not layer.prior._modules
    output = layer(torch.randn(2, 3))
    assert type(layer) is nn.Linear
    assert output.shape == (2, 4)
    assert type(layer.prior.weight).__name__ == "Laplace"
    assert type(layer.prior.bias).__name__ == "Normal"
    assert layer.posterior.weight.loc.shape == (4, 3)


def test_torch_submodules_made_in_init_are_converted():
    attention = nn.MultiheadAttention(8, 2)
    assert isinstance(attention.out_proj, borch.Module)
    assert {"in_proj_weight", "in_proj_bias"} <= set(attention.prior._modules)
    layer = torch.nn.TransformerEncoderLayer(8, 2, 16)
    encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    for child in encoder.layers:
        assert isinstance(child.linear1, nn.Linear)
        assert isinstance(child.self_attn, nn.MultiheadAttention)
    deterministic = {name for name, _ in encoder.named_parameters()}
    assert all(".posterior." in name or ".norm" in name for name in deterministic)
    assert type(layer) is torch.nn.TransformerEncoderLayer  # the argument is untouched


def test_children_get_their_own_posterior_of_the_given_family():
    attention = nn.MultiheadAttention(8, 2, posterior=posterior.ScaledNormal(0.05))
    assert isinstance(attention.out_proj.posterior, posterior.ScaledNormal)
    assert attention.out_proj.posterior is not attention.posterior


@given(st.one_of(st.integers(), st.text(max_size=5), st.floats(allow_nan=True)))
def test_bad_posterior_values_are_type_errors(value):
    with pytest.raises(TypeError, match="posterior must be"):
        nn.Linear(2, 2, posterior=value)
