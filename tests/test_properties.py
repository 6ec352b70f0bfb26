"""Property tests of bad and extreme input over every distribution and family.

Valid arguments are generated from each argument's own constraint (the instance's
``arg_constraints``): hypothesis draws unconstrained values and torch's
``transform_to`` registry maps them onto the constraint, so every continuous
constraint (positive, intervals, simplex, positive definite, Cholesky factors) is
covered by one rule. Integer arguments are drawn from their interval. Arguments are
generated in order and the constraints re-read after each, because some depend on
the others (``Uniform``'s ``low < high``).

The valid-argument matrix runs in float64. In float32 the extreme shapes this range
reaches (``df``, ``concentration`` or ``alpha`` near e^-4) underflow torch's Gamma
sampler: e.g. ``FisherSnedecor(df1=[1, e], df2=e^-3)`` draws 7.6e22 with a NaN
reparameterisation gradient, and ``InverseGamma(concentration=e^-3)`` gives an
infinite loss. That is a limit of float32, not of borch; the same draws in float64
are finite, and ``test_float32_underflow_is_caught_by_the_guard`` shows the optional
non-finite guard naming the variable when it happens.
"""

import contextlib
import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torch import Tensor
from torch.distributions import constraints, transform_to

import borch
from borch import distributions as dist
from borch import posterior
from borch.posterior.approximations import approximation_like
from tests.distributions.examples import EXAMPLES
from tests.posterior.test_families import FAMILIES, expected_refusal

NAMES = sorted(EXAMPLES)
ALL_FAMILIES = [*FAMILIES, "Manual"]
#: Unconstrained values are drawn from [-SPAN, SPAN]: positive arguments then range
#: over [e^-SPAN, e^SPAN] and probabilities come within 1/(1+e^SPAN) of 0 and 1.
SPAN = 4.0
#: Distributions whose constrained arguments live on an inner distribution (a
#: random variable of its own, covered by that distribution's own case).
#: Unconstrained ranges narrower than [-SPAN, SPAN], each with its reason.
RANGES = {
    # torch's Wishart sampler returns singular matrices, outside its own
    # positive-definite support (torch warns "Singular sample detected",
    # pytorch/pytorch#122021), when df is within about 1 of dim - 1.
    ("Wishart", "df"): (0.0, SPAN),
}
COMPOSITES = ("Independent", "MixtureSameFamily", "TransformedDistribution")


