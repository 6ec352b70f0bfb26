"""Draws that remember their noise: same values as torch, same log-densities and the
same gradients of everything computed from them."""

import pytest
import torch
from torch.distributions import Gamma, LogNormal, Normal

from borch.fastpath import memo
from borch.fastpath.draws import draw, log_of, standard_noise
from borch.fastpath.log_density import log_density

FAMILIES = [Normal, LogNormal]
SHAPES = [(), (3,), (2, 3)]


def _arguments(shape):
    generator = torch.Generator().manual_seed(1)
    loc = torch.randn(shape, generator=generator, dtype=torch.float64)
    log_scale = 0.3 * torch.randn(shape, generator=generator, dtype=torch.float64)
    return loc.requires_grad_(), log_scale.requires_grad_()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("shape", SHAPES)
def test_draws_are_torchs_draws_from_the_same_random_numbers(family, shape):
    loc, log_scale = _arguments(shape)
    distribution = family(loc, log_scale.exp(), validate_args=False)
    torch.manual_seed(0)
    ours = draw(distribution)
    torch.manual_seed(0)
    assert torch.equal(ours, distribution.rsample())


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(
    "layout",
    [
        lambda: torch.randn(4, 3).t(),  # transposed
        lambda: torch.randn(3, 1).expand(3, 4),  # broadcast
        lambda: torch.randn(3, 8)[:, ::2],  # strided
    ],
)
def test_draws_match_torch_for_locs_that_are_views(family, layout):
    loc = layout()
    distribution = family(loc, torch.full(loc.shape, 2.0), validate_args=False)
    torch.manual_seed(0)
    ours = draw(distribution)
    torch.manual_seed(0)
    assert torch.equal(ours, distribution.rsample())


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("shape", SHAPES)
def test_an_elbo_term_at_a_draw_matches_torch_in_value_and_gradient(family, shape):
    # log q(x) - log p(x) + a likelihood term, all at the reparameterised draw x:
    # the remembered noise must give torch's value and gradient for every parameter.
    loc, log_scale = _arguments(shape)
    prior = family(torch.tensor(0.5, dtype=torch.float64), 2.0, validate_args=False)
    results = []
    for lean in (True, False):
        q = family(loc, log_scale.exp(), validate_args=False)
        torch.manual_seed(0)
        if lean:
            value = draw(q)
            term = log_density(q, value) - log_density(prior, value)
        else:
            value = q.rsample()
            term = q.log_prob(value) - prior.log_prob(value)
        loss = (term + (value - 1.0).square()).sum()
        results.append((loss, *torch.autograd.grad(loss, [loc, log_scale])))
    for lean, reference in zip(*results):
        assert torch.allclose(lean, reference, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("family", FAMILIES)
def test_noise_is_recalled_only_for_the_unmodified_draw(family):
    distribution = family(torch.zeros(2), torch.ones(2), validate_args=False)
    value = draw(distribution)
    assert standard_noise(distribution, value) is not None
    assert standard_noise(distribution, value.clone()) is None
    other = family(torch.zeros(2), torch.ones(2), validate_args=False)
    assert standard_noise(other, value) is None
    value.mul_(2.0)  # changed in place: the density must be computed from the value
    assert standard_noise(distribution, value) is None
    assert torch.allclose(
        log_density(distribution, value), distribution.log_prob(value)
    )


def test_the_log_of_a_lognormal_draw_is_remembered_while_unchanged():
    value = draw(LogNormal(torch.zeros(3), torch.ones(3)))
    assert torch.allclose(log_of(value), value.log())
    assert log_of(value.clone()) is None
    value.add_(1.0)
    assert log_of(value) is None


def test_draws_carry_nothing_of_borch_and_are_forgotten_when_freed():
    value = draw(LogNormal(torch.zeros(3), torch.ones(3)))
    assert not vars(value)  # nothing a user's torch.save or deepcopy would take along
    entries = len(memo._LOGS)
    del value
    assert len(memo._LOGS) == entries - 1


def test_other_families_draw_as_torch_does():
    gamma = Gamma(torch.tensor(2.0), torch.tensor(1.0))
    torch.manual_seed(0)
    ours = draw(gamma)
    torch.manual_seed(0)
    assert torch.equal(ours, gamma.rsample())
    assert standard_noise(gamma, ours) is None
