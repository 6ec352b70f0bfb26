"""Models with known posteriors for the sampler tests."""

import torch

import borch
from borch import distributions as dist

#: The eight schools data (Rubin, 1981): estimated effects and their standard errors.
SCHOOL_EFFECTS = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SCHOOL_ERRORS = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])
#: Posterior means of mu and tau, as published for the non-centred model (Stan case
#: study "Diagnosing Biased Inference with Divergences"; posteriordb), to 1 decimal.
EIGHT_SCHOOLS_REFERENCE = {"mu": 4.4, "tau": 3.6}


class EightSchools(borch.Module):
    """Non-centred eight schools: theta = mu + tau * theta_tilde."""

    def forward(self, sigma):
        self.mu = dist.Normal(0.0, 5.0)
        self.tau = dist.HalfCauchy(5.0)
        self.theta_tilde = dist.Normal(torch.zeros(len(sigma)), 1.0)
        self.y = dist.Normal(self.mu + self.tau * self.theta_tilde, sigma)


def eight_schools():
    model = EightSchools()
    model.observe(y=SCHOOL_EFFECTS)
    return model, (SCHOOL_ERRORS,)


class LinearRegression(borch.Module):
    """``y ~ Normal(X beta, noise)`` with known noise and ``beta ~ Normal(0, prior_sd)``."""

    def __init__(self, noise, prior_sd):
        super().__init__()
        self.noise, self.prior_sd = noise, prior_sd

    def forward(self, x):
        self.beta = dist.Normal(torch.zeros(x.shape[1]), self.prior_sd)
        self.y = dist.Normal(x @ self.beta, self.noise)


def linear_regression(n=20, features=3, noise=0.5, prior_sd=2.0, seed=0):
    """The model, its arguments, and the exact posterior mean and covariance."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=generator, dtype=torch.float64)
    beta = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)[:features]
    y = x @ beta + noise * torch.randn(n, generator=generator, dtype=torch.float64)
    precision = (
        x.T @ x / noise**2 + torch.eye(features, dtype=torch.float64) / prior_sd**2
    )
    covariance = torch.linalg.inv(precision)
    mean = covariance @ x.T @ y / noise**2
    model = LinearRegression(noise, prior_sd)
    model.observe(y=y.float())
    return model, (x.float(),), mean, covariance
