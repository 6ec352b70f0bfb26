"""The lean log-densities agree with torch's, in value and gradient."""

import pytest
import torch
from torch.distributions import (
    Categorical,
    Gamma,
    HalfCauchy,
    HalfNormal,
    LogNormal,
    Normal,
)

from borch.fastpath.log_density import log_density
from borch.fastpath.memo import recall

SHAPES = [((), ()), ((3,), ()), ((2, 3), (3,)), ((4,), (4,))]


def _arguments(loc_shape, scale_shape, generator):
    loc = torch.randn(loc_shape, generator=generator, dtype=torch.float64)
    log_scale = torch.randn(scale_shape, generator=generator, dtype=torch.float64)
    return loc.requires_grad_(), log_scale.requires_grad_()


@pytest.mark.parametrize("family", [Normal, LogNormal])
@pytest.mark.parametrize(("loc_shape", "scale_shape"), SHAPES)
def test_matches_torch_in_value_and_gradient(family, loc_shape, scale_shape):
    generator = torch.Generator().manual_seed(0)
    loc, log_scale = _arguments(loc_shape, scale_shape, generator)
    value = torch.rand((5, *loc_shape), generator=generator, dtype=torch.float64) + 0.1
    value.requires_grad_()
    results = []
    for fn in (log_density, lambda d, v: d.log_prob(v)):
        distribution = family(loc, log_scale.exp(), validate_args=False)
        density = fn(distribution, value)
        results.append(
            (density, *torch.autograd.grad(density.sum(), [loc, log_scale, value]))
        )
    for lean, reference in zip(*results):
        assert lean.shape == reference.shape
        assert torch.allclose(lean, reference, rtol=1e-12, atol=1e-12)


def test_a_constant_scale_is_remembered_until_it_changes():
    scale = torch.tensor(2.0)
    normal = Normal(0.0, scale, validate_args=False)
    value = torch.tensor([0.5, 1.0])
    assert torch.allclose(log_density(normal, value), normal.log_prob(value))
    normal.scale.mul_(3.0)  # in place: the remembered normaliser must not be used
    assert torch.allclose(log_density(normal, value), normal.log_prob(value))


def test_validating_distributions_and_other_families_use_log_prob():
    with pytest.raises(ValueError, match="support"):
        log_density(LogNormal(0.0, 1.0, validate_args=True), torch.tensor(-1.0))
    gamma = Gamma(2.0, 3.0)
    value = torch.tensor(0.7)
    assert torch.equal(log_density(gamma, value), gamma.log_prob(value))


@pytest.mark.parametrize("shape", [(5,), (2, 3)])
def test_categorical_matches_torch_in_value_and_gradient(shape):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn((*shape, 4), generator=generator, dtype=torch.float64)
    logits.requires_grad_()
    value = torch.randint(0, 4, shape, generator=generator)
    results = []
    for fn in (log_density, lambda d, v: d.log_prob(v)):
        density = fn(Categorical(logits=logits, validate_args=False), value)
        results.append((density, *torch.autograd.grad(density.sum(), [logits])))
    for lean, reference in zip(*results):
        assert lean.shape == reference.shape
        assert torch.allclose(lean, reference, rtol=1e-12, atol=1e-12)


def test_categorical_values_that_broadcast_use_log_prob():
    categorical = Categorical(logits=torch.zeros(3, 4), validate_args=False)
    value = torch.tensor([[0], [1]])  # (2, 1) broadcasts against the batch (3,)
    assert torch.equal(log_density(categorical, value), categorical.log_prob(value))


