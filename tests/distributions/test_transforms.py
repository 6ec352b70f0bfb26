"""Simplified transforms map, invert and carry densities exactly as torch's do."""

import pytest
import torch
from torch.distributions import constraints, transforms
from torch.distributions.constraint_registry import biject_to

from borch.distributions.transforms import simplified, unconstraining_transform

SUPPORTS = [
    constraints.positive,
    constraints.nonnegative,
    constraints.greater_than(0.0),
    constraints.greater_than(1.5),
    constraints.greater_than(torch.tensor(0.0)),
    constraints.less_than(0.0),
    constraints.unit_interval,
    constraints.interval(-1.0, 2.0),
    constraints.real,
    constraints.simplex,
]


@pytest.mark.parametrize("support", SUPPORTS, ids=str)
def test_simplified_transform_is_the_same_map(support):
    original = biject_to(support)
    lean = simplified(original)
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    x = x.double()
    y = original(x)
    assert torch.allclose(lean(x), y)
    assert torch.allclose(lean.inv(y), original.inv(y))
    assert torch.allclose(
        lean.log_abs_det_jacobian(x, y), original.log_abs_det_jacobian(x, y)
    )
    assert lean.domain.event_dim == original.domain.event_dim
    assert lean.codomain.event_dim == original.codomain.event_dim


def test_the_positive_half_line_is_just_exp():
    assert (
        type(unconstraining_transform(constraints.positive)) is transforms.ExpTransform
    )


def test_real_shifts_and_tensor_bounds_are_kept():
    shifted = simplified(biject_to(constraints.greater_than(1.0)))
    assert len(shifted.parts) == 2
    # a tensor bound would have to be read to know it is zero: left as it is
    tensor_bound = biject_to(constraints.greater_than(torch.tensor(0.0)))
    assert simplified(tensor_bound) is tensor_bound


def test_bijective_lookup_skips_transform_to_and_unregistered_supports_raise():
    # torch registers lower_cholesky with transform_to only
    assert unconstraining_transform(constraints.lower_cholesky) is not None
    with pytest.raises(NotImplementedError, match="bijective transform"):
        unconstraining_transform(constraints.lower_cholesky, bijective=True)
    with pytest.raises(NotImplementedError, match="no transform onto Boolean"):
        unconstraining_transform(constraints.boolean)