@contextlib.contextmanager
def default_dtype(dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _constraints(name, arguments):
    prior = getattr(dist, name)(**arguments)
    with borch.validate_args(False):
        return prior.distribution.arg_constraints


def _integer_bounds(constraint):
    lower = getattr(constraint, "lower_bound", 0)
    upper = getattr(constraint, "upper_bound", lower + 20)
    return int(lower), int(min(upper, lower + 20))


def valid_arguments(data, name):
    """The example's arguments with every constrained one redrawn validly."""
    arguments = EXAMPLES[name]()
    for arg_name, example in list(arguments.items()):
        if isinstance(example, bool) or not isinstance(example, (Tensor, int, float)):
            continue  # distributions, transforms, constraints: kept
        constraint = _constraints(name, arguments).get(arg_name)
        if constraint is None or isinstance(constraint, constraints._Dependent):
            continue
        label = f"{name}.{arg_name}"
        if constraint.is_discrete:
            low, high = _integer_bounds(constraint)
            value = data.draw(st.integers(low, high), label=label)
            arguments[arg_name] = (
                torch.full_like(example, value)
                if isinstance(example, Tensor)
                else value
            )
            continue
        transform = transform_to(constraint)
        shape = torch.Size(example.shape) if isinstance(example, Tensor) else ()
        low, high = RANGES.get((name, arg_name), (-SPAN, SPAN))
        unconstrained = data.draw(
            arrays(
                np.float64,
                tuple(transform.inverse_shape(shape)),
                elements=st.floats(low, high),
            ),
            label=label,
        )
        value = transform(torch.from_numpy(unconstrained).to(torch.get_default_dtype()))
        if not isinstance(example, Tensor) and value.numel() == 1:
            value = value.item()  # a number stays a number (borch checks those apart)
        arguments[arg_name] = value
    return arguments


def assign_with_family(family, prior):
    """A model of the family with ``x`` assigned; the Manual posterior is given a
    copy of the prior's family with learnable arguments first."""
    if family == "Manual":
        manual = posterior.Manual()
        manual.x = approximation_like("x", prior, keep_links=False)
        model = borch.Module(posterior=manual)
    else:
        model = borch.Module(posterior=FAMILIES[family]())
    model.x = prior
    return model


def assert_finite_loss_and_gradients(model):
    loss = borch.infer.vi_loss(**borch.pq_to_infer(model))
    assert torch.isfinite(loss), f"loss {loss}"
    parameters = [p for p in model.parameters() if p.requires_grad]
    if loss.requires_grad and parameters:
        grads = torch.autograd.grad(loss, parameters, allow_unused=True)
        for (param_name, _), grad in zip(model.named_parameters(), grads):
            assert grad is None or torch.isfinite(grad).all(), param_name


@pytest.mark.parametrize("family", ALL_FAMILIES)
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.filterwarnings("ignore:Low df values detected:UserWarning")
@settings(max_examples=5, derandomize=True, deadline=None)
@given(data=st.data())
def test_valid_arguments_give_a_finite_loss_or_a_clear_refusal(name, family, data):
    torch.manual_seed(0)  # per example: hypothesis replays examples
    with default_dtype(torch.float64):
        _assign_and_check(name, family, valid_arguments(data, name))


def _assign_and_check(name, family, arguments):
    prior = getattr(dist, name)(**arguments)
    refusal = None if family == "Manual" else expected_refusal(name, family)
    if refusal:
        with pytest.raises(ValueError, match=f"random variable 'x'.*{refusal}"):
            assign_with_family(family, prior)
        return
    model = assign_with_family(family, prior)
    value = model.x
    assert model.prior.x.distribution.support.check(value).all()
    assert_finite_loss_and_gradients(model)


def test_manual_posterior_without_the_variable_names_it():
    model = borch.Module(posterior=posterior.Manual())
    with pytest.raises(LookupError, match="no approximating variable 'x'"):
        model.x = dist.Normal(0.0, 1.0)


# ---------------------------------------------------------- invalid arguments
BAD_NUMBERS = [
    -1e6,
    -1.0,
    -1e-6,
    0.0,
    0.5,
    1.0,
    2.5,
    1e6,
    math.nan,
    math.inf,
    -math.inf,
]


def _checkable(constraint):
    return constraint is not None and not isinstance(constraint, constraints._Dependent)


def invalid_arguments(data, name):
    """The example's arguments with one entry of one constrained argument replaced
    by a value its constraint rejects (``None`` if nothing can be broken)."""
    arguments = EXAMPLES[name]()
    arg_constraints = _constraints(name, arguments)
    candidates = [
        arg_name
        for arg_name, value in arguments.items()
        if _checkable(arg_constraints.get(arg_name))
        and isinstance(value, (Tensor, float))
        and not isinstance(value, bool)
    ]
    if not candidates:
        return None
    arg_name = data.draw(st.sampled_from(candidates), label="argument")
    constraint = arg_constraints[arg_name]
    bad_numbers = BAD_NUMBERS
    if isinstance(constraint, constraints._Simplex):
        # torch normalises probabilities before checking them: only negative or
        # non-finite entries are invalid.
        bad_numbers = [b for b in BAD_NUMBERS if not 0 <= b < math.inf]
    bad = data.draw(st.sampled_from(bad_numbers), label="bad value")
    example = arguments[arg_name]
    if isinstance(example, float):
        broken = bad
        check = constraint.check(torch.tensor(bad))
    else:
        broken = example.detach().clone().float()
        index = data.draw(st.integers(0, broken.numel() - 1), label="index")
        broken.view(-1)[index] = bad
        check = constraint.check(broken)
    assume(not bool(torch.as_tensor(check).all()))
    arguments[arg_name] = broken
    return arg_name, arguments


INVALID_NAMES = [n for n in NAMES if n not in ("Delta", "PointMass", *COMPOSITES)]


@pytest.mark.parametrize("name", INVALID_NAMES)
@settings(max_examples=12, derandomize=True, deadline=None)
@given(data=st.data())
def test_arguments_outside_their_constraint_are_a_value_error_naming_it(name, data):
    drawn = invalid_arguments(data, name)
    assume(drawn is not None)
    arg_name, arguments = drawn
    model = borch.Module()
    with pytest.raises(ValueError, match=f"random variable 'x'.*{arg_name}"):
        model.x = getattr(dist, name)(**arguments)


def test_every_distribution_with_constraints_can_be_broken():
    """Only Delta's and PointMass's arguments are unconstrained reals (NaN aside);
    composites are broken through their inner distributions."""
    unbreakable = [
        name
        for name in INVALID_NAMES
        if not any(
            _checkable(_constraints(name, EXAMPLES[name]()).get(arg))
            for arg in EXAMPLES[name]()
        )
    ]
    assert unbreakable == []


# --------------------------------------------------------------- observations
finite_floats = st.floats(-1e6, 1e6, width=32)
non_finite = st.sampled_from([math.inf, -math.inf])


@settings(max_examples=30, derandomize=True, deadline=None)
@given(
    values=st.lists(finite_floats, min_size=1, max_size=6),
    bad=non_finite,
    position=st.integers(0, 5),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.float16]),
)
def test_non_finite_observations_are_rejected(values, bad, position, dtype):
    values.insert(position % (len(values) + 1), bad)
    data = torch.tensor(values, dtype=dtype)
    model = borch.Module()
    with pytest.raises(ValueError, match="observed value for 'y' contains non-finite"):
        model.observe(y=data)
    assert "y" not in model.observed._buffers
    with borch.validate_args(False):  # the documented opt-out
        model.observe(y=data)
    assert model.observed.y is data


