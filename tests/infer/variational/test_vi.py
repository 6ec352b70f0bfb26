"""VI losses: documented values, estimator choice, and unbiased gradients.

Gradient checks average many single-draw gradient estimates and compare with the
gradient derived by hand; the tolerance is 4 standard errors of that average (the
sample standard deviation of the draws over sqrt(N)), a false-failure rate of about
6e-5 per check.
"""

import math

import pytest
import torch
import torch.distributions as td

import borch
from borch import distributions as dist
from borch import infer
from borch.fastpath.memo import recall

N_DRAWS = 2000


def mean_and_tolerance(samples):
    samples = torch.stack(samples)
    return samples.mean(0), 4 * samples.std(0) / math.sqrt(len(samples))


def test_documented_values():
    cauchy, normal = td.Cauchy(0.0, 1.0), td.Normal(1.0, 1.0)
    assert infer.elbo_loss(cauchy, normal, torch.ones(1)).item() == pytest.approx(
        0.9189, abs=1e-4
    )
    assert infer.analytical_kl_divergence_loss(
        td.Normal(0.0, 1.0), td.Normal(1.0, 1.0), torch.ones(1)
    ).item() == pytest.approx(0.5)
    p_dists = [td.Cauchy(0.0, 1.0) for _ in range(5)]
    q_dists = [td.Normal(0.0, 1.0) for _ in range(5)]
    values = [torch.tensor(float(i)) for i in range(5)]
    assert infer.vi_loss(
        p_dists, q_dists, values, [False] * 5, 1
    ).item() == pytest.approx(-6.4327, abs=1e-4)


def test_vi_loss_is_nll_plus_scaled_divergence():
    p, q = td.Normal(0.0, 1.0), td.Normal(0.5, 0.7)
    likelihood = td.Normal(0.3, 2.0)
    value, data = torch.tensor(0.2), torch.tensor([1.0, -1.0])
    calls = []

    def divergence(p_dist, q_dist, x):
        calls.append(x)
        return infer.elbo_loss(p_dist, q_dist, x)

    loss = infer.vi_loss(
        [p, likelihood], [q, None], [value, data], [False, True], 0.25, divergence
    )
    expected = -likelihood.log_prob(data).sum() + 0.25 * (
        q.log_prob(value) - p.log_prob(value)
    )
    assert torch.allclose(loss, expected)
    assert len(calls) == 1


def test_input_errors():
    with pytest.raises(ValueError, match="same length"):
        infer.vi_loss([td.Normal(0.0, 1.0)], [], [torch.zeros(())], [False])
    with pytest.raises(ValueError, match="no approximating distribution"):
        infer.vi_loss([td.Normal(0.0, 1.0)], [None], [torch.zeros(())], [False])
    with pytest.raises(ValueError, match="at least 2 sub-samples"):
        infer.elbo_rb_score_function([])


def test_analytical_kl_falls_back_without_closed_form():
    p, q, value = td.StudentT(3.0), td.Normal(0.0, 1.0), torch.tensor(0.4)
    assert torch.allclose(
        infer.analytical_kl_divergence_loss(p, q, value), infer.elbo_loss(p, q, value)
    )
    with pytest.raises(ValueError, match="no value to estimate it at"):
        infer.analytical_kl_divergence_loss(p, q)


def test_entropy_and_log_prob_pieces():
    p, q, value = td.Normal(0.0, 2.0), td.Normal(1.0, 0.5), torch.tensor([0.1, 0.2])
    expected = -(p.log_prob(value).sum() + q.entropy())
    assert torch.allclose(infer.elbo_entropy_loss(p, q, value), expected)
    assert torch.allclose(
        infer.negative_log_prob([p], [value]), -p.log_prob(value).sum()
    )
    with pytest.raises(ValueError, match="1 distributions but 2 values"):
        infer.log_prob([p], [value, value])


def normal_parameters():
    return torch.tensor(0.8, requires_grad=True), torch.tensor(-0.3, requires_grad=True)


def exact_normal_kl_gradient(loc, log_scale, prior_scale=1.5):
    loc, log_scale = loc.detach().requires_grad_(), log_scale.detach().requires_grad_()
    kl = td.kl_divergence(td.Normal(loc, log_scale.exp()), td.Normal(0.0, prior_scale))
    return torch.stack(torch.autograd.grad(kl, [loc, log_scale]))


@pytest.mark.parametrize(
    "div_fn",
    [infer.elbo_loss, infer.elbo_path_derivative_loss, infer.elbo_entropy_loss],
)
def test_reparameterised_gradients_are_unbiased(div_fn):
    loc, log_scale = normal_parameters()
    prior = td.Normal(0.0, 1.5)
    grads = []
    for _ in range(N_DRAWS):
        q = td.Normal(loc, log_scale.exp())
        loss = infer.vi_loss([prior], [q], [q.rsample()], [False], div_fn=div_fn)
        grads.append(torch.stack(torch.autograd.grad(loss, [loc, log_scale])))
    mean, tolerance = mean_and_tolerance(grads)
    assert (mean - exact_normal_kl_gradient(loc, log_scale)).abs().le(tolerance).all()


