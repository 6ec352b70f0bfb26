"""Fit a model with vi_loss and Adam, and read off the moments of the approximation.

The estimate of a moment is its average over the last ``tail`` iterates; its Monte
Carlo standard error comes from batch means over those iterates (they are
autocorrelated, so the plain standard error would be too small).
"""

import math

import numpy as np
import torch

import borch

HERMITE_X, HERMITE_W = np.polynomial.hermite_e.hermegauss(80)


def moments(rv):
    """Mean and standard deviation of an approximating variable's distribution.

    Exact for families with closed forms; Gauss-Hermite quadrature (80 nodes) for a
    Normal pushed through a transform.
    """
    distribution = rv.distribution
    if isinstance(distribution, torch.distributions.TransformedDistribution):
        base = distribution.base_dist
        nodes = torch.as_tensor(HERMITE_X, dtype=base.loc.dtype)
        weights = torch.as_tensor(HERMITE_W / HERMITE_W.sum(), dtype=base.loc.dtype)
        values = base.loc.detach() + base.scale.detach() * nodes
        for transform in distribution.transforms:
            values = transform(values)
        mean = (weights * values).sum()
        sd = ((weights * (values - mean) ** 2).sum()).sqrt()
        return mean.item(), sd.item()
    return distribution.mean.item(), distribution.stddev.item()


def fit(model, forward, steps, tail, lr=0.05, particles=1, batches=10):
    """Train; return {name: (mean, sd, se_mean, se_sd)} over the last ``tail`` steps."""
    optimizer = borch.OptimizersCollection(torch.optim.Adam, lr=lr)
    borch.sample(model)
    forward(model)
    optimizer.add_parameters(model.parameters())
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer.optimizer, T_max=steps - tail, eta_min=lr / 20
    )
    history = []
    for step in range(steps):
        loss = 0.0
        for _ in range(particles):
            borch.sample(model)
            forward(model)
            loss = loss + borch.infer.vi_loss(**borch.pq_to_infer(model))
        (loss / particles).backward()
        optimizer.step()
        optimizer.zero_grad()
        if step < steps - tail:
            schedule.step()
        else:
            history.append(
                {name: moments(rv) for name, rv in model.posterior.named_children()}
            )
    result = {}
    for name in history[0]:
        series = np.array([h[name] for h in history])  # (tail, 2)
        means = series.reshape(batches, -1, 2).mean(1)
        se = means.std(0, ddof=1) / math.sqrt(batches)
        estimate = series.mean(0)
        result[name] = (estimate[0], estimate[1], se[0], se[1])
    return result
