"""A Manual posterior whose approximations are set in the first forward pass gets
their loaded state when they are set, as the other families do."""

import torch
from torch import nn

import borch
from borch import distributions as dist
from borch import posterior


class Lazy(borch.Module):
    def __init__(self):
        super().__init__(posterior=posterior.Manual())

    def forward(self):
        if self.posterior.approximation("x") is None:
            self.posterior.x = dist.Normal(nn.Parameter(torch.zeros(())), 1.0)
        self.x = dist.Normal(0.0, 1.0)
        return self.x


def test_state_loaded_before_the_approximation_is_set_is_applied():
    model = Lazy()
    model()
    with torch.no_grad():
        model.posterior.x.loc.fill_(2.5)
    fresh = Lazy()
    fresh.load_state_dict(model.state_dict())
    fresh()
    assert fresh.posterior.x.loc.item() == 2.5
    assert fresh.posterior._pending_state == {}
