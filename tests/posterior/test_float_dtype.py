"""Approximations take the floating dtype of their prior, also when the prior keeps
its tensors in an inner distribution (LogNormal, Beta, Independent, ...)."""

import pytest
import torch

import borch
from borch import distributions as dist
from borch import posterior


@pytest.mark.parametrize(
    "family", [posterior.Normal, posterior.ScaledNormal, posterior.PointMass]
)
def test_float64_prior_built_on_an_inner_distribution(family):
    model = borch.Module(posterior=family())
    model.x = dist.LogNormal(torch.zeros(2, dtype=torch.float64), 1.0)
    assert {p.dtype for p in model.parameters()} == {torch.float64}
    assert model.x.dtype == torch.float64
