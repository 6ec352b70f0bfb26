"""Distributions built by the shortcut behave as torch's own."""

import re

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from torch.distributions import Categorical, LogNormal, Normal

from borch.fastpath import construction
from borch.fastpath.construction import construct
from borch.fastpath.memo import MEMO_KEY, detached_vars


def test_the_shortcuts_are_used_with_this_torch():
    assert construction._LOGNORMAL_LAYOUT_KNOWN
    assert construction._CATEGORICAL_LAYOUT_KNOWN


def _scale(kind: str, shape: tuple, generator: torch.Generator):
    if kind == "number":
        return 0.7
    if kind == "one element":
        return (torch.rand((), generator=generator) + 0.5).requires_grad_()
    return torch.rand(shape, generator=generator) + 0.5


@pytest.mark.parametrize("family", [Normal, LogNormal])
@pytest.mark.parametrize("shape", [(), (3,), (2, 3)])
@pytest.mark.parametrize("validate", [False, True])
@pytest.mark.parametrize("scale_kind", ["same shape", "one element", "number"])
def test_shortcut_matches_torch(family, shape, validate, scale_kind):
    generator = torch.Generator().manual_seed(0)
    loc = torch.randn(shape, generator=generator).requires_grad_()
    scale = _scale(scale_kind, shape, generator)
    ours = construct(family, {"loc": loc, "scale": scale}, validate=validate)
    theirs = family(loc, scale, validate_args=validate)
    assert type(ours) is family
    # torch's attributes, and beside them only a number scale's record (a
    # LogNormal's is on its base), checked or not
    assert detached_vars(ours).keys() == vars(theirs).keys()
    remembered = MEMO_KEY in vars(ours)
    assert remembered == (family is Normal and scale_kind == "number")
    if family is LogNormal and scale_kind == "number":
        assert MEMO_KEY in vars(ours.base_dist)
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


ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True, width=32)


@st.composite
def normal_arguments(draw) -> tuple:
    """A loc of up to 3 numbers (NaN and infinities included) and a scale: a
    number, a one-element tensor or a tensor of loc's shape."""
    loc = draw(st.lists(ANY_FLOAT, max_size=3))
    kind = draw(st.sampled_from(["number", "one element", "same shape"]))
    if kind == "number":
        scale = draw(ANY_FLOAT)
    elif kind == "one element":
        scale = torch.tensor(draw(ANY_FLOAT))
    else:
        scale = torch.tensor(
            draw(st.lists(ANY_FLOAT, min_size=len(loc), max_size=len(loc)))
        )
    return torch.tensor(loc), scale


NAN, INF = float("nan"), float("inf")


@settings(max_examples=200, deadline=None)
@given(arguments=normal_arguments())
@example(arguments=(torch.tensor([NAN, 0.0]), torch.tensor(1.0)))
@example(arguments=(torch.tensor([NAN]), torch.tensor([2.0])))
@example(arguments=(torch.tensor([0.0, NAN]), 1.0))
@example(arguments=(torch.tensor([0.0]), torch.tensor(NAN)))
@example(arguments=(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.0])))
@example(arguments=(torch.tensor([0.0]), -1.0))
@example(arguments=(torch.tensor([-INF, INF]), torch.tensor(INF)))
def test_a_checked_normal_fails_where_and_as_torchs_does(arguments):
    loc, scale = arguments
    failure = None
    try:
        theirs = Normal(loc, scale, validate_args=True)
    except ValueError as error:
        failure = error
    if failure is not None:
        with pytest.raises(ValueError, match=re.escape(str(failure))):
            construct(Normal, {"loc": loc, "scale": scale}, True)
        return
    ours = construct(Normal, {"loc": loc, "scale": scale}, True)
    assert ours.batch_shape == theirs.batch_shape
    assert torch.equal(ours.loc, theirs.loc)
    assert torch.equal(ours.scale, theirs.scale)


def test_arguments_that_need_broadcasting_or_validation_go_to_torch():
    broadcast = construct(LogNormal, {"loc": torch.zeros(3), "scale": 1.0}, False)
    assert broadcast.batch_shape == (3,)
    with pytest.raises(ValueError):
        construct(Normal, {"loc": torch.zeros(2), "scale": -torch.ones(2)}, True)


@pytest.mark.parametrize("validate", [False, True])
@pytest.mark.parametrize("shape", [(4,), (3, 4), (2, 3, 4)])
def test_categorical_shortcut_matches_torch(validate, shape):
    generator = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(shape, generator=generator)).requires_grad_()
    ours = construct(Categorical, {"logits": logits}, validate)
    theirs = Categorical(logits=logits, validate_args=validate)
    assert type(ours) is Categorical
    assert vars(ours).keys() == vars(theirs).keys()
    assert ours._validate_args == theirs._validate_args
    assert (ours.batch_shape, ours._num_events) == (
        theirs.batch_shape,
        theirs._num_events,
    )
    # log_softmax against logits - logsumexp: equal up to rounding
    assert torch.allclose(ours.logits, theirs.logits, rtol=0, atol=1e-6)
    assert torch.allclose(ours.probs, theirs.probs)
    value = theirs.sample((5,))
    assert torch.allclose(ours.log_prob(value), theirs.log_prob(value))
    (gradient,) = torch.autograd.grad(ours.log_prob(value).sum(), logits)
    (expected,) = torch.autograd.grad(theirs.log_prob(value).sum(), logits)
    assert torch.allclose(gradient, expected, atol=1e-6)


def test_categorical_logits_that_torch_would_reject_get_torchs_error():
    logits = torch.tensor([[0.0, float("nan")], [1.0, 2.0]])
    with pytest.raises(ValueError, match="logits"):
        construct(Categorical, {"logits": logits}, True)
    # unvalidated, the NaN goes through as torch's would
    assert construct(Categorical, {"logits": logits}, False).logits.isnan().any()
    masked = construct(Categorical, {"logits": torch.tensor([0.0, -torch.inf])}, True)
    assert masked.probs.tolist() == [1.0, 0.0]


def test_categorical_from_probs_or_scalar_logits_goes_to_torch():
    by_probs = construct(Categorical, {"probs": torch.tensor([1.0, 3.0])}, True)
    assert torch.allclose(by_probs.probs, torch.tensor([0.25, 0.75]))
    with pytest.raises(ValueError, match="one-dimensional"):
        construct(Categorical, {"logits": torch.tensor(0.0)}, False)
