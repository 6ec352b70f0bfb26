"""The degenerate distributions Delta and PointMass."""

import pytest
import torch
from torch.distributions import biject_to, constraints

from borch.distributions.point_mass import Delta, PointMass


def test_delta_draws_its_value_with_gradients():
    value = torch.tensor([1.0, 2.0], requires_grad=True)
    delta = Delta(value)
    draw = delta.rsample((3,))
    assert draw.shape == (3, 2)
    draw.sum().backward()
    assert torch.equal(value.grad, torch.full((2,), 3.0))


def test_delta_log_prob_is_log_density_at_value_and_minus_inf_elsewhere():
    delta = Delta(torch.tensor([[1.0, 2.0]]), log_density=0.5, event_dim=1)
    assert delta.batch_shape == (1,) and delta.event_shape == (2,)
    assert torch.equal(delta.log_prob(torch.tensor([[1.0, 2.0]])), torch.tensor([0.5]))
    assert delta.log_prob(torch.tensor([[1.0, 3.0]])).item() == -float("inf")
    assert torch.equal(delta.entropy(), torch.zeros(1))
    assert delta.expand((4, 1)).batch_shape == (4, 1)


def test_delta_rejects_too_many_event_dims():
    with pytest.raises(ValueError, match="event_dim=2 exceeds"):
        Delta(torch.zeros(3), event_dim=2)


@pytest.mark.parametrize(
    "support",
    [
        constraints.real,
        constraints.positive,
        constraints.unit_interval,
        constraints.simplex,
    ],
)
def test_point_mass_maps_onto_its_support(support):
    unconstrained = torch.tensor([0.3, -0.7], requires_grad=True)
    point = PointMass(unconstrained, support)
    value = point.rsample()
    assert support.check(value).all()
    assert torch.equal(point.mean, value)
    assert torch.equal(point.log_prob(value), torch.zeros(point.batch_shape))
    transform = biject_to(support)
    expected = transform.log_abs_det_jacobian(unconstrained, transform(unconstrained))
    if expected.dim() > len(point.batch_shape):
        expected = expected.sum(-1)
    assert torch.allclose(point.log_abs_det_jacobian(), expected)
    value.sum().backward()
    assert unconstrained.grad is not None
