"""KL divergences over random variables."""

import pytest
import torch
import torch.distributions as td

from borch import distributions as dist


def test_kl_divergence_accepts_random_variables_and_torch_distributions():
    p = dist.Normal(torch.tensor([0.0, 1.0]), 1.0)
    q = td.Normal(torch.tensor([1.0, 1.0]), 2.0)
    expected = td.kl_divergence(p.distribution, q)
    assert torch.allclose(dist.kl_divergence(p, q), expected)
    assert torch.allclose(dist.kl_divergence(q, p), td.kl_divergence(q, p.distribution))


def test_kl_exists_follows_torch_registry():
    assert dist.kl_exists(dist.Gamma(1.0, 1.0), td.Gamma(2.0, 1.0))
    assert not dist.kl_exists(dist.Normal(0.0, 1.0), dist.StudentT(3.0))


def test_kl_rejects_other_objects():
    with pytest.raises(TypeError, match="random variable or a torch distribution"):
        dist.kl_divergence(torch.zeros(1), dist.Normal(0.0, 1.0))
