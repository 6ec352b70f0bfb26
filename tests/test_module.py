"""borch.Module: priors, posteriors and observations as attributes."""

import copy
import io

import pytest
import torch

import borch
from borch import distributions as dist
from borch import posterior


class Regression(borch.Module):
    def __init__(self, posterior=None):
        super().__init__(posterior=posterior)
        self.weight = dist.Normal(torch.zeros(3), 1.0)

    def forward(self, x):
        self.noise = dist.Gamma(2.0, 2.0)
        self.y = dist.Normal(x @ self.weight, self.noise)
        return self.y


def test_reading_gives_plain_tensors_and_containers_hold_the_variables():
    model = Regression()
    assert type(model.weight) is torch.Tensor
    assert type(model.prior.weight).__name__ == "Normal"
    assert type(model.posterior.weight).__name__ == "Normal"
    assert model.weight is model.posterior.weight.tensor
    assert model.prior.weight.name == "weight"


def test_parameters_are_the_posteriors():
    model = Regression(posterior=posterior.Normal())
    model(torch.randn(4, 3))
    names = [name for name, _ in model.named_parameters()]
    assert names == [
        "posterior.weight.loc",
        "posterior.weight.scale.log_scale",
        "posterior.noise.base_distribution.loc",
        "posterior.noise.base_distribution.scale.log_scale",
        "posterior.y.loc",
        "posterior.y.scale.log_scale",
    ]


def test_observe_semantics():
    model = Regression()
    y = torch.tensor([1.0, 2.0, 3.0, 4.0])
    model.observe(y=y)
    assert model(torch.randn(4, 3)) is y
    assert "y" not in model.posterior._modules  # observed: no approximation
    model.observe(y=None)
    assert not torch.equal(model(torch.randn(4, 3)), y)
    model.observe(y=y)
    model.observe(None)
    assert len(model.observed._buffers) == 0


def test_observe_rejects_bad_input_naming_it():
    model = Regression()
    with pytest.raises(TypeError, match="argument 'y' must be a torch.Tensor"):
        model.observe(y=[1.0, 2.0])
    with pytest.raises(TypeError, match="None alone"):
        model.observe(torch.ones(2))
    with pytest.raises(ValueError, match="'y' contains non-finite entries"):
        model.observe(y=torch.tensor([1.0, float("inf")]))
    with borch.validate_args(False):
        model.observe(y=torch.tensor([1.0, float("inf")]))
    # NaN marks missing data: accepted here, refused where the variable is assigned
    # unless it is masked there (tests/test_handlers.py).
    model.observe(y=torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="reserved"):
        model.observe(prior=torch.ones(1))


def test_observed_value_outside_the_support_names_the_variable():
    model = borch.Module()
    model.observe(counts=torch.tensor([1.0, -2.0]))
    with pytest.raises(
        ValueError, match="observed value of 'counts' is outside the support"
    ):
        model.counts = dist.Poisson(torch.ones(2))


@pytest.mark.parametrize(
    "likelihood",
    [
        lambda p: dist.Bernoulli(logits=p),
        lambda p: dist.Poisson(torch.exp(p)),
        lambda p: dist.Categorical(logits=torch.stack([p, -p], -1)),
    ],
)
def test_normal_posterior_with_discrete_observed_likelihood(likelihood):
    model = borch.Module(posterior=posterior.Normal())
    model.observe(y=torch.tensor([1.0, 0.0, 1.0]))
    model.w = dist.Normal(torch.zeros(3), 1.0)
    model.y = likelihood(model.w)
    loss = borch.infer.vi_loss(**borch.pq_to_infer(model))
    loss.backward()
    assert torch.isfinite(loss)
    assert model.posterior.w.loc.grad is not None


def test_invalid_arguments_fail_at_assignment_naming_the_variable():
    model = borch.Module()
    with pytest.raises(
        ValueError, match="random variable 'x' \\(Normal\\): argument scale"
    ):
        model.x = dist.Normal(0.0, -1.0)
    with pytest.raises(ValueError, match="random variable 'z' \\(Gamma\\)"):
        model.z = dist.Gamma(torch.tensor([1.0, -1.0]), 1.0)


def test_assignment_before_init_is_a_clear_error():
    class Broken(borch.Module):
        def __init__(self):
            self.x = dist.Normal(0.0, 1.0)
            super().__init__()

    with pytest.raises(AttributeError, match="before Broken.__init__\\(\\)"):
        Broken()

    class TorchOnly(borch.Module):
        def __init__(self):
            torch.nn.Module.__init__(self)
            self.x = dist.Normal(0.0, 1.0)

    with pytest.raises(AttributeError, match="before TorchOnly.__init__"):
        TorchOnly()