def test_path_derivative_gradient_vanishes_at_the_optimum():
    loc = torch.tensor(0.0, requires_grad=True)
    log_scale = torch.tensor(math.log(1.5), requires_grad=True)
    for _ in range(20):
        q = td.Normal(loc, log_scale.exp())
        loss = infer.elbo_path_derivative_loss(td.Normal(0.0, 1.5), q, q.rsample())
        for grad in torch.autograd.grad(loss, [loc, log_scale]):
            assert abs(grad.item()) < 1e-5


# A discrete latent z ~ Bernoulli(0.3) with one observation x | z ~ Normal(2 z, 1).
PRIOR_P, X = 0.3, torch.tensor(1.5)


def exact_bernoulli_gradient(logit):
    pi = torch.sigmoid(logit)
    f = [-td.Normal(2.0 * z, 1.0).log_prob(X) for z in (0.0, 1.0)]
    kl_slope = torch.log(pi / PRIOR_P) - torch.log((1 - pi) / (1 - PRIOR_P))
    return pi * (1 - pi) * (f[1] - f[0] + kl_slope)


def bernoulli_draw(logit):
    q = td.Bernoulli(logits=logit)
    z = q.sample()
    return {
        "p_dists": [td.Bernoulli(PRIOR_P), td.Normal(2.0 * z, 1.0)],
        "q_dists": [q, None],
        "values": [z, X],
        "observed": [False, True],
    }


def test_score_function_gradient_is_unbiased_for_a_discrete_latent():
    logit = torch.tensor(0.4, requires_grad=True)
    grads = [
        torch.autograd.grad(infer.vi_loss(**bernoulli_draw(logit)), logit)[0]
        for _ in range(N_DRAWS)
    ]
    mean, tolerance = mean_and_tolerance(grads)
    assert abs(mean - exact_bernoulli_gradient(logit.detach())) <= tolerance


def test_score_function_loss_value_is_the_elbo_estimate():
    logit = torch.tensor(0.4, requires_grad=True)
    draw = bernoulli_draw(logit)
    q, _z = draw["q_dists"][0], draw["values"][0]
    expected = -draw["p_dists"][1].log_prob(X) + td.kl_divergence(
        q, td.Bernoulli(PRIOR_P)
    )
    assert torch.allclose(infer.vi_loss(**draw), expected)


