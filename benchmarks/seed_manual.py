"""Workload: the seed tutorial's manual-posterior step.

Ten particles of ``q = Normal(|mean|, exp(sd) + 0.01)`` against the prior
``Normal(5, 1)``, summed, backward, gradient clipping, Adam step.
"""

from __future__ import annotations

import torch
from torch.distributions import Normal

PARTICLES = 10


def borch_step():
    import borch
    from borch import distributions as dist
    from borch import infer, posterior

    manual = posterior.Manual()
    manual.mean = torch.nn.Parameter(torch.ones(1))
    manual.sd = torch.nn.Parameter(torch.ones(1))

    def forward_posterior(q):
        q.test = dist.Normal(q.mean.abs(), torch.exp(q.sd) + 0.01)

    def forward(model):
        model.test = dist.Normal(5, 1)

    forward_posterior(manual)
    latent = borch.Module(posterior=manual)
    optimizer = torch.optim.Adam(latent.parameters(), lr=0.1)

    def step():
        loss = 0
        for _ in range(PARTICLES):
            forward_posterior(manual)
            forward(latent)
            loss += infer.vi_loss(**borch.pq_to_infer(latent))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(latent.parameters(), 1)
        optimizer.step()
        optimizer.zero_grad()

    return step


def torch_step():
    """By hand with torch.distributions, as a torch user writes it (defaults kept)."""
    mean = torch.nn.Parameter(torch.ones(1))
    sd = torch.nn.Parameter(torch.ones(1))
    optimizer = torch.optim.Adam([mean, sd], lr=0.1)

    def step():
        loss = 0
        for _ in range(PARTICLES):
            q = Normal(mean.abs(), torch.exp(sd) + 0.01)
            value = q.rsample()
            loss = loss + (q.log_prob(value) - Normal(5.0, 1.0).log_prob(value)).sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([mean, sd], 1)
        optimizer.step()
        optimizer.zero_grad()

    return step


def torch_formulas_step():
    """By hand with the densities written out (no distribution objects)."""
    mean = torch.nn.Parameter(torch.ones(1))
    sd = torch.nn.Parameter(torch.ones(1))
    optimizer = torch.optim.Adam([mean, sd], lr=0.1)

    def step():
        loss = 0
        for _ in range(PARTICLES):
            scale = torch.exp(sd) + 0.01
            noise = torch.randn(1)
            value = mean.abs() + scale * noise
            log_q = -0.5 * noise**2 - torch.log(scale)
            log_p = -0.5 * (value - 5.0) ** 2
            loss = loss + (log_q - log_p).sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([mean, sd], 1)
        optimizer.step()
        optimizer.zero_grad()

    return step


def pyro_step():
    import pyro
    import pyro.distributions as pdist
    from pyro.infer import SVI, Trace_ELBO
    from pyro.optim import ClippedAdam

    pyro.clear_param_store()

    def model():
        pyro.sample("test", pdist.Normal(5.0, 1.0).expand([1]).to_event(1))

    def guide():
        mean = pyro.param("mean", torch.ones(1))
        sd = pyro.param("sd", torch.ones(1))
        pyro.sample("test", pdist.Normal(mean.abs(), torch.exp(sd) + 0.01).to_event(1))

    svi = SVI(
        model,
        guide,
        ClippedAdam({"lr": 0.1, "clip_norm": 1.0}),
        Trace_ELBO(num_particles=PARTICLES),
    )
    return svi.step


VARIANTS = {
    "borch": borch_step,
    "torch": torch_step,
    "torch-formulas": torch_formulas_step,
    "pyro": pyro_step,
}
