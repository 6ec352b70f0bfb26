"""Every torch distribution has a random-variable class that behaves like it."""

import inspect
import pickle

import pytest
import torch
from torch import nn

import borch
from borch import distributions as dist
from tests.distributions.examples import EXAMPLES

TORCH_NAMES = sorted(dist.torch_distribution_classes())
ALL_NAMES = [*TORCH_NAMES, "Delta", "PointMass"]


def test_every_torch_distribution_is_generated_and_exemplified():
    import torch.distributions as td

    for name in td.__all__:
        cls = getattr(td, name)
        if not (inspect.isclass(cls) and issubclass(cls, td.Distribution)):
            continue
        if name in dist.EXCLUDED:
            continue
        assert hasattr(dist, name), f"borch.distributions is missing {name}"
        assert name in EXAMPLES, (
            f"Please add {name} to the examples list in tests/distributions/examples.py"
        )


def test_excluded_classes_are_abstract_bases():
    import torch.distributions as td

    for name in dist.EXCLUDED:
        cls = getattr(td, name)
        subclasses = [
            c for c in dist.torch_distribution_classes().values() if issubclass(c, cls)
        ]
        assert subclasses, f"{name} is excluded but nothing derives from it"
        with pytest.raises(NotImplementedError):
            cls(validate_args=False).sample()


@pytest.mark.parametrize("name", ALL_NAMES)
def test_class_is_real_and_documented(name):
    cls = getattr(dist, name)
    assert issubclass(cls, borch.RandomVariable)
    assert issubclass(cls, nn.Module)
    assert cls.__module__ == "borch.distributions.rv_distributions"
    assert cls.__qualname__ == name
    torch_signature = inspect.signature(cls.distribution_cls.__init__)
    expected = list(torch_signature.parameters)[1:]
    assert list(inspect.signature(cls).parameters) == expected
    assert "validate_args" in inspect.signature(cls).parameters
    assert name in cls.__doc__
    for argument in cls.arg_names:
        assert argument in cls.__doc__
    assert pickle.loads(pickle.dumps(cls)) is cls


@pytest.mark.parametrize("name", ALL_NAMES)
def test_instances_behave_as_their_distribution(name):
    cls = getattr(dist, name)
    rv = cls(**EXAMPLES[name]())
    distribution = rv.distribution
    assert isinstance(distribution, cls.distribution_cls)
    value = rv.tensor
    assert value.shape == distribution.batch_shape + distribution.event_shape
    assert rv.shape == value.shape  # tensor attributes are the current value's
    log_prob = rv.log_prob()
    assert log_prob.shape == distribution.batch_shape
    assert torch.isfinite(log_prob).all()
    assert rv.has_rsample == distribution.has_rsample
    assert rv.support == distribution.support or type(rv.support) is type(
        distribution.support
    )
    draws = rv.sample((4,))
    assert draws.shape == (4, *value.shape)
    assert torch.equal(rv.tensor, value), "sample() must not change the current value"


@pytest.mark.parametrize("name", ALL_NAMES)
def test_arguments_are_accessible_by_name(name):
    cls = getattr(dist, name)
    arguments = EXAMPLES[name]()
    rv = cls(**arguments)
    for key, value in arguments.items():
        got = getattr(rv, key)
        if isinstance(value, torch.Tensor):
            assert torch.equal(torch.as_tensor(got), value)
        elif isinstance(value, borch.RandomVariable):
            assert got is value
        else:
            assert got == value


@pytest.mark.parametrize("name", ALL_NAMES)
def test_pickle_round_trip(name):
    rv = getattr(dist, name)(**EXAMPLES[name]())
    rv.tensor  # noqa: B018 - a current value that must not break pickling
    clone = pickle.loads(pickle.dumps(rv))
    assert type(clone) is type(rv)
    assert type(clone.distribution) is type(rv.distribution)


def test_constructor_errors_name_the_problem():
    with pytest.raises(TypeError, match="unexpected keyword argument 'mean'"):
        dist.Normal(mean=0.0, scale=1.0)
    with pytest.raises(TypeError, match="missing required arguments: scale"):
        dist.Normal(0.0)
    with pytest.raises(TypeError, match="takes 2 positional arguments"):
        dist.Normal(0.0, 1.0, 2.0)
    with pytest.raises(TypeError, match="multiple values for argument 'loc'"):
        dist.Normal(0.0, 1.0, loc=1.0)
    with pytest.raises(TypeError, match="validate_args must be True, False or None"):
        dist.Normal(0.0, 1.0, validate_args="yes")


def test_optional_arguments_left_out_are_not_passed():
    rv = dist.Bernoulli(logits=torch.zeros(2))
    assert list(rv.arguments) == ["logits"]
    assert torch.allclose(rv.distribution.probs, torch.full((2,), 0.5))


def test_random_variable_base_class_is_not_instantiable():
    with pytest.raises(TypeError, match="base class"):
        borch.RandomVariable()


def test_random_variable_class_for_a_user_distribution():
    class Shifted(torch.distributions.Normal):
        def __init__(self, loc, scale, shift=1.0, validate_args=None):
            super().__init__(loc + shift, scale, validate_args=validate_args)

    ShiftedRV = dist.random_variable_class(Shifted)
    rv = ShiftedRV(0.0, 1.0, shift=3.0)
    assert rv.distribution.mean.item() == 3.0
    assert "shift" in ShiftedRV.__doc__

    class Varargs(torch.distributions.Normal):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)

    with pytest.raises(TypeError, match="named arguments"):
        dist.random_variable_class(Varargs)
