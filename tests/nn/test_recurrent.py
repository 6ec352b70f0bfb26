"""Recurrent layers and attention: torch's fused weight list follows the draws."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import borch
from borch import nn

RECURRENT = ["RNN", "LSTM", "GRU"]


@pytest.mark.parametrize("name", RECURRENT)
def test_flat_weights_are_the_current_draws(name):
    torch.manual_seed(0)
    layer = getattr(nn, name)(3, 4, num_layers=2, bidirectional=True)
    x = torch.randn(5, 2, 3)
    first = layer(x)[0]
    for weight_name, weight in zip(layer._flat_weights_names, layer._flat_weights):
        assert weight is getattr(layer, weight_name)
    torch.testing.assert_close(layer(x)[0], first)  # same draws until borch.sample
    borch.sample(layer)
    second = layer(x)[0]
    assert not torch.equal(first, second)
    for weight_name, weight in zip(layer._flat_weights_names, layer._flat_weights):
        assert weight is getattr(layer, weight_name)


@pytest.mark.parametrize("name", RECURRENT)
def test_recurrent_layer_matches_torch_at_its_posterior_loc(name):
    """With the posterior scale at zero the draw is the loc, torch's initial
    weights: the output is torch's, packed sequences included."""
    torch.manual_seed(0)
    reference = getattr(torch.nn, name)(3, 4, batch_first=True)
    torch.manual_seed(0)
    layer = getattr(nn, name)(3, 4, batch_first=True)
    with torch.no_grad():
        for parameter_name, parameter in layer.named_parameters():
            if parameter_name.endswith("log_scale"):
                parameter.fill_(-80.0)
    borch.sample(layer)
    x = torch.randn(2, 5, 3)
    torch.testing.assert_close(layer(x)[0], reference(x)[0])
    packed = pack_padded_sequence(x, torch.tensor([5, 3]), batch_first=True)
    torch.testing.assert_close(layer(packed)[0].data, reference(packed)[0].data)


@pytest.mark.parametrize("name", ["RNNCell", "LSTMCell", "GRUCell"])
def test_cells_draw_new_weights(name):
    layer = getattr(nn, name)(3, 4)
    x = torch.randn(2, 3)
    first = layer(x)
    first = first[0] if isinstance(first, tuple) else first
    borch.sample(layer)
    second = layer(x)
    second = second[0] if isinstance(second, tuple) else second
    assert not torch.equal(first, second)


def test_recurrent_layer_survives_pickling_moving_and_flatten_parameters():
    layer = nn.LSTM(3, 4)
    layer(torch.randn(2, 1, 3))
    clone = pickle.loads(pickle.dumps(layer))
    assert all(
        weight is None for weight in pickle.loads(pickle.dumps(layer))._flat_weights
    )
    layer.flatten_parameters()
    moved = clone.double()
    output = moved(torch.randn(2, 1, 3, dtype=torch.float64))[0]
    assert output.dtype == torch.float64 and torch.isfinite(output).all()


def test_attention_and_transformer_weights_are_random():
    torch.manual_seed(0)
    attention = nn.MultiheadAttention(8, 2, batch_first=True)
    x = torch.randn(2, 3, 8)
    first, _ = attention(x, x, x)
    borch.sample(attention)
    second, _ = attention(x, x, x)
    assert not torch.equal(first, second)
    names = {name for name, _ in borch.named_random_variables(attention)}
    assert names == {
        "posterior.in_proj_weight",
        "posterior.in_proj_bias",
        "out_proj.posterior.weight",
        "out_proj.posterior.bias",
    }

    model = nn.Transformer(8, 2, 1, 1, 16, batch_first=True)
    source, target = torch.randn(2, 4, 8), torch.randn(2, 3, 8)
    first = model(source, target)
    borch.sample(model)
    assert not torch.equal(first, model(source, target))
    variables = {name for name, _ in borch.named_random_variables(model)}
    for path, _ in torch.nn.Transformer(
        8, 2, 1, 1, 16, batch_first=True
    ).named_parameters():
        owner, _, parameter = path.rpartition(".")
        if "norm" in owner:  # normalisation layers stay deterministic
            continue
        assert f"{owner}.posterior.{parameter}" in variables, path


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("name", RECURRENT)
def test_recurrent_layers_on_the_gpu(name):
    layer = getattr(nn, name)(3, 4, num_layers=2).cuda()
    output = layer(torch.randn(5, 2, 3, device="cuda"))[0]
    output.sum().backward()
    assert torch.isfinite(output).all()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())
