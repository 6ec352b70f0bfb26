"""Workload: multi-sample ELBOs on the linear regression, vectorised and looped.

Reports the time of one training step and the time per particle for several particle
counts, and how much the variance of the gradient falls relative to one particle.
"""

from __future__ import annotations

import torch

from benchmarks.linear_regression import data

COUNTS = (1, 8, 64)


def _model():
    import borch
    from borch import distributions as dist

    class Regression(borch.Module):
        def forward(self, x):
            self.b = dist.Normal(0.0, 3.0)
            self.a = dist.Normal(0.0, 3.0)
            self.sigma = dist.LogNormal(1.0, 1.0)
            self.y = dist.Normal(self.b * x + self.a, self.sigma)
            return self.y

    x, y = data()
    model = Regression(posterior=borch.posterior.Normal())
    model.observe(y=y)
    model(x)
    return model, x


def make_step(count: int, vectorize: bool):
    def make():
        from borch import infer

        model, x = _model()
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)

        def step():
            loss = infer.particle_vi_loss(
                model, x, num_particles=count, vectorize=vectorize
            )
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()

        return step

    return make


def gradient_variance(count: int, draws: int = 200) -> float:
    """Mean over parameters of the variance of their gradient estimates."""
    from borch import infer

    model, x = _model()
    parameters = list(model.parameters())
    rows = []
    for _ in range(draws):
        loss = infer.particle_vi_loss(model, x, num_particles=count)
        grads = torch.autograd.grad(loss, parameters)
        rows.append(torch.stack([g.reshape(()) for g in grads]))
    return torch.stack(rows).var(0).mean().item()
