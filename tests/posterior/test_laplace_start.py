"""The Laplace start of ``MultivariateNormal`` (``borch.posterior.laplace_start``):
exact on a conjugate model, made once by the outermost call, kept away from
loaded state, and skipped where the model's density is not a function of the
joint's point."""

import pytest
import torch

import borch
from borch import distributions as dist
from borch import infer, posterior

X = torch.tensor([[1.0, 0.5], [0.2, -1.0], [-0.7, 0.3], [1.5, 1.2], [0.3, 0.1]])
Y = torch.tensor([1.2, -0.8, 0.1, 2.0, 0.4])
NOISE = 0.5


class Regression(borch.Module):
    def forward(self, x):
        self.w = dist.Normal(torch.zeros(2), 1.0)
        self.y = dist.Normal((x * self.w.unsqueeze(-2)).sum(-1), NOISE)
        return self.y


def exact():
    precision = X.T @ X / NOISE**2 + torch.eye(2)
    covariance = torch.linalg.inv(precision)
    return covariance @ X.T @ Y / NOISE**2, covariance


def regression(**options):
    model = Regression(posterior=posterior.MultivariateNormal(**options))
    model.observe(y=Y)
    return model


def joint_moments(model):
    joint = model.posterior.unconstrained_distribution()
    return joint.mean.detach(), joint.covariance_matrix.detach()


def test_the_start_is_the_exact_gaussian_posterior():
    model = regression()
    model(X)
    mean, covariance = joint_moments(model)
    exact_mean, exact_covariance = exact()
    assert torch.allclose(mean, exact_mean, atol=1e-4)
    assert torch.allclose(covariance, exact_covariance, atol=1e-4)
    assert sorted(name for name, _ in model.posterior.named_buffers()) == [
        "_started",
        "w.basis",
        "w.origin",
    ]


def test_a_first_call_inside_particle_vi_loss_starts_too():
    model = regression()
    loss = infer.particle_vi_loss(model, X, num_particles=4)
    assert loss.shape == ()
    assert torch.allclose(joint_moments(model)[0], exact()[0], atol=1e-4)


def test_loaded_state_is_kept():
    trained = regression()
    trained(X)
    with torch.no_grad():
        trained.posterior.w.numbers.add_(0.5)
    fresh = regression()
    fresh.load_state_dict(trained.state_dict())
    fresh(X)
    for (name, a), (_, b) in zip(
        trained.state_dict().items(), fresh.state_dict().items()
    ):
        assert torch.equal(a, b), name


def test_the_start_is_made_once_by_the_outermost_call():
    shared = posterior.MultivariateNormal()

    class Inner(borch.Module):
        def forward(self):
            self.w = dist.Normal(torch.zeros(2), 1.0)
            return self.w

    class Outer(borch.Module):
        def __init__(self):
            super().__init__(posterior=shared)
            self.inner = Inner(posterior=shared)

        def forward(self, x):
            w = self.inner()
            self.y = dist.Normal((x * w.unsqueeze(-2)).sum(-1), NOISE)

    model = Outer()
    model.observe(y=Y)
    model(X)  # the inner call alone has no likelihood: the outer call's fit
    assert torch.allclose(joint_moments(model)[0], exact()[0], atol=1e-4)
    with torch.no_grad():
        shared.w.numbers.add_(0.5)
    before = shared.w.numbers.clone()
    model(X)
    assert torch.equal(shared.w.numbers, before)


class WithOtherPosterior(borch.Module):
    def __init__(self):
        super().__init__(posterior=posterior.MultivariateNormal())
        self.noise = Noise(posterior=posterior.Normal())

    def forward(self, x):
        self.w = dist.Normal(torch.zeros(2), 1.0)
        self.y = dist.Normal((x * self.w).sum(-1), self.noise())


class Noise(borch.Module):
    def forward(self):
        self.sigma = dist.HalfNormal(1.0)
        return self.sigma


class PriorOnly(borch.Module):
    def __init__(self):
        super().__init__(posterior=posterior.MultivariateNormal())

    def forward(self):
        self.w = dist.Normal(torch.full((2,), 3.0), 1.0)


@pytest.mark.parametrize(
    "model", [WithOtherPosterior, PriorOnly], ids=["other-latent", "no-likelihood"]
)
def test_the_start_is_skipped_where_it_cannot_fit(model):
    model = model()
    model.observe(y=Y)
    model(X) if isinstance(model, WithOtherPosterior) else model()
    joint = model.posterior.unconstrained_distribution()
    prior_mean = 0.0 if isinstance(model, WithOtherPosterior) else 3.0
    assert torch.allclose(joint.mean.detach(), torch.full((2,), prior_mean))
    assert torch.allclose(joint.stddev.detach(), torch.full((2,), 0.1))
    assert bool(model.posterior._started)


def test_a_variable_that_appears_later_starts_at_its_prior():
    class Growing(borch.Module):
        def forward(self, x, extra=False):
            self.w = dist.Normal(torch.zeros(2), 1.0)
            if extra:
                self.b = dist.Normal(2.0, 1.0)
            self.y = dist.Normal((x * self.w).sum(-1), NOISE)

    model = Growing(posterior=posterior.MultivariateNormal())
    model.observe(y=Y)
    model(X)
    model(X, extra=True)
    mean, covariance = joint_moments(model)
    assert torch.allclose(mean[:2], exact()[0], atol=1e-4)
    assert mean[2].item() == 2.0
    assert torch.allclose(covariance[2, 2], torch.tensor(0.01))


@pytest.mark.parametrize(
    ("options", "error"),
    [({"init": "map"}, ValueError), ({"path_derivative": 1}, TypeError)],
)
def test_bad_options(options, error):
    with pytest.raises(error, match=next(iter(options))):
        posterior.MultivariateNormal(**options)


class NearlyNoiseFree(borch.Module):
    def forward(self, x):
        self.b = dist.Normal(torch.zeros(2), 100.0)
        self.sigma = dist.HalfCauchy(2.5)
        self.y = dist.Normal(x @ self.b, self.sigma)


def test_a_search_through_points_the_model_refuses_backs_off():
    """With almost no noise the line search overshoots to a scale that underflows
    to zero, which the likelihood refuses; that round is undone and retried with a
    shorter step, and the first call still ends at the mode."""
    torch.manual_seed(0)
    x = torch.randn(5, 2)
    y = x @ torch.tensor([1.0, -2.0]) + 0.01 * torch.randn(5)
    model = NearlyNoiseFree(posterior=posterior.MultivariateNormal())
    model.observe(y=y)
    model(x)
    mean = model.posterior.unconstrained_distribution().mean.detach()
    least_squares = torch.linalg.lstsq(x, y.unsqueeze(-1)).solution.squeeze(-1)
    assert torch.allclose(mean[:2], least_squares, atol=1e-3)
    assert mean[2] < -3  # log sigma: the noise is about 0.01, not the prior's 2.5


def test_a_predictive_first_call_leaves_the_start_to_the_next_call():
    """Under simulate_observed the observed values are draws, not data: nothing to
    fit, so the start waits for the first call with data."""
    model = regression()
    with borch.simulate_observed(model):
        model(X)
    assert torch.allclose(joint_moments(model)[0], torch.zeros(2))
    model(X)
    assert torch.allclose(joint_moments(model)[0], exact()[0], atol=1e-4)
