"""Distributions built by the shortcut behave as torch's own."""

import pytest
import torch
from torch.distributions import LogNormal, Normal

from borch.distributions import construction
from borch.distributions.construction import construct


def test_the_lognormal_shortcut_is_used_with_this_torch():
    assert construction._LOGNORMAL_LAYOUT_KNOWN


@pytest.mark.parametrize("family", [Normal, LogNormal])
@pytest.mark.parametrize("shape", [(), (3,), (2, 3)])
def test_shortcut_matches_torch(family, shape):
    generator = torch.Generator().manual_seed(0)
    loc = torch.randn(shape, generator=generator).requires_grad_()
    scale = torch.rand(shape, generator=generator) + 0.5
    ours = construct(family, {"loc": loc, "scale": scale}, validate=False)
    theirs = family(loc, scale, validate_args=False)
    assert type(ours) is family
    assert vars(ours).keys() == vars(theirs).keys()
    assert (ours.batch_shape, ours.event_shape) == (
        theirs.batch_shape,
        theirs.event_shape,
    )
    assert str(ours.support) == str(theirs.support)
    value = theirs.sample((4,))
    assert torch.allclose(ours.log_prob(value), theirs.log_prob(value))
    assert torch.allclose(ours.mean, theirs.mean)
    torch.manual_seed(1)
    drawn = ours.rsample((2,))
    torch.manual_seed(1)
    assert torch.equal(drawn, theirs.rsample((2,)))
    assert drawn.requires_grad


def test_arguments_that_need_broadcasting_or_validation_go_to_torch():
    broadcast = construct(LogNormal, {"loc": torch.zeros(3), "scale": 1.0}, False)
    assert broadcast.batch_shape == (3,)
    with pytest.raises(ValueError):
        construct(Normal, {"loc": torch.zeros(2), "scale": -torch.ones(2)}, True)
