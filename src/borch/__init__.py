"""borch: deep universal probabilistic programming on PyTorch.

Models are ordinary PyTorch modules whose attributes can be random variables. Every
random variable assigned to a :class:`borch.Module` becomes the prior of that
attribute; the module's posterior creates an approximating variable for it; inference
(:mod:`borch.infer`) fits the approximations.

Example:
    >>> import torch
    >>> import borch
    >>> from borch import distributions as dist
    >>> torch.manual_seed(1)
    <torch._C.Generator object at ...>
    >>> x = torch.linspace(0, 10, 100)
    >>> y = 2 * x + 4 + torch.randn(100)
    >>> def forward(model, x):
    ...     model.slope = dist.Normal(0.0, 3.0)
    ...     model.intercept = dist.Normal(0.0, 3.0)
    ...     model.noise = dist.LogNormal(1.0, 1.0)
    ...     model.y = dist.Normal(model.slope * x + model.intercept, model.noise)
    ...     return model.y
    >>> model = borch.Module(posterior=borch.posterior.Normal())
    >>> model.observe(y=y)
    >>> optimizer = borch.OptimizersCollection(torch.optim.Adam, lr=0.05)
    >>> for _ in range(500):
    ...     borch.sample(model)
    ...     _ = forward(model, x)
    ...     loss = borch.infer.vi_loss(**borch.pq_to_infer(model))
    ...     loss.backward()
    ...     optimizer.step(model.parameters())
    ...     optimizer.zero_grad()
    >>> round(model.posterior.slope.loc.item())
    2
"""

from borch import distributed, distributions, handlers, infer, metrics, nn, posterior
from borch.compiling import compile_step
from borch.conditioning import condition, simulate_observed
from borch.graph import Graph, Transform
from borch.handlers import mask, plate, scale
from borch.module import Module
from borch.optimizer_collection import OptimizersCollection
from borch.random_variable import RandomVariable, RVPair
from borch.sites import Site, sites
from borch.tensor_like import as_tensor
from borch.traversal import (
    named_random_variables,
    pq_dict,
    pq_to_infer,
    random_variables,
    sample,
    set_posteriors,
)
from borch.validation import validate_args

__version__ = "0.2.0.dev0"

__all__ = [
    "Graph",
    "Module",
    "OptimizersCollection",
    "RVPair",
    "RandomVariable",
    "Site",
    "Transform",
    "as_tensor",
    "compile_step",
    "condition",
    "distributed",
    "distributions",
    "handlers",
    "infer",
    "mask",
    "metrics",
    "named_random_variables",
    "nn",
    "plate",
    "posterior",
    "pq_dict",
    "pq_to_infer",
    "random_variables",
    "sample",
    "scale",
    "set_posteriors",
    "simulate_observed",
    "sites",
    "validate_args",
]
