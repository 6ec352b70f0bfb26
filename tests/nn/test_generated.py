"""Every torch.nn class has a Bayesian twin in borch.nn that constructs with torch's
arguments and runs (parametrised over the central table in ``examples.py``)."""

from __future__ import annotations

import contextlib
import copy
import pickle

import pytest
import torch

import borch
from borch import nn
from borch.nn.defaults import is_normalization
from borch.nn.layer import is_container
from tests.nn.examples import EXAMPLES, build

TORCH_CLASSES = nn.torch_module_classes()


# torch's own warning for this platform, given as much by torch.nn.LSTM
pytestmark = pytest.mark.filterwarnings(
    "ignore:LSTM with projections is not supported with oneDNN"
)


def _deprecation(name: str):
    warns = EXAMPLES[name].warns
    return pytest.warns(warns) if warns else contextlib.nullcontext()


def _construct(name: str, namespace):
    with _deprecation(name):
        return build(name, namespace)


def _tensors(output):
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, (tuple, list)):
        return [t for item in output for t in _tensors(item)]
    return []


def _run(name: str, module):
    torch.manual_seed(1)
    return module(*EXAMPLES[name].inputs())


RUNNABLE = sorted(
    name
    for name, example in EXAMPLES.items()
    if example.inputs is not None and example.no_forward is None
)


def test_every_torch_class_is_in_the_table_and_generated():
    for name in TORCH_CLASSES:
        if name in nn.NOT_GENERATED:
            continue
        assert name in EXAMPLES, (
            f"Please add {name} to EXAMPLES in tests/nn/examples.py"
        )
        assert name in nn.__all__, f"borch.nn does not export {name}"
    stale = set(EXAMPLES) - set(TORCH_CLASSES)
    assert not stale, f"EXAMPLES lists classes torch.nn no longer has: {stale}"


def test_module_is_borch_module():
    assert nn.Module is borch.Module


@pytest.mark.parametrize("name", nn.GENERATED)
def test_class_is_a_real_named_twin(name):
    cls = getattr(nn, name)
    source = TORCH_CLASSES[name]
    assert cls.__module__ == "borch.nn"
    assert cls.__name__ == cls.__qualname__ == name
    assert issubclass(cls, source)
    assert issubclass(cls, borch.Module) != is_container(source)
    assert pickle.loads(pickle.dumps(cls)) is cls
    assert nn.borch_class(source) is cls


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_constructs_with_torch_arguments(name):
    layer = _construct(name, nn)
    source = TORCH_CLASSES[name]
    assert isinstance(layer, source)
    if not is_container(source):
        assert isinstance(layer, borch.Module)


@pytest.mark.parametrize("name", RUNNABLE)
def test_forward_is_finite_and_gradients_reach_the_posterior(name):
    layer = _construct(name, nn)
    outputs = _tensors(_run(name, layer))
    assert outputs, f"{name} returned no tensor"
    for output in outputs:
        if output.is_floating_point():
            assert torch.isfinite(output).all(), name
    parameters = [
        p for _, rv in borch.named_random_variables(layer) for p in rv.parameters()
    ]
    if not parameters:
        return
    total = sum(o.sum() for o in outputs if o.is_floating_point() and o.requires_grad)
    total.backward()
    for parameter in parameters:
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name


@pytest.mark.parametrize("name", RUNNABLE)
def test_every_parameter_is_a_random_variable(name):
    """Each torch parameter (by qualified name) has a prior and an approximation in
    the twin, except normalisation layers' (deterministic by default)."""
    torch_layer = _construct(name, torch.nn)
    layer = _construct(name, nn)
    _run(name, torch_layer)  # lazy layers create their parameters here
    _run(name, layer)
    variables = {path for path, _ in borch.named_random_variables(layer, prior=True)}
    owners = dict(torch_layer.named_modules())
    for path, _ in torch_layer.named_parameters():
        owner, _, parameter = path.rpartition(".")
        if is_normalization(type(owners[owner])):
            continue
        prefix = f"{owner}." if owner else ""
        assert f"{prefix}prior.{parameter}" in variables, (name, path)
        assert f"{prefix}posterior.{parameter}" in variables, (name, path)


@pytest.mark.parametrize("name", RUNNABLE)
def test_layers_without_random_variables_behave_as_torch(name):
    layer = _construct(name, nn)
    _run(name, layer)
    if any(True for _ in borch.named_random_variables(layer)):
        return
    torch_layer = _construct(name, torch.nn)
    _run(name, torch_layer)  # lazy layers create their parameters here
    with torch.no_grad():
        for mine, theirs in zip(layer.parameters(), torch_layer.parameters()):
            mine.copy_(theirs)
    expected = _tensors(_run(name, torch_layer))
    actual = _tensors(_run(name, layer))
    assert len(expected) == len(actual)
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e)
    assert repr(layer) == repr(torch_layer)


@pytest.mark.parametrize("name", RUNNABLE)
def test_pickles_and_copies(name):
    layer = _construct(name, nn)
    _run(name, layer)
    with _deprecation(name):
        clones = [pickle.loads(pickle.dumps(layer)), copy.deepcopy(layer)]
    for clone in clones:
        assert type(clone) is type(layer)
        state = layer.state_dict()
        assert set(clone.state_dict()) == set(state)
        for key, value in clone.state_dict().items():
            torch.testing.assert_close(value, state[key])
        outputs = _tensors(_run(name, clone))
        assert all(torch.isfinite(o).all() for o in outputs if o.is_floating_point())
