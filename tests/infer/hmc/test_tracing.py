"""Traced potentials replay the model exactly, or refuse to."""

import numpy as np
import pytest
import torch

import borch
from borch import distributions as dist
from borch.infer.hmc.model_conversion import ModelPotential, sampling_copy
from borch.infer.hmc.traced.tracing import (
    TraceError,
    trace_value_and_grad,
    traced_potential,
)
from tests.infer.hmc.test_model_conversion import CONTINUOUS, Single

#: Families whose log density reads tensor values in Python (evaluated eagerly).
UNTRACEABLE = {"ContinuousBernoulli"}


def eager_value_and_grad(function, position):
    position = position.detach().requires_grad_(True)
    value = function(position)
    (grad,) = torch.autograd.grad(value, position)
    return value.detach(), grad


def model_potential(model, *args):
    return ModelPotential(sampling_copy(model), args, {})


def trace(potential, points):
    return traced_potential(
        potential.evaluate, potential, points, potential.device, potential.dtype
    )


@pytest.mark.parametrize("name", CONTINUOUS)
def test_every_continuous_family_traces_exactly(name):
    """The replayed value and gradient equal the eager ones at points other than the
    one traced at (float32, relative 1e-5); families that branch on values refuse."""
    potential = model_potential(Single(name))
    rng = np.random.default_rng(1)
    points = [
        rng.uniform(-1.5, 1.5, potential.dim).astype(np.float32) for _ in range(3)
    ]
    for (energy, grad), (expected_energy, expected_grad) in traced_and_eager(
        potential, points, refused=name in UNTRACEABLE
    ):
        assert energy == pytest.approx(expected_energy, rel=1e-5, abs=1e-6)
        np.testing.assert_allclose(grad, expected_grad, rtol=1e-5, atol=1e-6)


def traced_and_eager(potential, points, refused=False):
    """Trace at the first point; the traced and eager (energy, gradient) at the
    others. With ``refused``, check that tracing raises instead (and return none)."""
    if refused:
        with pytest.raises(TraceError):
            trace(potential, points[:1])
        return []
    traced = trace(potential, points[:1])
    return [(traced(point), potential(point)) for point in points[1:]]


IDENTITIES = {
    "times one": lambda q: (q * 1.0).sum() + (1 * q).prod(),
    "plus zero": lambda q: ((q + 0) - 0.0).exp().sum(),
    "zero tensor": lambda q: (q + torch.zeros(())).sin().sum(),
    "pow one": lambda q: (q**1).square().sum(),
    "broadcast zero": lambda q: (q + torch.zeros(2, 3)).sum(),
    "broadcast one": lambda q: (q * torch.ones(4, 3)).pow(2).sum(),
    "dtype change": lambda q: (q.double() * 1).sum().float(),
    "views": lambda q: q.view(3, 1).reshape(3).expand(3).t().square().sum(),
    "constants": lambda q: (q * torch.arange(3.0).exp().log()).sum(),
    "in-place on fresh": lambda q: (
        torch.zeros(5).index_put_((torch.arange(3),), q).sum()
        + (q.clone().mul_(2)).sum()
    ),
}


@pytest.mark.parametrize("name", sorted(IDENTITIES))
def test_simplification_keeps_the_function(name):
    """Folding constants and dropping identities never changes a result, also where
    an 'identity' broadcasts or changes the dtype."""
    function = IDENTITIES[name]
    program = trace_value_and_grad(function, torch.tensor([0.1, 0.2, 0.3]))
    for point in (torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.0, 3.0, -1.0])):
        value, grad = program(point)
        expected_value, expected_grad = eager_value_and_grad(function, point)
        torch.testing.assert_close(value, expected_value)
        torch.testing.assert_close(grad, expected_grad)


def test_simplification_drops_constant_work():
    """Normal(0, 1) prior: the constant part of log N is computed once at trace time."""
    program = trace_value_and_grad(
        lambda q: -torch.distributions.Normal(0.0, 1.0).log_prob(q).sum(), torch.ones(3)
    )
    work = [line for line in program.source.splitlines() if "del " not in line]
    assert len(work) < 12
    value, grad = program(torch.tensor([1.0, 2.0, 3.0]))
    assert value.item() == pytest.approx(7 + 1.5 * np.log(2 * np.pi), rel=1e-6)
    torch.testing.assert_close(grad, torch.tensor([1.0, 2.0, 3.0]))


class Branching(borch.Module):
    def forward(self):
        self.x = dist.Normal(0.0, 1.0)
        if self.x > 0:  # reads the value: cannot be traced
            self.y = dist.Normal(self.x, 1.0)
        else:
            self.y = dist.Normal(-self.x, 2.0)


class Noisy(borch.Module):
    def forward(self):
        self.x = dist.Normal(0.0, 1.0)
        self.y = dist.Normal(self.x + torch.randn(()), 1.0)


class Mutating(borch.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("counter", torch.zeros(()))

    def forward(self):
        self.x = dist.Normal(0.0, 1.0)
        self.counter.add_(self.x.detach())
        self.y = dist.Normal(self.x, 1.0)


@pytest.mark.parametrize(
    ("model", "match"),
    [
        (Branching, "could not be traced"),
        (Noisy, "differs"),
        (Mutating, "did not create"),
    ],
)
def test_untraceable_models_are_refused(model, match):
    instance = model()
    instance.observe(y=torch.tensor(0.5))
    potential = model_potential(instance)
    points = [np.array([0.3], np.float32), np.array([-0.4], np.float32)]
    with pytest.raises(TraceError, match=match):
        trace(potential, points)


def test_a_traced_potential_maps_non_finite_energy_to_inf():
    program = trace_value_and_grad(lambda q: q.log().sum(), torch.ones(2), True)
    with np.errstate(invalid="ignore"):
        value, _ = program(np.array([-1.0, 1.0], np.float32))
    assert np.isnan(value)
    potential = model_potential(Single("Normal"))
    traced = trace(potential, [np.zeros(potential.dim, np.float32)])
    traced.program = program
    energy, _ = traced(np.array([-1.0, 1.0], np.float32))
    assert energy == float("inf")