def test_names_that_are_taken():
    model = borch.Module()
    model.weight = torch.nn.Parameter(torch.zeros(1))
    with pytest.raises(AttributeError, match="already has a parameter of that name"):
        model.weight = dist.Normal(0.0, 1.0)
    with pytest.raises(ValueError, match="'prior' is reserved"):
        model.prior = dist.Normal(0.0, 1.0)


def test_posterior_argument_checked():
    with pytest.raises(
        TypeError, match="must be an instance, e.g. posterior=Normal\\(\\)"
    ):
        borch.Module(posterior=posterior.Normal)
    with pytest.raises(TypeError, match="must be a borch.posterior.Posterior"):
        borch.Module(posterior="normal")


def test_rv_pair_sets_the_approximation():
    model = borch.Module(posterior=posterior.Normal())
    q = dist.Gamma(torch.nn.Parameter(torch.tensor(2.0)), 1.0)
    model.rate = borch.RVPair(dist.Gamma(1.0, 1.0), q)
    assert model.posterior.rate is q
    assert model.rate is q.tensor


def test_delete_keeps_learned_approximation():
    model = borch.Module()
    model.x = dist.Normal(0.0, 1.0)
    del model.x
    with pytest.raises(AttributeError):
        model.x  # noqa: B018
    assert model.posterior.x is not None
    assert "x" not in dir(model)


def test_state_dict_round_trip_into_a_fresh_module():
    model = Regression(posterior=posterior.Normal())
    model.observe(y=torch.ones(4))
    model(torch.randn(4, 3))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter))
    state = model.state_dict()
    assert all("prior" not in key for key in state)  # priors are rebuilt by code

    fresh = Regression(posterior=posterior.Normal())
    assert fresh.load_state_dict(state).unexpected_keys == []
    fresh(torch.randn(4, 3))  # creates `noise`, which takes its kept-aside state
    restored = fresh.state_dict()
    assert sorted(restored) == sorted(state)
    for key, value in state.items():
        assert torch.equal(restored[key], value), key
    assert torch.equal(fresh.y, torch.ones(4))


def test_load_state_dict_of_another_family_is_a_clear_error():
    model = borch.Module(posterior=posterior.Normal())
    model.x = dist.Normal(0.0, 1.0)
    fresh = borch.Module(posterior=posterior.PointMass())
    fresh.load_state_dict(model.state_dict())
    with pytest.raises(RuntimeError, match="loaded state of 'x' does not fit"):
        fresh.x = dist.Normal(0.0, 1.0)


def test_deepcopy_and_torch_save():
    model = Regression()
    model.observe(y=torch.ones(4))
    model(torch.randn(4, 3))
    loss = borch.infer.vi_loss(**borch.pq_to_infer(model))
    clone = copy.deepcopy(model)
    assert clone.posterior.weight.loc is not model.posterior.weight.loc
    assert torch.equal(clone.posterior.weight.loc, model.posterior.weight.loc)
    clone(torch.randn(4, 3))
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    loaded(torch.randn(4, 3))
    assert torch.equal(loaded.observed.y, torch.ones(4))
    loss.backward()  # the original is untouched by copying


def test_to_dtype_moves_everything():
    model = Regression(posterior=posterior.Normal())
    model.observe(y=torch.ones(4))
    model(torch.randn(4, 3))
    model.double()
    out = model(torch.randn(4, 3, dtype=torch.float64))
    assert out.dtype == torch.float64
    assert model.weight.dtype == torch.float64
    assert model.posterior.noise.distribution.base_dist.loc.dtype == torch.float64
    loss = borch.infer.vi_loss(**borch.pq_to_infer(model))
    assert loss.dtype == torch.float64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_to_cuda_moves_everything():
    model = Regression(posterior=posterior.Normal())
    model.observe(y=torch.ones(4))
    model(torch.randn(4, 3))
    model.to("cuda")
    out = model(torch.randn(4, 3, device="cuda"))
    assert out.device.type == "cuda"
    borch.sample(model)
    model(torch.randn(4, 3, device="cuda"))
    loss = borch.infer.vi_loss(**borch.pq_to_infer(model))
    loss.backward()
    assert loss.device.type == "cuda"


def test_nested_modules():
    class Outer(borch.Module):
        def __init__(self):
            super().__init__()
            self.inner = Regression()
            self.scale = dist.HalfNormal(1.0)

        def forward(self, x):
            return self.inner(x) * self.scale

    model = Outer()
    model(torch.randn(4, 3))
    infer = borch.pq_to_infer(model)
    assert len(infer["p_dists"]) == 4
    names = [name for name, _ in borch.named_random_variables(model)]
    assert names == [
        "posterior.scale",
        "inner.posterior.weight",
        "inner.posterior.noise",
        "inner.posterior.y",
    ]
