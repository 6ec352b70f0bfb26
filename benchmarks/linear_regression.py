"""Workload: linear regression on 100 points under the default Automatic posterior.

``b, a ~ Normal(0, 3)``, ``sigma ~ LogNormal(1, 1)``, ``y ~ Normal(b x + a, sigma)``;
one step is: new draws, forward, negative ELBO, backward, Adam step.
"""

from __future__ import annotations

import math

import torch
from torch.distributions import LogNormal, Normal

from benchmarks import harness


def data():
    generator = torch.Generator().manual_seed(0)
    x = torch.linspace(0, 10, 100)
    y = 2 * x + 4 + 4 * torch.randn(100, generator=generator)
    return x, y


def borch_training():
    import borch
    from borch import distributions as dist
    from borch import infer

    x, y = data()

    def forward(model, x):
        model.b = dist.Normal(0.0, 3.0)
        model.a = dist.Normal(0.0, 3.0)
        model.sigma = dist.LogNormal(1.0, 1.0)
        model.y = dist.Normal(model.b * x + model.a, model.sigma)
        return model.y

    model = borch.Module()
    model.observe(y=y)
    forward(model, x)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)

    def loss_fn():
        borch.sample(model)
        forward(model, x)
        return infer.vi_loss(**borch.pq_to_infer(model))

    return harness.Training(loss_fn, optimizer)


def _automatic_parameters():
    # The Automatic posterior's parameterisation: each prior's family with its
    # arguments learnable (scales and LogNormal's scale through exp).
    values = {
        "b_loc": 0.0,
        "b_scale": math.log(3.0),
        "a_loc": 0.0,
        "a_scale": math.log(3.0),
        "s_loc": 1.0,
        "s_scale": 0.0,
    }
    return {k: torch.nn.Parameter(torch.tensor(v)) for k, v in values.items()}


def torch_training():
    """By hand with torch.distributions, as a torch user writes it (defaults kept)."""
    x, y = data()
    p = _automatic_parameters()
    optimizer = torch.optim.Adam(p.values(), lr=0.01)

    def loss_fn():
        qb = Normal(p["b_loc"], p["b_scale"].exp())
        qa = Normal(p["a_loc"], p["a_scale"].exp())
        qs = LogNormal(p["s_loc"], p["s_scale"].exp())
        b, a, sigma = qb.rsample(), qa.rsample(), qs.rsample()
        loss = -Normal(b * x + a, sigma).log_prob(y).sum()
        loss = loss + qb.log_prob(b) - Normal(0.0, 3.0).log_prob(b)
        loss = loss + qa.log_prob(a) - Normal(0.0, 3.0).log_prob(a)
        loss = loss + qs.log_prob(sigma) - LogNormal(1.0, 1.0).log_prob(sigma)
        return loss

    return harness.Training(loss_fn, optimizer)


borch_step = harness.training_step(borch_training)
torch_step = harness.training_step(torch_training)


HALF_LOG_TWO_PI = 0.5 * math.log(2 * math.pi)


def torch_formulas_step():
    """By hand with the densities written out (no distribution objects)."""
    x, y = data()
    p = _automatic_parameters()
    optimizer = torch.optim.Adam(p.values(), lr=0.01)

    def step():
        noise = torch.randn(3)
        b = p["b_loc"] + p["b_scale"].exp() * noise[0]
        a = p["a_loc"] + p["a_scale"].exp() * noise[1]
        log_sigma = p["s_loc"] + p["s_scale"].exp() * noise[2]
        sigma = log_sigma.exp()
        nll = (0.5 * ((y - b * x - a) / sigma) ** 2 + log_sigma).sum()
        log_q = (
            -0.5 * (noise**2).sum()
            - p["b_scale"]
            - p["a_scale"]
            - p["s_scale"]
            - log_sigma
        )
        log_p = (
            -0.5 * (b / 3) ** 2
            - 0.5 * (a / 3) ** 2
            - 0.5 * (log_sigma - 1) ** 2
            - log_sigma
        )
        loss = nll + 100 * HALF_LOG_TWO_PI + log_q - log_p
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    return step


def pyro_step():
    import pyro
    import pyro.distributions as pdist
    from pyro.infer import SVI, Trace_ELBO
    from pyro.infer.autoguide import AutoNormal

    x, y = data()
    pyro.clear_param_store()

    def model(x, y):
        b = pyro.sample("b", pdist.Normal(0.0, 3.0))
        a = pyro.sample("a", pdist.Normal(0.0, 3.0))
        sigma = pyro.sample("sigma", pdist.LogNormal(1.0, 1.0))
        with pyro.plate("data", len(x)):
            pyro.sample("y", pdist.Normal(b * x + a, sigma), obs=y)

    svi = SVI(model, AutoNormal(model), pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
    return lambda: svi.step(x, y)


VARIANTS = {
    "borch": borch_step,
    "borch-compiled": harness.training_step(borch_training, "borch-compiled"),
    "torch": torch_step,
    "torch-compiled": harness.training_step(torch_training, "torch-compiled"),
    "torch-formulas": torch_formulas_step,
    "pyro": pyro_step,
}
