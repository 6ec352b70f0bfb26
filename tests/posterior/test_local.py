"""Local posteriors: a latent inside a subsampled plate is approximated for every
row and each run uses the subsample's rows."""

import math

import pytest
import torch
import torch.distributions as td

import borch
from borch import distributions as dist
from borch import infer, posterior

N, D = 30, 2
torch.manual_seed(0)
Y = torch.randn(N, D) * 2 + 1


class LocalMeans(borch.Module):
    """``mu ~ Normal(0, 1)``, ``z_i ~ Normal(mu, 1)``, ``y_i ~ Normal(z_i, 1)``."""

    def forward(self, index):
        self.mu = dist.Normal(torch.zeros(D), 1.0)
        with borch.plate("data", N, subsample=index, dim=-2):
            self.observe(y=Y[index])
            self.z = dist.Normal(self.mu.expand(len(index), D), 1.0)
            self.y = dist.Normal(self.z, 1.0)


FAMILIES = [posterior.Normal, posterior.ScaledNormal, posterior.PointMass]


@pytest.mark.parametrize("family", FAMILIES)
def test_the_approximation_has_every_row_and_a_run_uses_the_subsample(family):
    model = LocalMeans(posterior=family())
    index = torch.tensor([2, 5, 7, 29])
    model(index)
    assert model.posterior.z.distribution.batch_shape == (N, D)
    z = {site.name: site for site in borch.sites(model)}["z"]
    assert z.value.shape == (4, D)
    assert z.approximation.distribution.batch_shape == (4, D)
    full = model.posterior.z.distribution
    assert torch.equal(z.approximation.distribution.mean, full.mean[index])
    loss = infer.vi_loss(**borch.pq_to_infer(model))
    loss.backward()
    grads = next(
        p.grad for name, p in model.named_parameters() if name.startswith("posterior.z")
    )
    touched = grads.abs().sum(-1) > 0
    assert (
        touched[index].all() and not touched[~torch.isin(torch.arange(N), index)].any()
    )
    borch.sample(model)
    model(torch.arange(N))  # every row: the approximation itself
    z = {site.name: site for site in borch.sites(model)}["z"]
    assert z.approximation is model.posterior.z


def test_fitting_by_subsampling_reaches_the_exact_mean_field_optimum():
    """A Gaussian model: mean-field VI's optimum has the exact posterior means and
    standard deviations sqrt(1 / diag(precision)): sqrt(1 / (N + 1)) for mu and
    sqrt(1 / 2) for every z_i. Plain SGD on minibatches of 10 (unbiased gradients
    of the full-data ELBO); its iterates average to the optimum. The error of the
    average is estimated by 20 batch means of 200 steps (SGD's correlation time
    here is tens of steps): each of the 124 parameters must lie within 5 standard
    errors (a t variable with 19 degrees of freedom passes 5 with probability
    8e-5, so about 1% for all of them together)."""
    torch.manual_seed(1)
    model = LocalMeans(posterior=posterior.Normal(log_scale=-1.0))
    model(torch.arange(N))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    history = []
    for step in range(6000):
        borch.sample(model)
        model(torch.randperm(N)[:10])
        loss = infer.vi_loss(**borch.pq_to_infer(model))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step >= 2000:
            q_mu, q_z = model.posterior.mu.distribution, model.posterior.z.distribution
            history.append(
                torch.cat(
                    [q_mu.loc, q_z.loc.flatten(), q_mu.scale, q_z.scale.flatten()]
                )
            )
    fitted = torch.stack(history).detach()
    precision = torch.zeros(N + 1, N + 1)
    precision[0, 0] = 1 + N
    precision[0, 1:] = precision[1:, 0] = -1.0
    precision[1:, 1:] = 2 * torch.eye(N)
    means = torch.linalg.solve(precision, torch.cat([torch.zeros(1, D), Y]))
    exact = torch.cat(
        [
            means[0],
            means[1:].flatten(),
            torch.full((D,), math.sqrt(1 / (N + 1))),
            torch.full((N * D,), math.sqrt(0.5)),
        ]
    )
    batch_means = fitted.reshape(20, -1, fitted.shape[1]).mean(1)
    standard_error = batch_means.std(0) / math.sqrt(20)
    assert ((fitted.mean(0) - exact).abs() <= 5 * standard_error).all()


def test_the_full_approximation_is_saved_and_restored():
    model = LocalMeans(posterior=posterior.Normal())
    model(torch.tensor([0, 1]))
    state = model.state_dict()
    assert state["posterior.z.loc"].shape == (N, D)
    fresh = LocalMeans(posterior=posterior.Normal())
    fresh.load_state_dict(state)
    fresh(torch.tensor([3]))
    assert torch.equal(fresh.posterior.z.loc, model.posterior.z.loc)
    assert td.Normal is type(fresh.posterior.z.distribution)
