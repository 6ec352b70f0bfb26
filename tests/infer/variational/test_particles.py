"""Multi-sample ELBOs, vectorised and looped.

Agreement checks compare mean gradients over repeated calls; the tolerance is 4
standard errors of the difference of the two means.
"""

import math

import pytest
import torch
import torch.distributions as td

import borch
from borch import distributions as dist
from borch import infer, posterior

X = torch.tensor([1.0, 2.0, 3.0, 4.0])
Y = torch.tensor([1.1, 1.9, 3.2, 3.9])


class Regression(borch.Module):
    def forward(self, x):
        self.slope = dist.Normal(0.0, 3.0)
        self.intercept = dist.Normal(0.0, 3.0)
        self.y = dist.Normal(self.slope * x + self.intercept, 0.5)
        return self.y


def make_regression(family=posterior.Normal):
    model = Regression(posterior=family(log_scale=-1.0))
    model.observe(y=Y)
    return model


def gradients(model, calls, **options):
    parameters = list(model.parameters())
    rows = []
    for _ in range(calls):
        loss = infer.particle_vi_loss(model, X, **options)
        rows.append(
            torch.cat([g.flatten() for g in torch.autograd.grad(loss, parameters)])
        )
    return torch.stack(rows)


def test_vectorised_and_looped_agree_and_variance_drops():
    model = make_regression()
    model(X)  # create the approximations
    vectorised = gradients(model, 300, num_particles=8)
    looped = gradients(model, 300, num_particles=8, vectorize=False)
    single = gradients(model, 300, num_particles=1)
    difference = vectorised.mean(0) - looped.mean(0)
    error = (vectorised.var(0) / 300 + looped.var(0) / 300).sqrt()
    assert (difference.abs() <= 4 * error).all()
    # eight independent draws: an eighth of the variance. With 300 near-Gaussian
    # draws each variance estimate is within about 25% (3 standard errors).
    ratio = single.var(0) / vectorised.var(0)
    assert (ratio > 8 * 0.75 / 1.25).all()
    assert (ratio < 8 * 1.25 / 0.75).all()


def test_draws_are_not_particle_shaped_afterwards():
    model = make_regression()
    infer.particle_vi_loss(model, X, num_particles=5)
    model(X)
    assert model.slope.shape == ()


def test_hierarchy_with_particles():
    class Hierarchical(borch.Module):
        def forward(self):
            self.mu = dist.Normal(0.0, 1.0)
            self.theta = dist.Normal(self.mu * torch.ones(3), 1.0)
            self.y = dist.Normal(self.theta, 0.5)

    model = Hierarchical()  # Automatic: q(theta) is linked to the draw of mu
    model.observe(y=torch.tensor([0.5, 1.0, 1.5]))
    loss = infer.particle_vi_loss(model, num_particles=6)
    assert loss.shape == ()
    loss.backward()


def test_discrete_latent_gradient_is_unbiased_with_particles():
    prior_p, x = 0.3, torch.tensor(1.5)

    class Indicator(borch.Module):
        def forward(self):
            self.z = dist.Bernoulli(torch.tensor([prior_p]))
            self.x = dist.Normal(2.0 * self.z, 1.0)

    model = Indicator()
    model.observe(x=x.expand(1))
    model()
    logit = model.posterior.z.probs.unconstrained
    grads = []
    for _ in range(600):
        loss = infer.particle_vi_loss(model, num_particles=4, batch_dims=1)
        grads.append(torch.autograd.grad(loss, logit)[0])
    grads = torch.stack(grads)
    pi = torch.sigmoid(logit.detach())
    f = [-td.Normal(2.0 * z, 1.0).log_prob(x) for z in (0.0, 1.0)]
    slope = torch.log(pi / prior_p) - torch.log((1 - pi) / (1 - prior_p))
    exact = pi * (1 - pi) * (f[1] - f[0] + slope)
    tolerance = 4 * grads.std(0) / math.sqrt(len(grads))
    assert (grads.mean(0) - exact).abs().le(tolerance).all()


def test_bad_options_and_shapes():
    model = make_regression()
    with pytest.raises(ValueError, match="num_particles must be a positive int"):
        infer.particle_vi_loss(model, X, num_particles=0)
    with pytest.raises(ValueError, match="batch_dims must be"):
        infer.particle_vi_loss(model, X, batch_dims=-1)
    with pytest.raises(TypeError, match="must return a one-element tensor"):
        infer.particle_vi_loss(model, X, div_fn=lambda p, q, v: 0)
    with pytest.raises(RuntimeError, match="raise batch_dims, or use vectorize=False"):
        infer.particle_vi_loss(model, X, batch_dims=0)

    class TooManyDims(borch.Module):
        def forward(self):
            self.w = dist.Normal(torch.zeros(2, 3), 1.0)

    with pytest.raises(ValueError, match="does not fit 4 particles"):
        infer.particle_vi_loss(TooManyDims(), num_particles=4, batch_dims=1)


def user_elbo(p, q, value):
    """A div_fn without a declared elementwise form: called once per particle."""
    return (q.log_prob(value) - p.log_prob(value)).sum()


class Hierarchical(borch.Module):
    def forward(self, x):
        self.spread = dist.LogNormal(0.0, 1.0)
        self.slope = dist.Normal(0.0, self.spread)  # the prior depends on a latent
        self.flip = dist.Bernoulli(0.3)  # discrete: score-function terms per particle
        self.y = dist.Normal(self.slope * x + self.flip, 0.5)


@pytest.mark.parametrize("num_particles", [1, 5])
def test_a_user_div_fn_works_vectorised(num_particles):
    model = Hierarchical()
    model.observe(y=Y)
    model(X)
    parameters = list(model.parameters())
    results = []
    for div_fn in (user_elbo, infer.elbo_loss):
        torch.manual_seed(3)
        loss = infer.particle_vi_loss(
            model, X, num_particles=num_particles, div_fn=div_fn
        )
        results.append((loss, torch.autograd.grad(loss, parameters)))
    (ours, our_grads), (builtin, builtin_grads) = results
    assert torch.allclose(ours, builtin)
    for mine, theirs in zip(our_grads, builtin_grads):
        assert torch.allclose(mine, theirs)


def test_a_registered_elementwise_form_is_used_vectorised():
    calls = []

    def counted(p, q, value):
        calls.append("summed")
        return infer.elbo_loss(p, q, value)

    def counted_elementwise(p, q, value):
        calls.append("elementwise")
        return q.log_prob(value) - p.log_prob(value)

    infer.register_elementwise(counted, counted_elementwise)
    model = make_regression()
    infer.particle_vi_loss(model, X, num_particles=4, div_fn=counted)
    assert calls == ["elementwise", "elementwise"]
