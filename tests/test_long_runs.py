"""Long training runs keep memory flat, also when prior arguments change every step.

Priors built from plain numbers share their torch distributions through a bounded
cache; draws remember their logarithm only while the draw is alive. A run whose
prior arguments differ on every step must therefore not grow: after the caches are
full, more steps leave the number of live Python objects and tensors unchanged.
"""

import gc

import torch

import borch
from borch import distributions as dist
from borch import posterior, random_variable
from borch.fastpath import memo

CACHE = 64  # the bound of the shared-distribution cache, small for a quick test


class Drifting(borch.Module):
    """A prior whose location (a plain number) and scale (a tensor) change each step."""

    def forward(self, step, y):
        self.mu = dist.Normal(float(step), 1.0 + step / 1e4)
        self.scale = dist.LogNormal(0.0, torch.tensor(1.0 + step / 1e4))
        self.observe(y=y)
        self.y = dist.Normal(self.mu, self.scale)


def live():
    gc.collect()
    objects = gc.get_objects()
    return len(objects), sum(issubclass(type(o), torch.Tensor) for o in objects)


def test_changing_prior_arguments_keep_memory_flat(monkeypatch):
    monkeypatch.setattr(random_variable, "_STATIC_CACHE_SIZE", CACHE)
    random_variable._STATIC_DISTRIBUTIONS.clear()
    torch.manual_seed(0)
    model = Drifting(posterior=posterior.Normal())
    y = torch.randn(5)
    model(0, y)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)

    def run(steps):
        for step in steps:
            borch.sample(model)
            model(step, y)
            loss = borch.infer.vi_loss(**borch.pq_to_infer(model))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    run(range(1, CACHE + 50))  # fills the cache of number-only priors
    objects, tensors = live()
    logs = len(memo._LOGS)
    run(range(CACHE + 50, CACHE + 350))
    assert len(random_variable._STATIC_DISTRIBUTIONS) <= CACHE
    assert len(memo._LOGS) <= logs
    later_objects, later_tensors = live()
    assert later_tensors <= tensors
    assert later_objects <= objects + 20  # interpreter noise, not 300 steps' worth