@pytest.mark.parametrize("loc", [0.0, 1.5, [0.0, 2.0]])
def test_constant_arguments_match_torch_in_value_and_gradient(loc):
    normal = Normal(torch.tensor(loc, dtype=torch.float64), 3.0, validate_args=False)
    value = torch.tensor([0.3, -2.0], dtype=torch.float64, requires_grad=True)
    for _ in range(2):  # the second call uses the remembered terms
        lean = log_density(normal, value)
        reference = normal.log_prob(value)
        assert torch.allclose(lean, reference, rtol=1e-12, atol=1e-12)
        (lean_grad,) = torch.autograd.grad(lean.sum(), value)
        (reference_grad,) = torch.autograd.grad(reference.sum(), value)
        assert torch.allclose(lean_grad, reference_grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("scale", [0.3, 1, 2.5])
@pytest.mark.parametrize("value_shape", [(3,), (5, 3)])
@pytest.mark.parametrize("validate", [True, False])
def test_a_number_scale_matches_torch_in_value_and_gradient(
    scale, value_shape, validate
):
    # A prior of a new tensor and a number (Normal(torch.zeros(3), 1.0)), built as
    # borch builds it: its density's constants are numbers.
    from borch.fastpath.construction import construct

    generator = torch.Generator().manual_seed(0)
    loc = torch.randn(3, generator=generator, dtype=torch.float64).requires_grad_()
    value = torch.randn(value_shape, generator=generator, dtype=torch.float64)
    value.requires_grad_()
    ours = construct(Normal, {"loc": loc, "scale": scale}, validate=validate)
    assert recall(ours).number_scale is not None  # the path under test
    theirs = Normal(loc, float(scale), validate_args=False)
    lean, reference = log_density(ours, value), theirs.log_prob(value)
    assert lean.shape == reference.shape
    assert torch.allclose(lean, reference, rtol=1e-12, atol=1e-12)
    lean_grads = torch.autograd.grad(lean.sum(), [loc, value])
    reference_grads = torch.autograd.grad(reference.sum(), [loc, value])
    for ours_grad, theirs_grad in zip(lean_grads, reference_grads):
        assert torch.allclose(ours_grad, theirs_grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("family", [HalfCauchy, HalfNormal])
@pytest.mark.parametrize(("scale_shape", "value_shape"), [((), (4,)), ((4,), (2, 4))])
def test_a_half_distribution_matches_torch_in_value_and_gradient(
    family, scale_shape, value_shape
):
    generator = torch.Generator().manual_seed(0)
    scale = torch.rand(scale_shape, generator=generator, dtype=torch.float64) + 0.5
    value = torch.randn(value_shape, generator=generator, dtype=torch.float64)
    value[..., 0] = -value[..., 0].abs()  # below the support: -inf, as torch gives
    value[..., 1] = 0.0
    value.requires_grad_()
    distribution = family(scale, validate_args=False)
    for _ in range(2):  # the second call uses the remembered terms
        lean, reference = log_density(distribution, value), distribution.log_prob(value)
        assert lean.shape == reference.shape
        assert torch.equal(lean.isinf(), reference.isinf())
        assert torch.allclose(lean, reference, rtol=1e-12, atol=1e-12)
        # (0 at the -inf element in both)
        (lean_grad,) = torch.autograd.grad(lean.sum(), value)
        (reference_grad,) = torch.autograd.grad(reference.sum(), value)
        assert torch.allclose(lean_grad, reference_grad, rtol=1e-12, atol=1e-12)
    on_support = value.detach().abs().requires_grad_()  # no mask needed
    lean, reference = (
        log_density(distribution, on_support),
        distribution.log_prob(on_support),
    )
    assert torch.allclose(lean, reference, rtol=1e-12, atol=1e-12)
    (lean_grad,) = torch.autograd.grad(lean.sum(), on_support)
    (reference_grad,) = torch.autograd.grad(reference.sum(), on_support)
    assert torch.allclose(lean_grad, reference_grad, rtol=1e-12, atol=1e-12)
    with_nan = on_support.detach().clone()
    with_nan[..., 1] = torch.nan  # off the support too: -inf, as torch gives
    lean, reference = (
        log_density(distribution, with_nan),
        distribution.log_prob(with_nan),
    )
    assert torch.equal(lean.isinf(), reference.isinf()) and not lean.isnan().any()
    assert torch.allclose(lean, reference, rtol=1e-12, atol=1e-12)
    distribution.scale.mul_(2.0)  # in place: the remembered terms are not used
    assert torch.allclose(
        log_density(distribution, value), distribution.log_prob(value), rtol=1e-12
    )


def test_a_half_distribution_of_a_learned_scale_uses_log_prob():
    scale = torch.tensor(1.5, requires_grad=True)
    distribution = HalfCauchy(scale, validate_args=False)
    value = torch.tensor([0.5, 2.0])
    lean = log_density(distribution, value)
    assert torch.equal(lean, distribution.log_prob(value))
    assert lean.requires_grad


def test_a_number_scale_changed_in_place_is_read_again():
    from borch.fastpath.construction import construct

    normal = construct(Normal, {"loc": torch.zeros(2), "scale": 2.0}, validate=True)
    assert recall(normal).number_scale is not None
    value = torch.tensor([0.5, 1.0])
    normal.scale.mul_(3.0)
    assert torch.allclose(log_density(normal, value), normal.log_prob(value))


@pytest.mark.parametrize(
    "distribution",
    [
        Normal(torch.zeros(2), torch.full((2,), 2.0), validate_args=False),
        HalfCauchy(torch.tensor(2.0), validate_args=False),
        HalfNormal(torch.tensor(2.0), validate_args=False),
    ],
    ids=["Normal", "HalfCauchy", "HalfNormal"],
)
def test_nothing_is_remembered_under_inference_mode(distribution):
    # Its tensors could not be saved for a later backward pass.
    with torch.inference_mode():
        log_density(distribution, torch.tensor([0.5, 1.0]))
    value = torch.tensor([0.5, 1.0], requires_grad=True)
    log_density(distribution, value).sum().backward()
    assert value.grad is not None


def test_the_constants_kept_are_bounded():
    from borch.fastpath.memo import constant

    cpu = torch.device("cpu")
    first = constant(-1.25, torch.float64, cpu)
    assert constant(-1.25, torch.float64, cpu) is first
    for number in range(300):  # more than are kept: the oldest goes
        constant(float(number), torch.float64, cpu)
    assert constant(-1.25, torch.float64, cpu) is not first


def test_remembered_results_are_the_last_ones_by_argument():
    from borch.fastpath.memo import remembered

    calls = []

    @remembered(2)
    def build(n):
        calls.append(n)
        return [n]

    one = build(1)
    assert build(1) is one and calls == [1]
    build(2)
    build(3)  # the third: 1 goes
    assert build(1) is not one and calls == [1, 2, 3, 1]


def test_a_zero_loc_changed_in_place_is_subtracted_again():
    normal = Normal(torch.zeros(2), 1.0, validate_args=False)
    value = torch.tensor([0.5, 1.0])
    log_density(normal, value)
    normal.loc.add_(1.0)
    assert torch.allclose(log_density(normal, value), normal.log_prob(value))
