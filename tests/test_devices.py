"""Devices and dtypes over the whole distribution x posterior-family matrix.

A model built in float64 learns in float64; ``.double()``, ``.to(torch.float64)`` and
``.to("cuda")`` move priors, approximations, observed values and current draws, and
distributions built afterwards live on the new dtype and device.
"""

import pytest
import torch
from torch import Tensor
from torch.distributions import Distribution

import borch
from borch import distributions as dist
from tests.distributions.examples import EXAMPLES
from tests.posterior.test_families import MEAN_FIELD, expected_refusal

#: A joint family's variables share one draw, drawn anew after a move (see
#: JointSlice._apply); tests/posterior/test_joint.py moves those.
FAMILIES = MEAN_FIELD

MATRIX = [
    (name, family)
    for name in sorted(EXAMPLES)
    for family in FAMILIES
    if expected_refusal(name, family) is None
]
#: torch's GeneralizedPareto.log_prob compares its concentration with a float32
#: constant (``torch.isclose(self.concentration, torch.tensor(0.0))``), which fails
#: for float64 arguments inside torch ("Double did not match Float").
TORCH_FLOAT64_BUGS = {"GeneralizedPareto"}
FLOAT64_MATRIX = [
    pytest.param(
        name,
        family,
        marks=pytest.mark.xfail(
            raises=RuntimeError, strict=True, reason="torch: float64 log_prob fails"
        ),
    )
    if name in TORCH_FLOAT64_BUGS
    else (name, family)
    for name, family in MATRIX
]
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")


def converted_arguments(name, dtype=None, device=None):
    """The example's arguments with floats made tensors of ``dtype`` on ``device``
    (integers stay numbers: they are counts and dimensions)."""

    def convert(value):
        if isinstance(value, float):
            return torch.tensor(value, dtype=dtype, device=device)
        if isinstance(value, Tensor):
            return value.to(
                dtype=dtype if value.is_floating_point() else None, device=device
            )
        if isinstance(value, borch.RandomVariable):
            return value.to(dtype=dtype, device=device) if dtype else value.to(device)
        return value

    return {key: convert(value) for key, value in EXAMPLES[name]().items()}


def distribution_tensors(distribution, seen=None):
    """Every tensor a torch distribution holds, nested distributions included."""
    seen = set() if seen is None else seen
    if id(distribution) in seen:
        return []
    seen.add(id(distribution))
    found = []
    for value in vars(distribution).values():
        if isinstance(value, Tensor):
            found.append(value)
        elif isinstance(value, Distribution):
            found += distribution_tensors(value, seen)
    return found


def assert_lives_on(model, dtype, device):
    """Parameters, observed values, current draws and freshly built distributions
    of every variable use ``dtype`` (floating tensors) and ``device``."""
    tensors = {f"state {k}": v for k, v in model.state_dict().items()}
    for name, rv in borch.named_random_variables(model, prior=True):
        value = rv.__dict__["_value"]
        if value is not None:
            tensors[f"draw of {name}"] = value
        for index, tensor in enumerate(distribution_tensors(rv.distribution)):
            tensors[f"{name}.distribution[{index}]"] = tensor
    for key, tensor in tensors.items():
        assert tensor.device.type == torch.device(device).type, key
        if tensor.is_floating_point():
            assert tensor.dtype == dtype, key


def build(name, family, **convert):
    model = borch.Module(posterior=FAMILIES[family]())
    likelihood = dist.Normal(torch.zeros(2, **_float(convert)), 1.0)
    model.observe(y=torch.ones(2, **_float(convert)))
    model.x = getattr(dist, name)(**converted_arguments(name, **convert))
    model.y = likelihood
    _ = model.x
    return model


def _float(convert):
    return {k: v for k, v in convert.items() if v is not None}


def finite_loss(model):
    borch.sample(model)
    _ = model.x
    model.y = model.prior.y
    loss = borch.infer.vi_loss(**borch.pq_to_infer(model))
    assert torch.isfinite(loss), loss
    return loss


@pytest.mark.parametrize(("name", "family"), FLOAT64_MATRIX)
def test_float64_prior_gets_a_float64_approximation(name, family):
    model = build(name, family, dtype=torch.float64)
    assert_lives_on(model, torch.float64, "cpu")
    assert finite_loss(model).dtype == torch.float64


@pytest.mark.parametrize("move", ["double", "to"])
@pytest.mark.parametrize(("name", "family"), FLOAT64_MATRIX)
def test_moving_to_float64_moves_everything(name, family, move):
    model = build(name, family)
    draw = model.posterior.x.tensor
    model.double() if move == "double" else model.to(torch.float64)
    moved = model.posterior.x.__dict__["_value"]
    expected = draw.double() if draw.is_floating_point() else draw
    assert torch.equal(moved, expected)  # the draw moved, it was not redrawn
    assert_lives_on(model, torch.float64, "cpu")
    assert finite_loss(model).dtype == torch.float64


@needs_gpu
@pytest.mark.parametrize(("name", "family"), MATRIX)
def test_moving_to_cuda_moves_everything(name, family):
    model = build(name, family)
    draw = model.posterior.x.tensor
    model.to("cuda")
    assert torch.equal(model.posterior.x.__dict__["_value"].cpu(), draw)
    assert_lives_on(model, torch.float32, "cuda")
    loss = finite_loss(model)
    assert loss.device.type == "cuda"
    loss.backward()


@needs_gpu
@pytest.mark.parametrize(("name", "family"), MATRIX)
def test_model_built_on_cuda_stays_there(name, family):
    model = build(name, family, device="cuda")
    assert_lives_on(model, torch.float32, "cuda")
    assert finite_loss(model).device.type == "cuda"
