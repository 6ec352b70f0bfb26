"""Every posterior family against every distribution: it either approximates the
prior (finite loss, finite gradients, draws in the prior's support) or refuses at
assignment with an error naming the variable."""

import importlib.util

import pytest
import torch
from torch.distributions import biject_to

import borch
from borch import distributions as dist
from borch import posterior
from borch.posterior.approximations import canonical_support
from tests.distributions.examples import EXAMPLES

#: The families that approximate each variable on its own.
MEAN_FIELD = {
    "Automatic": posterior.Automatic,
    "AsPrior": posterior.AsPrior,
    "Normal": posterior.Normal,
    "ScaledNormal": posterior.ScaledNormal,
    "PointMass": posterior.PointMass,
}
FAMILIES = {
    **MEAN_FIELD,
    "MultivariateNormal": posterior.MultivariateNormal,
    "LowRankMultivariateNormal": lambda: posterior.LowRankMultivariateNormal(rank=2),
}
if importlib.util.find_spec("zuko") is not None:  # the optional extra borch[flows]
    FAMILIES["NormalizingFlow"] = lambda: posterior.NormalizingFlow(transforms=1)
#: The families of continuous approximations in unconstrained space.
UNCONSTRAINED = {
    "Normal",
    "ScaledNormal",
    "MultivariateNormal",
    "LowRankMultivariateNormal",
    "NormalizingFlow",
}


def _has_bijection(support):
    try:
        biject_to(canonical_support(support))
    except NotImplementedError:
        return False
    return True


def expected_refusal(name, family):
    """Which pairs must refuse: families built on an unconstrained space cannot
    serve discrete priors; densities need a bijection onto the support."""
    support = getattr(dist, name)(**EXAMPLES[name]()).distribution.support
    if family in UNCONSTRAINED and name in ("Delta", "PointMass"):
        return "all mass at one value"
    if (family in UNCONSTRAINED or family == "PointMass") and support.is_discrete:
        return "discrete support"
    if family in UNCONSTRAINED and not _has_bijection(support):
        return "no bijective transform"
    return None


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_family_approximates_or_refuses(name, family):
    model = borch.Module(posterior=FAMILIES[family]())
    prior = getattr(dist, name)(**EXAMPLES[name]())
    refusal = expected_refusal(name, family)
    if refusal:
        with pytest.raises(ValueError, match=f"random variable 'x'.*{refusal}"):
            model.x = prior
        return
    model.x = prior
    value = model.x
    prior_dist = model.prior.x.distribution
    assert value.shape == prior_dist.batch_shape + prior_dist.event_shape
    assert prior_dist.support.check(value).all()
    loss = borch.infer.vi_loss(**borch.pq_to_infer(model))
    assert torch.isfinite(loss)
    parameters = [p for p in model.parameters() if p.requires_grad]
    if loss.requires_grad and parameters:
        grads = torch.autograd.grad(loss, parameters, allow_unused=True)
        for grad in grads:
            assert grad is None or torch.isfinite(grad).all()


def test_refusal_message_names_support_and_alternatives():
    model = borch.Module(posterior=posterior.Normal())
    with pytest.raises(ValueError) as error:
        model.k = dist.Poisson(3.0)
    message = str(error.value)
    assert "'k'" in message
    assert "IntegerGreaterThan(lower_bound=0)" in message
    assert "posterior.Automatic()" in message and "RVPair" in message
