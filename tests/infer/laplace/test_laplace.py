"""The Laplace approximation: exact on Gaussian models, made positive definite where
needed, and usable on a model fitted by MAP."""

import numpy as np
import pytest
import torch

import borch
from borch import distributions as dist
from borch import posterior
from borch.infer import Laplace, laplace_posterior
from borch.infer.laplace.approximation import _row_by_row, hessian
from tests.infer.hmc.test_model_conversion import Network
from tests.infer.models import linear_regression


def fit_map(model, args, steps=3, max_iter=100):
    """MAP by LBFGS on the negative log joint (vi_loss with point masses)."""

    def loss_closure():
        borch.sample(model)
        model(*args)
        return borch.infer.vi_loss(**borch.pq_to_infer(model))

    loss_closure()
    optimizer = torch.optim.LBFGS(
        model.parameters(),
        max_iter=max_iter,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
    )

    def step():
        optimizer.zero_grad()
        loss = loss_closure()
        loss.backward()
        return loss

    for _ in range(steps):
        optimizer.step(step)
    return loss_closure


def test_exact_on_bayesian_linear_regression():
    """With Gaussian prior and likelihood the posterior is Gaussian: Laplace's mean
    and covariance are the exact ones (float32 MAP and Hessian: 1e-3 relative)."""
    model, args, mean, covariance = linear_regression()
    model.apply(borch.set_posteriors(posterior.PointMass))
    loss_closure = fit_map(model, args)
    approx = laplace_posterior(model, loss_closure)
    assert approx.names == ["beta"]
    laplace = approx.laplace
    torch.testing.assert_close(laplace.mean.double(), mean, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(
        laplace.covariance.double(), covariance, rtol=1e-3, atol=1e-6
    )
    assert laplace.num_clipped == 0


def quadratic(precision, center):
    x = torch.tensor(center, dtype=torch.float64, requires_grad=True)
    y = torch.zeros(2, 1, dtype=torch.float64, requires_grad=True)
    precision = torch.as_tensor(precision, dtype=torch.float64)
    target = torch.as_tensor(center, dtype=torch.float64)

    def loss():
        d = torch.cat([x - target, y.reshape(-1)])
        return 0.5 * d @ precision @ d + torch.sin(d).sum() * 0.0

    return x, y, loss


PRECISION = [
    [2.0, 0.5, 0.0, 0.1],
    [0.5, 1.0, 0.2, 0.0],
    [0.0, 0.2, 3.0, 0.4],
    [0.1, 0.0, 0.4, 0.5],
]


def test_covariance_is_the_inverse_hessian_and_draws_follow_it():
    """20000 draws: the empirical covariance is within 5% of the largest entry
    (the entries' Monte Carlo standard errors are about 1% of it)."""
    x, y, loss = quadratic(PRECISION, [1.0, -2.0])
    laplace = Laplace(loss, [x, y])
    torch.testing.assert_close(laplace.hessian, torch.tensor(PRECISION).double())
    torch.testing.assert_close(
        laplace.covariance, torch.linalg.inv(torch.tensor(PRECISION).double())
    )
    torch.testing.assert_close(
        laplace.mean, torch.tensor([1.0, -2.0, 0.0, 0.0]).double()
    )
    draws = laplace.sample_flat(20000, generator=torch.Generator().manual_seed(0))
    empirical = torch.cov(draws.T)
    scale = laplace.covariance.abs().max()
    assert (empirical - laplace.covariance).abs().max() < 0.05 * scale
    assert (draws.mean(0) - laplace.mean).abs().max() < 0.05 * scale.sqrt()
    assert x.tolist() == [1.0, -2.0]  # params untouched


def test_sample_shapes():
    x, y, loss = quadratic(PRECISION, [1.0, -2.0])
    laplace = Laplace(loss, [x, y])
    assert [d.shape for d in laplace.sample()] == [(2,), (2, 1)]
    assert [d.shape for d in laplace.sample(5)] == [(5, 2), (5, 2, 1)]
    assert laplace.sample_flat().shape == (4,)
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="n must be"):
            laplace.sample(bad)


def test_hessian_by_rows_equals_the_batched_one():
    x = torch.tensor([0.3, -0.7, 1.1], requires_grad=True)

    def loss():
        return (x.exp() * x.roll(1)).sum() + (x**3).prod()

    batched = hessian(loss, [x])
    grads = torch.autograd.grad(loss(), [x], create_graph=True)[0]
    torch.testing.assert_close(batched, _row_by_row(grads, x))
    torch.testing.assert_close(batched, batched.T)