@settings(max_examples=30, derandomize=True, deadline=None)
@given(
    values=st.lists(finite_floats, min_size=1, max_size=6),
    position=st.integers(0, 5),
)
def test_unmasked_missing_observations_are_rejected_where_assigned(values, position):
    values.insert(position % (len(values) + 1), math.nan)
    data = torch.tensor(values)
    model = borch.Module()
    model.observe(y=data)  # NaN marks missing data
    with pytest.raises(ValueError, match="'y' has NaN where it is not masked"):
        model.y = dist.Normal(torch.zeros(len(data)), 1.0)
    with borch.mask(~data.isnan()):
        model.y = dist.Normal(torch.zeros(len(data)), 1.0)
    loss = borch.infer.vi_loss(**borch.pq_to_infer(model))
    expected = -torch.distributions.Normal(0.0, 1.0).log_prob(data[~data.isnan()]).sum()
    assert torch.allclose(loss, expected)


@settings(max_examples=20, derandomize=True, deadline=None)
@given(
    value=st.one_of(
        st.floats(allow_nan=True),
        st.integers(),
        st.lists(st.floats(), max_size=3),
        st.text(max_size=3),
        st.builds(np.zeros, st.integers(0, 3)),
    )
)
def test_observing_a_non_tensor_is_a_type_error_naming_it(value):
    model = borch.Module()
    with pytest.raises(TypeError, match="observe: argument 'y' must be a torch.Tensor"):
        model.observe(y=value)


def _outside_support(name):
    """A value of the example's shape outside its support, or None (real support)."""
    prior = getattr(dist, name)(**EXAMPLES[name]())
    support = prior.distribution.support
    value = prior.distribution.sample().float()
    for bad in (-1.5, 0.5, 1e6, -1e6, 2.0):
        candidate = value.clone()
        candidate.view(-1)[0] = bad
        if not bool(support.check(candidate).all()):
            return candidate
    return None


OUTSIDE = [n for n in INVALID_NAMES if _outside_support(n) is not None]


@pytest.mark.parametrize("name", OUTSIDE)
def test_observation_outside_the_support_names_the_variable(name):
    model = borch.Module()
    model.observe(x=_outside_support(name))
    with pytest.raises(
        ValueError, match="observed value of 'x' is outside the support"
    ):
        model.x = getattr(dist, name)(**EXAMPLES[name]())