def test_rb_score_function_is_unbiased_and_reduces_variance():
    logit = torch.tensor(0.4, requires_grad=True)
    plain, reduced = [], []
    for _ in range(N_DRAWS // 4):
        draws = [bernoulli_draw(logit) for _ in range(4)]
        plain_loss = sum(infer.vi_loss(**draw) for draw in draws) / 4
        plain.append(torch.autograd.grad(plain_loss, logit, retain_graph=True)[0])
        reduced.append(
            torch.autograd.grad(infer.elbo_rb_score_function(draws), logit)[0]
        )
    mean, tolerance = mean_and_tolerance(reduced)
    assert abs(mean - exact_bernoulli_gradient(logit.detach())) <= tolerance
    assert torch.stack(reduced).var() < 0.5 * torch.stack(plain).var()


def test_elbo_score_function_matches_its_definition():
    logit = torch.tensor(-0.2, requires_grad=True)
    q, p = td.Bernoulli(logits=logit), td.Bernoulli(PRIOR_P)
    z = torch.tensor(1.0)
    loss = infer.elbo_score_function([p], [q], [z], regularization=torch.tensor(2.0))
    cost = 2.0 + q.log_prob(z) - p.log_prob(z)
    assert torch.allclose(loss, cost)
    (grad,) = torch.autograd.grad(loss, logit)
    score = torch.autograd.grad(q.log_prob(z), logit)[0]
    assert torch.allclose(grad, score * (1 + cost.detach()))


def test_mixed_reparameterised_and_discrete_latents_are_unbiased():
    # z ~ Bernoulli(0.3) (score function), w ~ Normal(0, 1) (reparameterised),
    # x | z, w ~ Normal(2 z + w, 1); the gradient for the logit of q(z) must see the
    # likelihood through z, and the one for q(w)'s loc through w.
    logit = torch.tensor(0.4, requires_grad=True)
    loc = torch.tensor(0.2, requires_grad=True)
    grads = []
    for _ in range(N_DRAWS):
        qz, qw = td.Bernoulli(logits=logit), td.Normal(loc, 0.5)
        z, w = qz.sample(), qw.rsample()
        loss = infer.vi_loss(
            [td.Bernoulli(PRIOR_P), td.Normal(0.0, 1.0), td.Normal(2 * z + w, 1.0)],
            [qz, qw, None],
            [z, w, X],
            [False, False, True],
        )
        grads.append(torch.stack(torch.autograd.grad(loss, [logit, loc])))
    mean, tolerance = mean_and_tolerance(grads)

    # exact: E over z of the Gaussian terms, which are analytic in loc
    def objective(logit, loc):
        pi = torch.sigmoid(logit)
        total = 0.0
        for z, weight in ((0.0, 1 - pi), (1.0, pi)):
            # E_w[-log N(x; 2z + w, 1)] with w ~ N(loc, 0.5)
            expected_nll = 0.5 * math.log(2 * math.pi) + 0.5 * (
                (X - 2 * z - loc) ** 2 + 0.25
            )
            total = total + weight * expected_nll
        kl_z = td.kl_divergence(td.Bernoulli(logits=logit), td.Bernoulli(PRIOR_P))
        kl_w = td.kl_divergence(td.Normal(loc, 0.5), td.Normal(0.0, 1.0))
        return total + kl_z + kl_w

    exact_logit, exact_loc = (
        logit.detach().requires_grad_(),
        loc.detach().requires_grad_(),
    )
    exact = torch.stack(
        torch.autograd.grad(objective(exact_logit, exact_loc), [exact_logit, exact_loc])
    )
    assert (mean - exact).abs().le(tolerance).all()


def test_detach_distribution_cuts_gradients():
    loc = torch.tensor(0.0, requires_grad=True)
    q = td.TransformedDistribution(td.Normal(loc, 1.0), [td.transforms.ExpTransform()])
    detached = infer.detach_distribution(q)
    assert not detached.log_prob(torch.tensor(1.0)).requires_grad
    assert q.log_prob(torch.tensor(1.0)).requires_grad


@pytest.mark.parametrize(
    ("q_shape", "p_shape"),
    [((3, 4), ()), ((3, 4), (3, 4)), ((5,), (1,)), ((), ()), ((2, 1), (3,))],
)
def test_normal_kl_fast_path_matches_torch(q_shape, p_shape):
    generator = torch.Generator().manual_seed(0)
    q_loc = torch.randn(q_shape, generator=generator, dtype=torch.float64)
    q_log_scale = torch.randn(q_shape, generator=generator, dtype=torch.float64)
    p_loc = torch.randn(p_shape, generator=generator, dtype=torch.float64)
    p_scale = torch.rand(p_shape, generator=generator, dtype=torch.float64) + 0.5
    q_loc.requires_grad_()
    q_log_scale.requires_grad_()
    results = []
    for fn in (
        lambda q, p: infer.analytical_kl_divergence_loss(p, q),
        lambda q, p: torch.distributions.kl_divergence(q, p).sum(),
    ):
        q = torch.distributions.Normal(q_loc, q_log_scale.exp())
        value = fn(q, torch.distributions.Normal(p_loc, p_scale))
        results.append((value, *torch.autograd.grad(value, [q_loc, q_log_scale])))
    for fast, reference in zip(*results):
        assert torch.allclose(fast, reference, rtol=1e-12, atol=1e-12)


def test_normal_kl_fast_path_with_constant_priors_that_change_in_place():
    q = torch.distributions.Normal(torch.randn(4), torch.rand(4) + 0.1)
    for loc in (0.0, 1.5):
        p = torch.distributions.Normal(torch.tensor(loc), torch.tensor(2.0))
        for _ in range(2):  # the second call uses the remembered constants
            expected = torch.distributions.kl_divergence(q, p).sum()
            assert torch.allclose(infer.analytical_kl_divergence_loss(p, q), expected)
        p.loc.add_(0.5)
        p.scale.mul_(3.0)
        expected = torch.distributions.kl_divergence(q, p).sum()
        assert torch.allclose(infer.analytical_kl_divergence_loss(p, q), expected)


def test_posterior_normals_use_their_log_scale_exactly():
    """A Normal posterior's scale is exp(log_scale): the KL and the ELBO's log-density
    use log_scale itself; values and gradients equal torch's formulas."""
    model = borch.Module(posterior=borch.posterior.Normal(log_scale=-1.0))
    model.w = dist.Normal(torch.zeros(3), 2.0)
    q = model.posterior.w.distribution
    assert recall(q).log_scale is model.posterior.w.scale.exp_argument()
    value = model.posterior.w.tensor.detach()
    for loss_fn, reference_fn in [
        (
            lambda: infer.analytical_kl_divergence_loss(
                model.prior.w, model.posterior.w
            ),
            lambda p, q: torch.distributions.kl_divergence(q, p).sum(),
        ),
        (
            lambda: infer.elbo_loss(model.prior.w, model.posterior.w, value),
            lambda p, q: (q.log_prob(value) - p.log_prob(value)).sum(),
        ),
    ]:
        parameters = list(model.posterior.parameters())
        fast = loss_fn()
        fast_grads = torch.autograd.grad(fast, parameters, retain_graph=True)
        reference = reference_fn(
            model.prior.w.distribution, model.posterior.w.distribution
        )
        reference_grads = torch.autograd.grad(reference, parameters, retain_graph=True)
        assert torch.allclose(fast, reference)
        for a, b in zip(fast_grads, reference_grads):
            assert torch.allclose(a, b)
