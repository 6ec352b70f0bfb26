"""condition and simulate_observed."""

import pytest
import torch

import borch
from borch import distributions as dist


class Inner(borch.Module):
    def forward(self):
        self.w = dist.Normal(0.0, 1.0)
        return self.w


class Outer(borch.Module):
    def __init__(self):
        super().__init__()
        self.inner = Inner()

    def forward(self):
        self.mu = dist.Normal(0.0, 1.0)
        self.y = dist.Normal(self.mu + self.inner(), 1.0)
        return self.y


def test_condition_fixes_nested_variables_and_treats_them_as_data():
    model = Outer()
    model.observe(y=torch.tensor(0.5))
    with borch.condition(
        model, {"mu": torch.tensor(1.0), "inner.w": torch.tensor(2.0)}
    ):
        model()
        entries = borch.pq_dict(model)
        values = {entry["prior"].name: entry for entry in entries}
        assert values["mu"]["observed"]
        assert values["w"]["value"].item() == 2.0
        loss = borch.infer.vi_loss(**borch.pq_to_infer(model))
        expected = -(
            torch.distributions.Normal(0.0, 1.0)
            .log_prob(torch.tensor([1.0, 2.0]))
            .sum()
            + torch.distributions.Normal(3.0, 1.0).log_prob(torch.tensor(0.5))
        )
        assert torch.allclose(loss, expected)
    borch.sample(model)
    model()
    assert model.mu.item() != 1.0
    assert model.posterior.mu is not None


def test_condition_restores_on_error_and_checks_input():
    model = Outer()
    with pytest.raises(RuntimeError), borch.condition(model, {"mu": torch.tensor(1.0)}):
        raise RuntimeError
    assert model._conditioned == {}
    with (
        pytest.raises(KeyError, match="no submodule 'nope'"),
        borch.condition(model, {"nope.w": torch.tensor(1.0)}),
    ):
        pass
    with (
        pytest.raises(TypeError, match="value of 'mu' must be a tensor"),
        borch.condition(model, {"mu": 1.0}),
    ):
        pass


def test_simulate_observed_draws_from_the_likelihood():
    model = Outer()
    data = torch.tensor(100.0)
    model.observe(y=data)
    with (
        borch.simulate_observed(model),
        borch.condition(model, {"mu": torch.tensor(0.0)}),
    ):
        draws = torch.stack([model() for _ in range(200)])
    assert draws.abs().max() < 10  # not the data
    assert model.observed.y is data
    assert model() is data