def test_saddle_points_are_clipped_with_a_warning():
    """x^2 - y^2 has eigenvalues 2 and -2: the negative one is raised to the floor
    (1e-6 of the largest by default), the covariance is positive definite."""
    x = torch.zeros(2, dtype=torch.float64, requires_grad=True)

    def loss():
        return x[0] ** 2 - x[1] ** 2

    with pytest.warns(RuntimeWarning, match=r"1 of 2 eigenvalues.*clipped"):
        laplace = Laplace(loss, [x])
    assert laplace.num_clipped == 1
    eigenvalues = torch.linalg.eigvalsh(laplace.covariance)
    assert bool((eigenvalues > 0).all())
    torch.testing.assert_close(
        laplace.covariance.diagonal(), torch.tensor([0.5, 0.5e6]).double()
    )
    with pytest.warns(RuntimeWarning, match="clipped"):
        laplace = Laplace(loss, [x], min_eigenvalue=0.25)
    torch.testing.assert_close(
        laplace.covariance.diagonal(), torch.tensor([0.5, 4.0]).double()
    )


@pytest.mark.parametrize(
    ("loss", "kwargs", "error", "match"),
    [
        (lambda x: -(x**2).sum(), {}, ValueError, "no positive eigenvalue"),
        (lambda x: (x**2).sum(), {"min_eigenvalue": 0.0}, ValueError, "min_eigenvalue"),
        (lambda x: (x**2).sum() * float("nan"), {}, ValueError, "not finite"),
        (lambda x: x**2, {}, TypeError, "scalar"),
        (lambda x: torch.tensor(1.0), {}, ValueError, "without gradient"),
    ],
)
def test_bad_input(loss, kwargs, error, match):
    x = torch.ones(2, requires_grad=True)
    with pytest.raises(error, match=match):
        Laplace(lambda: loss(x), [x], **kwargs)


def test_bad_arguments():
    x = torch.ones(2, requires_grad=True)
    with pytest.raises(TypeError, match="callable"):
        Laplace("loss", [x])
    with pytest.raises(ValueError, match="requires_grad"):
        Laplace(lambda: (x**2).sum(), [torch.ones(2)])


def test_a_linear_loss_has_zero_curvature():
    x = torch.ones(2, requires_grad=True)
    assert torch.equal(hessian(lambda: x.sum(), [x]), torch.zeros(2, 2))


def network_map():
    model = Network()
    model.apply(borch.set_posteriors(posterior.PointMass))
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    model.observe(y=torch.tensor([0.5, -0.3, 1.0, 0.2]))
    loss_closure = fit_map(model, (x,))
    return model, x, loss_closure


def test_laplace_posterior_drives_the_models_latent_values():
    model, x, loss_closure = network_map()
    approx = laplace_posterior(model, loss_closure)
    assert sorted(approx.names) == ["layer.scale", "layer.weight", "mu"]
    mode = approx.mode()
    torch.manual_seed(1)
    values = approx.draw()
    model(x)
    assert torch.equal(model.layer.weight, values["layer.weight"])
    assert model.layer.scale.item() == values["layer.scale"].item() > 0
    assert not torch.equal(values["layer.weight"], mode["layer.weight"])
    approx.restore()
    model(x)
    assert torch.equal(model.layer.weight, mode["layer.weight"])
    with approx.drawn() as drawn:
        model(x)
        assert torch.equal(model.mu, drawn["mu"])
    model(x)
    assert torch.equal(model.mu, mode["mu"])


def test_laplace_posterior_samples_by_name():
    model, _, loss_closure = network_map()
    approx = laplace_posterior(model, loss_closure)
    samples = approx.samples(50, generator=torch.Generator().manual_seed(0))
    assert {k: tuple(v.shape) for k, v in samples.items()} == {
        "layer.scale": (50,),
        "layer.weight": (50, 2, 3),
        "mu": (50,),
    }
    assert bool((samples["layer.scale"] > 0).all())
    # samples come from the Gaussian in unconstrained space: log(scale) is Normal
    log_scale = samples["layer.scale"].log().double().numpy()
    position = approx.names.index("layer.scale")
    index = sum(p.numel() for p in approx.laplace.params[:position])
    sd = approx.laplace.covariance[index, index].sqrt().item()
    assert abs(log_scale.mean() - approx.laplace.mean[index].item()) < 4 * sd / np.sqrt(
        50
    )


def test_laplace_posterior_needs_point_masses():
    model = Network()
    x = torch.randn(4, 2)
    model.observe(y=torch.zeros(4))

    def loss_closure():
        borch.sample(model)
        model(x)
        return borch.infer.vi_loss(**borch.pq_to_infer(model))

    with pytest.raises(TypeError, match="PointMass"):
        laplace_posterior(model, loss_closure)


def test_laplace_posterior_without_latent_variables():
    class Observed(borch.Module):
        def forward(self):
            self.y = dist.Normal(0.0, 1.0)

    model = Observed()
    model.observe(y=torch.tensor(0.0))

    def loss_closure():
        borch.sample(model)
        model()
        return borch.infer.vi_loss(**borch.pq_to_infer(model))

    with pytest.raises(ValueError, match="no latent random variables"):
        laplace_posterior(model, loss_closure)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_laplace_on_the_gpu():
    x = torch.zeros(2, device="cuda", requires_grad=True)
    laplace = Laplace(lambda: (x**2).sum(), [x])
    assert laplace.covariance.device.type == "cuda"
    draws = laplace.sample_flat(10, generator=torch.Generator().manual_seed(0))
    assert draws.device.type == "cuda"
    assert draws.shape == (10, 2)
