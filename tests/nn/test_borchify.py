"""Converting existing torch modules and networks: borchify_module,
borchify_network, borchify_namespace."""

from __future__ import annotations

import copy
import pickle
import types

import pytest
import torch

import borch
from borch import nn, posterior, rv_factories
from borch.nn import borchify_module, borchify_namespace, borchify_network


class Residual(torch.nn.Module):
    """A plain (non-container) module with parameters of its own and children."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.inner = torch.nn.Linear(size, size)
        self.gate = torch.nn.Parameter(torch.full((size,), 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.gate * torch.tanh(self.inner(x))


def _network() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 6 * 6, 16),
        Residual(16),
        torch.nn.ModuleList([torch.nn.Linear(16, 3)]),
    )


def _forward(net, x):
    hidden = torch.nn.Sequential(*list(net)[:-1])(x)
    return net[-1][0](hidden)


def _train(net: torch.nn.Module, x: torch.Tensor, steps: int = 30) -> None:
    """A few optimisation steps, so the weights are not torch's initialisation."""
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05)
    target = torch.randint(0, 3, (x.shape[0],))
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(_forward(net, x), target).backward()
        optimizer.step()
    net.eval()


def test_whole_network_predicts_as_the_original_and_leaves_it_untouched():
    torch.manual_seed(0)
    net = _network()
    x = torch.randn(8, 1, 6, 6)
    _train(net, x)
    before = copy.deepcopy(net.state_dict())
    with torch.no_grad():
        expected = _forward(net, x)

    bayesian = borchify_network(net)

    # The input network is untouched: same classes, same tensors.
    assert type(net[0]) is torch.nn.Conv2d and type(net[5].inner) is torch.nn.Linear
    assert not any(isinstance(m, borch.Module) for m in net.modules())
    state = net.state_dict()
    assert set(state) == set(before)
    for key, value in before.items():
        assert torch.equal(state[key], value), key

    # Every weight and bias (except the normalisation layer's) is a random variable
    # whose posterior loc is the trained value.
    variables = dict(borch.named_random_variables(bayesian))
    for path, parameter in net.named_parameters():
        owner, _, name = path.rpartition(".")
        if owner == "1":  # BatchNorm2d keeps deterministic affine parameters
            assert isinstance(bayesian[1]._parameters[name], torch.nn.Parameter)
            continue
        approximation = variables[f"{owner}.posterior.{name}"]
        torch.testing.assert_close(approximation.loc, parameter.detach())
    assert isinstance(bayesian[5], borch.Module) and isinstance(bayesian[5], Residual)
    assert isinstance(bayesian[6][0], nn.Linear)

    # Before any training it predicts close to the original: the default posterior
    # scale is exp(-5) = 0.0067, which moves each output by a few percent of the
    # outputs' range (measured: at most 7% in one draw, 1.3% for the mean of the 10
    # draws); the mean over draws gives the same classes.
    bayesian.eval()
    scale = float(expected.abs().max())
    draws = []
    for _ in range(10):
        borch.sample(bayesian)
        with torch.no_grad():
            draws.append(_forward(bayesian, x))
        torch.testing.assert_close(draws[-1], expected, atol=0.1 * scale, rtol=0)
    mean = torch.stack(draws).mean(0)
    torch.testing.assert_close(mean, expected, atol=0.03 * scale, rtol=0)
    assert torch.equal(mean.argmax(1), expected.argmax(1))
    assert not torch.equal(draws[0], draws[1])  # but it is random


def test_converted_network_trains_through_its_posterior():
    torch.manual_seed(0)
    bayesian = borchify_network(_network())
    x = torch.randn(4, 1, 6, 6)
    _forward(bayesian, x).sum().backward()
    for name, parameter in bayesian.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name


def test_network_options():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1)
    )
    bayesian = borchify_network(
        net,
        rv_factory=rv_factories.xavier_normal_rv,
        posterior_creator=lambda: posterior.ScaledNormal(0.01),
    )
    assert isinstance(bayesian[0].posterior, posterior.ScaledNormal)
    assert bayesian[0].posterior is not bayesian[2].posterior
    assert bayesian[2].prior.weight.scale == pytest.approx((2 / 5) ** 0.5)
    with pytest.raises(TypeError, match="posterior_creator must make a new posterior"):
        borchify_network(net, posterior_creator=posterior.Normal())
    with pytest.raises(TypeError, match="net must be a torch.nn.Module, got int"):
        borchify_network(3)
    with pytest.raises(TypeError, match="rv_factory must be a callable"):
        borchify_network(net, rv_factory="normal")


def test_network_that_is_itself_a_layer():
    linear = torch.nn.Linear(3, 2)
    bayesian = borchify_network(linear)
    assert type(bayesian) is nn.Linear
    assert type(linear) is torch.nn.Linear


def test_borchify_module_converts_only_its_own_parameters():
    torch.manual_seed(0)
    module = Residual(3)
    bayesian = borchify_module(module)
    assert isinstance(bayesian, Residual) and isinstance(bayesian, borch.Module)
    assert set(bayesian.prior._modules) == {"gate"}
    assert type(bayesian.inner) is torch.nn.Linear  # use borchify_network for that
    torch.testing.assert_close(bayesian.posterior.gate.loc, module.gate.detach())
    assert type(module) is Residual and "gate" in module._parameters
    x = torch.randn(2, 3)
    torch.testing.assert_close(bayesian(x), module(x), atol=0.05, rtol=0)


def test_borchify_module_options_and_errors():
    bayesian = borchify_module(
        torch.nn.Linear(3, 2),
        rv_factory=rv_factories.delta_rv,
        posterior=posterior.PointMass(),
    )
    assert type(bayesian.prior.weight).__name__ == "Delta"
    with pytest.raises(ValueError, match="already a borch.Module"):
        borchify_module(nn.Linear(3, 2))
    with pytest.raises(TypeError, match="module must be a torch.nn.Module, got str"):
        borchify_module("linear")


def test_converted_modules_of_custom_classes_pickle():
    bayesian = borchify_network(torch.nn.Sequential(Residual(3)))
    clone = pickle.loads(pickle.dumps(bayesian))
    assert type(clone[0]) is type(bayesian[0])
    torch.testing.assert_close(
        clone[0].posterior.gate.loc, bayesian[0].posterior.gate.loc
    )


def test_namespace_has_a_twin_of_every_module_class():
    models = types.ModuleType("models")
    models.Residual = Residual
    models.Linear = torch.nn.Linear
    models.helper = len
    bayesian = borchify_namespace(models)
    assert bayesian.Linear is nn.Linear
    assert not hasattr(bayesian, "helper")
    layer = bayesian.Residual(3)
    assert isinstance(layer, Residual) and isinstance(layer, borch.Module)
    assert isinstance(layer.inner, nn.Linear)  # made in __init__: converted too
    assert {"gate"} == set(layer.prior._modules)
    assert bayesian.Residual is borchify_namespace(models).Residual  # cached
    assert borchify_namespace(torch.nn).Conv2d is nn.Conv2d
