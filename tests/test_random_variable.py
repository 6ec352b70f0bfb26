"""The random variable: module, tensor and distribution at once."""

import copy
import pickle

import numpy as np
import pytest
import torch

import borch
from borch import distributions as dist


def test_arguments_of_every_kind():
    param = torch.nn.Parameter(torch.zeros(3))
    parent = dist.Normal(0.0, 1.0)
    scale = borch.Transform(torch.exp, torch.nn.Parameter(torch.zeros(3)))
    for loc in (0.0, [0.0, 0.0, 0.0], np.zeros(3), torch.zeros(3), param, parent):
        rv = dist.Normal(loc, scale)
        assert rv.shape == (3,)
        assert torch.isfinite(rv.log_prob()).all()
    rv = dist.Normal(param, scale)
    assert [name for name, _ in rv.named_parameters()] == ["loc", "scale.arg0"]
    assert isinstance(dist.Normal([0.0, 1.0], 1.0).loc, torch.Tensor)


def test_calling_draws_a_new_value_and_sample_does_not_change_it():
    rv = dist.Normal(torch.zeros(5), 1.0)
    first = rv.tensor
    assert rv.tensor is first  # cached until something changes
    assert rv.sample((2,)).shape == (2, 5)
    assert rv.tensor is first
    second = rv()
    assert not torch.equal(first, second)
    assert rv.tensor is second


def test_value_is_reparameterised():
    loc = torch.nn.Parameter(torch.zeros(2))
    rv = dist.Normal(loc, 1.0)
    rv.tensor.sum().backward()
    assert torch.equal(loc.grad, torch.ones(2))


def test_parameter_change_rebuilds_distribution_and_redraws():
    loc = torch.nn.Parameter(torch.zeros(()))
    rv = dist.Normal(loc, 1e-6)
    assert abs(rv.tensor.item()) < 1e-3
    with torch.no_grad():
        loc.fill_(5.0)
    assert rv.distribution.mean.item() == 5.0
    assert abs(rv.tensor.item() - 5.0) < 1e-3


def test_hierarchy_follows_the_parent_draw():
    parent = dist.Normal(0.0, 10.0)
    child = dist.Normal(parent, 1e-6)
    assert torch.allclose(child.tensor, parent.tensor, atol=1e-3)
    parent()
    assert torch.allclose(child.tensor, parent.tensor, atol=1e-3)
    parent.tensor = torch.tensor(3.0)
    assert torch.allclose(child.tensor, torch.tensor(3.0), atol=1e-3)


def test_distribution_valued_arguments():
    base = dist.Normal(torch.zeros(3), 1.0)
    rv = dist.Independent(base, 1)
    assert rv.distribution.event_shape == (3,)
    assert rv.log_prob().shape == ()


def test_value_drawn_without_grad_is_redrawn_when_training():
    loc = torch.nn.Parameter(torch.zeros(()))
    rv = dist.Normal(loc, 1.0)
    with torch.no_grad():
        evaluation = rv.tensor
    assert not evaluation.requires_grad
    assert rv.tensor.requires_grad
    with torch.no_grad():
        assert rv.tensor.requires_grad  # a value with gradients is fine to reuse


def test_explicit_values_are_kept():
    loc = torch.nn.Parameter(torch.zeros(2))
    rv = dist.Normal(loc, 1.0)
    rv.tensor = [1.0, 2.0]
    assert torch.equal(rv.tensor, torch.tensor([1.0, 2.0]))
    assert torch.allclose(
        rv.log_prob(), rv.distribution.log_prob(torch.tensor([1.0, 2.0]))
    )


def test_distribution_methods():
    rv = dist.Normal(torch.zeros(2), 2.0)
    value = torch.tensor([0.5, -1.0])
    reference = torch.distributions.Normal(torch.zeros(2), 2.0)
    assert torch.allclose(rv.log_prob(value), reference.log_prob(value))
    assert torch.allclose(rv.cdf(value), reference.cdf(value))
    assert torch.allclose(rv.icdf(torch.tensor([0.5, 0.5])), torch.zeros(2))
    assert torch.allclose(rv.entropy(), reference.entropy())
    assert torch.allclose(rv.perplexity(), reference.perplexity())
    assert rv.batch_shape == (2,) and rv.event_shape == ()
    assert rv.has_rsample and not dist.Poisson(1.0).has_rsample
    assert torch.equal(rv.distribution.mean, torch.zeros(2))
    assert rv.rsample((3,)).shape == (3, 2)


def test_log_prob_checks_explicit_values_against_the_support():
    rv = dist.Gamma(2.0, 1.0)
    with pytest.raises(ValueError, match="value outside the support"):
        rv.log_prob(torch.tensor(-1.0))
    with borch.validate_args(False):
        rv.log_prob(torch.tensor(-1.0))


def test_validation_per_variable_and_in_a_block():
    with pytest.raises(ValueError, match="scale=-1.0 must satisfy GreaterThan"):
        dist.Normal(0.0, -1.0).validate()
    with pytest.raises(ValueError, match="Expected parameter scale"):
        dist.Normal(0.0, torch.tensor(-1.0)).validate()
    dist.Normal(0.0, -1.0, validate_args=False).validate()
    with borch.validate_args(False):
        dist.Normal(0.0, -1.0).validate()
        with pytest.raises(ValueError):
            dist.Normal(0.0, -1.0, validate_args=True).validate()
    with pytest.raises(TypeError), borch.validate_args("no"):
        pass


