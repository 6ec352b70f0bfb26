"""Saving and loading loses nothing, for every posterior family.

The model has a variable assigned in ``__init__`` and two assigned only in
``forward`` (one on a constrained support, one whose prior depends on another
variable), so a freshly built model lacks their approximations until its first
forward pass. ``load_state_dict`` keeps their entries aside and the first forward
pass applies them.
"""

import copy
import importlib.util
import io
import pickle

import pytest
import torch
from torch import nn

import borch
from borch import distributions as dist
from borch import posterior

X = torch.linspace(-1.0, 1.0, 12).reshape(4, 3)
Y = torch.tensor([0.5, -0.2, 1.0, 0.3])


class Model(borch.Module):
    def __init__(self, posterior=None):
        super().__init__(posterior=posterior)
        self.weight = dist.Normal(torch.zeros(3), 1.0)

    def forward(self, x):
        self.noise = dist.Gamma(2.0, 2.0)
        self.shift = dist.Normal(self.weight.sum(), 1.0)
        self.y = dist.Normal(x @ self.weight + self.shift, self.noise)
        return self.y


class ManualModel(Model):
    """The user's own approximations: one set before the model uses it, two created
    on the first forward pass."""

    def __init__(self):
        q = posterior.Manual()
        q.weight_loc = nn.Parameter(torch.zeros(3))
        q.weight = dist.Normal(q.weight_loc, 0.5)
        super().__init__(posterior=q)

    def forward(self, x):
        q = self.posterior
        if q.approximation("noise") is None:
            q.noise = dist.LogNormal(nn.Parameter(torch.zeros(())), 0.3)
            q.shift = dist.Normal(nn.Parameter(torch.zeros(())), 1.0)
        return super().forward(x)


BUILDERS = {
    "Automatic": lambda: Model(posterior.Automatic()),
    "AsPrior": lambda: Model(posterior.AsPrior()),
    "Normal": lambda: Model(posterior.Normal()),
    "ScaledNormal": lambda: Model(posterior.ScaledNormal()),
    "PointMass": lambda: Model(posterior.PointMass()),
    "Manual": ManualModel,
    "MultivariateNormal": lambda: Model(posterior.MultivariateNormal()),
    "LowRankMultivariateNormal": lambda: Model(posterior.LowRankMultivariateNormal(2)),
}
if importlib.util.find_spec("zuko") is not None:  # the optional extra borch[flows]
    BUILDERS["NormalizingFlow"] = lambda: Model(posterior.NormalizingFlow(transforms=1))
FAMILIES = sorted(BUILDERS)


def step(model, optimizer=None):
    """One training step; returns the loss. With no optimizer, only the loss."""
    borch.sample(model)
    model.observe(y=Y)
    model(X)
    loss = borch.infer.vi_loss(**borch.pq_to_infer(model))
    if optimizer is not None:
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return loss.detach()


def trained(family, steps=3):
    model = BUILDERS[family]()
    step(model)  # creates the lazily assigned approximations
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(steps):
        step(model, optimizer)
    return model


def assert_same_state(actual, expected):
    actual, expected = actual.state_dict(), expected.state_dict()
    assert list(actual) == list(expected)
    for key, value in expected.items():
        assert torch.equal(actual[key], value), key


def assert_same_behaviour(actual, expected):
    """Under the same seed both draw the same values and give the same loss."""
    losses, draws = [], []
    for model in (actual, expected):
        torch.manual_seed(123)
        losses.append(step(model))
        draws.append([model.weight, model.noise, model.shift])
    assert torch.equal(losses[0], losses[1])
    for first, second in zip(*draws):
        assert torch.equal(first, second)


@pytest.mark.parametrize("family", FAMILIES)
def test_state_dict_into_a_fresh_module_is_exact(family):
    model = trained(family)
    state = model.state_dict()
    assert "observed.y" in state
    assert not any(key.startswith("prior.") for key in state)  # rebuilt by code

    fresh = BUILDERS[family]()
    result = fresh.load_state_dict(state)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert fresh.posterior.approximation("noise") is None  # not created yet
    fresh(X)  # the first forward pass creates them and applies the loaded state
    assert_same_state(fresh, model)
    assert_same_behaviour(fresh, model)


@pytest.mark.parametrize("family", FAMILIES)
def test_torch_save_of_state_dict_and_whole_module(family):
    model = trained(family)

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh = BUILDERS[family]()
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    fresh(X)
    assert_same_state(fresh, model)

    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    with pytest.raises(pickle.UnpicklingError, match="weights_only"):
        torch.load(buffer, weights_only=True)  # a pickle of borch classes
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert type(loaded) is type(model)
    assert_same_state(loaded, model)
    assert_same_behaviour(loaded, model)


@pytest.mark.parametrize("family", FAMILIES)
def test_deepcopy_is_exact_and_independent(family):
    model = trained(family)
    clone = copy.deepcopy(model)
    assert_same_state(clone, model)
    assert_same_behaviour(clone, model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for parameter in clone.parameters():
            parameter.add_(1.0)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


@pytest.mark.parametrize("family", FAMILIES)
def test_loaded_state_waiting_for_first_forward_survives_copies(family):
    model = trained(family)
    fresh = BUILDERS[family]()
    fresh.load_state_dict(model.state_dict())
    buffer = io.BytesIO()
    torch.save(fresh, buffer)
    buffer.seek(0)
    for copied in (copy.deepcopy(fresh), torch.load(buffer, weights_only=False)):
        copied(X)
        assert_same_state(copied, model)


@pytest.mark.parametrize("family", FAMILIES)
def test_resumed_training_is_bit_for_bit(family):
    """Six uninterrupted Adam steps equal three steps, a checkpoint through
    ``torch.save`` (model, optimizer and RNG state), a fresh model and optimizer,
    and three more steps: same losses and parameters, exactly."""
    torch.manual_seed(7)
    model = BUILDERS[family]()
    step(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    uninterrupted = [step(model, optimizer) for _ in range(6)]

    torch.manual_seed(7)
    first = BUILDERS[family]()
    step(first)
    optimizer = torch.optim.Adam(first.parameters(), lr=0.05)
    before = [step(first, optimizer) for _ in range(3)]
    buffer = io.BytesIO()
    torch.save(
        {
            "model": first.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng": torch.get_rng_state(),
        },
        buffer,
    )
    del first, optimizer

    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)
    torch.manual_seed(999)  # a new process would start from another state
    resumed = BUILDERS[family]()
    resumed.load_state_dict(checkpoint["model"])
    resumed(X)  # create the lazily assigned variables (this draws; RNG restored next)
    torch.set_rng_state(checkpoint["rng"])
    optimizer = torch.optim.Adam(resumed.parameters(), lr=0.05)
    optimizer.load_state_dict(checkpoint["optimizer"])
    after = [step(resumed, optimizer) for _ in range(3)]

    assert torch.equal(torch.stack(before + after), torch.stack(uninterrupted))
    assert_same_state(resumed, model)