def test_assigning_an_argument_rebuilds():
    rv = dist.Normal(0.0, 1.0)
    rv.loc = 10.0
    assert rv.distribution.mean.item() == 10.0
    rv.loc = torch.nn.Parameter(torch.tensor(1.0))
    assert "loc" in dict(rv.named_parameters())
    rv.loc = 2.0
    assert "loc" not in dict(rv.named_parameters())


def test_state_dict_holds_parameters_not_draws():
    rv = dist.Normal(torch.nn.Parameter(torch.zeros(2)), 1.0)
    rv.tensor  # noqa: B018
    assert list(rv.state_dict()) == ["loc"]
    assert list(rv.buffers()) == []


def test_to_moves_current_value_and_arguments():
    rv = dist.Normal(torch.zeros(2), torch.ones(2))
    value = rv.tensor
    rv.double()
    assert rv.tensor.dtype == torch.float64
    assert torch.equal(rv.tensor, value.double())  # moved, not redrawn
    assert rv.distribution.loc.dtype == torch.float64


def test_deepcopy_and_pickle_keep_parameters():
    loc = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    parent = dist.Normal(0.0, 1.0)
    rv = dist.Normal(loc, borch.Transform(torch.exp, parent))
    rv.tensor  # noqa: B018
    for clone in (copy.deepcopy(rv), pickle.loads(pickle.dumps(rv))):
        assert torch.equal(clone.loc, loc)
        assert clone.loc is not loc
        assert clone.tensor.shape == (2,)


def test_repr_is_compact():
    rv = dist.Normal(torch.nn.Parameter(torch.zeros(())), torch.ones(3))
    assert repr(rv) == "Normal(loc=Parameter(0), scale=tensor(shape=(3,)))"


def test_custom_random_variable_in_the_original_style():
    class MyRV(borch.RandomVariable):
        distribution_cls = torch.distributions.Normal

        def __init__(self, loc=1.0, scale=1.0):
            super().__init__()
            self.register_param_or_buffer("loc", loc)
            self.register_param_or_buffer("scale", scale)
            self()

        def _distribution(self):
            return self.distribution_cls(
                borch.as_tensor(self.loc), borch.as_tensor(self.scale)
            )

    rv = MyRV(torch.nn.Parameter(torch.tensor(1.0)), 2.0)
    assert bool(torch.exp(rv) > 0)
    assert type(rv.tensor) is torch.Tensor
    assert [p.item() for p in rv.parameters()] == [1.0]
    assert rv.distribution.scale.item() == 2.0


def test_graph_subclass_with_register_param_or_buffer():
    class Exp(borch.Graph):
        def __init__(self, param):
            super().__init__()
            self.register_param_or_buffer("param", param)

        def forward(self):
            return torch.exp(self.param)

    exp = Exp(torch.nn.Parameter(torch.zeros(1)))
    assert torch.equal((exp * 1).detach(), torch.ones(1))
    assert len(list(exp.parameters())) == 1
    assert torch.equal(Exp(torch.ones(1)).tensor, torch.exp(torch.ones(1)))


@pytest.mark.parametrize(
    ("make", "argument"),
    [
        (lambda: dist.Beta(torch.tensor([-1.0, 2.0]), 2.0), "concentration1"),
        (lambda: dist.FisherSnedecor(torch.tensor([-1.0]), 3.0), "df1"),
        (
            lambda: dist.LowRankMultivariateNormal(
                torch.zeros(2), torch.tensor([[float("nan")], [0.5]]), torch.ones(2)
            ),
            "cov_factor",
        ),
    ],
)
def test_constructor_failure_names_the_users_argument(make, argument):
    """Beta builds a Dirichlet and reports *its* argument; LowRankMultivariateNormal
    factorises before validating and raises a linear-algebra error on NaN."""
    model = borch.Module()
    with pytest.raises(ValueError, match=f"random variable 'x'.*argument {argument}="):
        model.x = make()


@pytest.mark.parametrize(
    "variable",
    [
        lambda: dist.Normal(torch.zeros(3), 1.0),
        lambda: dist.Gamma(2.0, torch.ones(3)),
        lambda: dist.Categorical(logits=torch.zeros(3, 4)),
        lambda: dist.MultivariateNormal(torch.zeros(2), torch.eye(2)),
    ],
    ids=["Normal", "Gamma", "Categorical", "MultivariateNormal"],
)
@pytest.mark.parametrize("batch_dims", [1, 2])
def test_particles_are_drawn_laid_out_with_the_numbers_of_a_plain_draw(
    variable, batch_dims
):
    from borch.random_variable import particles

    rv = variable()
    torch.manual_seed(0)
    with particles(5, batch_dims):
        laid_out = rv.tensor
    torch.manual_seed(0)
    plain = rv.distribution.sample((5,))
    batch = rv.distribution.batch_shape
    shape = (5,) + (1,) * max(batch_dims - len(batch), 0)
    assert laid_out.shape == shape + plain.shape[1:]
    assert torch.equal(laid_out, plain.reshape(laid_out.shape))
