"""Laplace over a network's point masses: the Gauss-Newton curvature of any
likelihood against an independent torch.func computation, diag and KFAC against the
dense matrix, the linearised predictive, the evidence, the refusal."""

import math

import pytest
import torch
import torch.nn.functional as F

import borch
from borch import distributions as dist
from borch import nn as bnn
from borch.infer import laplace_posterior
from borch.infer.laplace.likelihood import fisher, output_parameters
from tests.infer.laplace.test_laplace import fit_map


def categorical(out):
    return dist.Categorical(logits=out)


def bernoulli(out):
    return dist.Bernoulli(logits=out[:, 0])


def poisson(out):
    return dist.Poisson(F.softplus(out[:, 0]))


def heteroscedastic(out):
    return dist.Normal(out[:, 0], F.softplus(out[:, 1]))


#: head -> the torch arguments of the likelihood from the network's output, their
#: Fisher information in closed form, and a target sampler
HEADS = {
    "categorical": (
        categorical,
        lambda out: out.log_softmax(-1),
        lambda eta: (
            torch.diag_embed(eta.exp()) - eta.exp()[:, :, None] * eta.exp()[:, None]
        ),
        lambda g, n: torch.randint(0, 3, (n,), generator=g),
    ),
    "bernoulli": (
        bernoulli,
        lambda out: out[:, :1],
        lambda eta: (torch.sigmoid(eta) * torch.sigmoid(-eta))[:, :, None],
        lambda g, n: torch.randint(0, 2, (n,), generator=g).float(),
    ),
    "poisson": (
        poisson,
        lambda out: F.softplus(out[:, :1]),
        lambda eta: (1 / eta)[:, :, None],
        lambda g, n: torch.randint(0, 5, (n,), generator=g).float(),
    ),
    "heteroscedastic normal": (
        heteroscedastic,
        lambda out: torch.stack([out[:, 0], F.softplus(out[:, 1])], 1),
        lambda eta: torch.diag_embed(
            torch.stack([1 / eta[:, 1] ** 2, 2 / eta[:, 1] ** 2], 1)
        ),
        lambda g, n: torch.randn(n, generator=g),
    ),
}


class Network(bnn.Module):
    def __init__(self, head, inputs=4, hidden=5, outputs=3):
        super().__init__()
        self.head = head
        self.net = bnn.Sequential(
            bnn.Linear(inputs, hidden), bnn.Tanh(), bnn.Linear(hidden, outputs)
        )

    def forward(self, x):
        out = self.net(x)
        self.y = self.head(out)
        return out


def network(head_name, count=7, seed=0):
    torch.manual_seed(seed)
    head, _, _, targets = HEADS[head_name]
    model = Network(head)
    model.apply(borch.set_posteriors(borch.posterior.PointMass))
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(count, 4, generator=generator)
    model.observe(y=targets(generator, count))

    def closure():
        borch.sample(model)
        model(x)
        return borch.infer.vi_loss(**borch.pq_to_infer(model))

    return model, x, closure


def reference_ggn(approx, head_name, x):
    """sum_b J_b^T F_b J_b by torch.func.jacrev of a plain-torch copy of the network
    and the closed-form Fisher."""
    _, arguments, fisher_of, _ = HEADS[head_name]
    mode = approx.mode()
    names = approx.names
    flat = torch.cat([mode[n].reshape(-1) for n in names]).double()
    shapes = [mode[n].shape for n in names]

    def eta(vector):
        parts = dict(zip(names, vector.split([math.prod(s) for s in shapes])))
        values = {n: parts[n].reshape(s) for n, s in zip(names, shapes)}
        hidden = torch.tanh(
            x.double() @ values["net.0.weight"].T + values["net.0.bias"]
        )
        return arguments(hidden @ values["net.2.weight"].T + values["net.2.bias"])

    jacobian = torch.func.jacrev(eta)(flat)  # (B, K, P)
    information = fisher_of(eta(flat))
    return torch.einsum("bkp,bkl,blq->pq", jacobian, information, jacobian)


@pytest.mark.parametrize("head_name", list(HEADS))
def test_full_is_the_gauss_newton_matrix_of_the_likelihood(head_name):
    model, x, closure = network(head_name)
    approx = laplace_posterior(model, closure, prior_precision=1.0)
    expected = reference_ggn(approx, head_name, x)
    torch.testing.assert_close(
        approx.blocks[0].curvature, expected, rtol=1e-4, atol=1e-6
    )


def dense_diagonal(full):
    return full.blocks[0].curvature.diagonal()


def diagonal_of(block):
    weights = block.curvature[:, : block.in_features].reshape(-1)
    return torch.cat([weights, block.curvature[:, block.in_features]])


@pytest.mark.parametrize("head_name", list(HEADS))
def test_diag_is_the_diagonal_of_the_dense_matrix(head_name):
    model, _, closure = network(head_name)
    full = laplace_posterior(model, closure, prior_precision=1.0)
    diag = laplace_posterior(model, closure, structure="diag", prior_precision=1.0)
    mine = torch.cat([diagonal_of(block) for block in diag.blocks])
    torch.testing.assert_close(mine, dense_diagonal(full), rtol=1e-5, atol=1e-8)


def augmented_order(block):
    """Index into the dense (weight row-major, then bias) order of each element of
    the (out, in + 1) layout KFAC works in."""
    out, inputs = block.out_features, block.in_features
    index = torch.empty(out, inputs + 1, dtype=torch.long)
    index[:, :inputs] = torch.arange(out * inputs).reshape(out, inputs)
    index[:, inputs] = out * inputs + torch.arange(out)
    return index.reshape(-1)


@pytest.mark.parametrize("head_name", list(HEADS))
def test_kfac_is_exact_for_one_sample(head_name):
    model, _, closure = network(head_name, count=1)
    full = laplace_posterior(model, closure, prior_precision=1.0)
    kfac = laplace_posterior(model, closure, structure="kfac", prior_precision=1.0)
    start = 0
    for block in kfac.blocks:
        dense = full.blocks[0].curvature[
            start : start + block.size, start : start + block.size
        ]
        order = augmented_order(block)
        kron = torch.kron(block.gradient_factor, block.input_factor) / block.rows
        torch.testing.assert_close(kron, dense[order][:, order], rtol=1e-5, atol=1e-8)
        start += block.size


class Scaled(bnn.Module):
    """A linear layer and a learned noise scale outside it."""

    def __init__(self):
        super().__init__()
        self.layer = bnn.Linear(3, 1)

    def forward(self, x):
        self.sigma = dist.HalfNormal(1.0)
        self.y = dist.Normal(self.layer(x).squeeze(-1), self.sigma)


def scaled_fit():
    torch.manual_seed(0)
    model = Scaled()
    model.apply(borch.set_posteriors(borch.posterior.PointMass))
    x = torch.randn(20, 3)
    model.observe(y=torch.randn(20))
    return model, fit_map(model, (x,), steps=1)


def test_a_latent_outside_linear_layers_gets_a_dense_block():
    """A learned noise scale: a dense block of its own, equal to the full matrix's
    entry (the full matrix is exact for it too)."""
    model, closure = scaled_fit()
    full = laplace_posterior(model, closure, prior_precision=1.0)
    diag = laplace_posterior(model, closure, structure="diag", prior_precision=1.0)
    assert [type(b).__name__ for b in diag.blocks] == [
        "DiagonalLinearBlock",
        "DenseBlock",
    ]
    assert diag.blocks[1].names == ["sigma"]
    assert full.names[-1] == "sigma"
    torch.testing.assert_close(
        diag.blocks[1].curvature[0, 0], full.blocks[0].curvature[-1, -1]
    )
    # for log(sigma) the Fisher of a Normal's scale is 2 / sigma^2 * sigma^2 per point
    # (float32 model: 1e-6 relative)
    torch.testing.assert_close(
        diag.blocks[1].curvature[0, 0],
        torch.tensor(2.0 * 20, dtype=torch.float64),
        rtol=1e-6,
        atol=0,
    )


@pytest.mark.parametrize(
    ("head_name", "arguments", "expected"),
    [
        ("poisson", {"rate": 2.0}, [[0.5]]),
        ("heteroscedastic normal", {"loc": 0.3, "scale": 2.0}, [[0.25, 0], [0, 0.5]]),
        ("bernoulli", {"logits": 0.0}, [[0.25]]),
    ],
)
def test_fisher_of_one_element_is_the_closed_form(head_name, arguments, expected):
    family = {"poisson": dist.Poisson, "bernoulli": dist.Bernoulli}.get(
        head_name, dist.Normal
    )

    class One(borch.Module):
        def forward(self):
            self.y = family(
                **{
                    k: torch.tensor([v], requires_grad=True)
                    for k, v in arguments.items()
                }
            )

    model = One()
    model.observe(y=torch.ones(1))
    model()
    (site,) = borch.sites(model)
    torch.testing.assert_close(
        fisher(output_parameters(site), site.value)[0],
        torch.tensor(expected, dtype=torch.float64),
    )


def test_subset_last_layer_and_by_name():
    model, _, closure = network("categorical")
    last = laplace_posterior(model, closure, subset="last_layer", prior_precision=1.0)
    assert last.names == ["net.2.weight", "net.2.bias"]
    full = laplace_posterior(model, closure, prior_precision=1.0)
    torch.testing.assert_close(
        last.blocks[0].curvature, full.blocks[0].curvature[-18:, -18:]
    )
    named = laplace_posterior(model, closure, subset=["net.0"], prior_precision=1.0)
    assert named.names == ["net.0.weight", "net.0.bias"]
    with pytest.raises(ValueError, match="'net.5' is no latent variable"):
        laplace_posterior(model, closure, subset=["net.5"])
    draws = last.samples(3)
    assert set(draws) == {"net.2.weight", "net.2.bias"}


def test_full_refuses_at_once_past_the_memory_limit():
    class Wide(bnn.Module):
        def __init__(self):
            super().__init__()
            self.layer = bnn.Linear(1000, 30)

        def forward(self, x):
            self.y = dist.Categorical(logits=self.layer(x))

    model = Wide()
    model.apply(borch.set_posteriors(borch.posterior.PointMass))
    x = torch.randn(2, 1000)
    model.observe(y=torch.zeros(2, dtype=torch.long))

    def closure():
        borch.sample(model)
        model(x)

    with pytest.raises(
        MemoryError, match=r"30,030 parameters.*GiB.*'diag', 'kfac' or 'lowrank'"
    ):
        laplace_posterior(model, closure)
    for structure in ("diag", "kfac", "lowrank"):
        approx = laplace_posterior(
            model, closure, structure=structure, prior_precision=1.0
        )
        assert approx.samples(2)["layer.weight"].shape == (2, 30, 1000)


def test_bad_structure_and_prior():
    model, _, closure = network("categorical")
    with pytest.raises(ValueError, match="structure must be one of"):
        laplace_posterior(model, closure, structure="banded")
    with pytest.raises(ValueError, match="positive"):
        laplace_posterior(model, closure, prior_precision=-1.0)
    with pytest.raises(ValueError, match="needs validation"):
        laplace_posterior(model, closure, prior_precision="validation")
    with pytest.raises(ValueError, match="one number or one per block"):
        laplace_posterior(model, closure, structure="diag", prior_precision=[1.0] * 3)


class Linear(bnn.Module):
    """y ~ Normal(x w + b, 0.5): Gaussian, linear in its latents."""

    def __init__(self):
        super().__init__()
        self.layer = bnn.Linear(2, 1)

    def forward(self, x):
        self.y = dist.Normal(self.layer(x).squeeze(-1), 0.5)
        return self.y


@pytest.mark.parametrize("structure", ["full", "diag", "kfac", "lowrank"])
def test_linearised_predictive_matches_monte_carlo_on_a_linear_model(structure):
    """For a model linear in its latents the GLM predictive is exact: the variance
    of the mean under 4000 posterior draws (borch.infer.predictive) matches the
    linearised one within 5 standard errors (sd of a variance estimate:
    var * sqrt(2 / n))."""
    torch.manual_seed(0)
    model = Linear()
    model.apply(borch.set_posteriors(borch.posterior.PointMass))
    x = torch.randn(30, 2)
    model.observe(y=x @ torch.tensor([1.0, -1.0]) + 0.5 * torch.randn(30))
    closure = fit_map(model, (x,), steps=1)
    approx = laplace_posterior(model, closure, structure=structure, prior_precision=1.0)
    new = torch.randn(5, 2)
    (output,) = approx.linearise(new).values()
    variance = output.covariance(approx._block_priors())[:, 0, 0]
    count = 4000
    draws = borch.infer.predictive(
        model,
        new,
        posterior_samples=approx.posterior_samples(
            count, generator=torch.Generator().manual_seed(1)
        ),
        num_samples=None,
        return_sites=["_return"],
    )
    model(new)
    locs = torch.stack(
        [
            new @ w.reshape(-1) + b
            for w, b in zip(
                *approx.samples(count, torch.Generator().manual_seed(1)).values()
            )
        ]
    )
    assert draws["_return"].shape[0] == count
    empirical = locs.double().var(0)
    assert bool(
        ((empirical - variance).abs() < 5 * variance * (2 / count) ** 0.5).all()
    )
    distribution = approx.predictive(new, num_samples=7)["y"]
    assert distribution.loc.shape == (7, 5)


def test_marginal_likelihood_of_conjugate_linear_regression_is_exact():
    """Bayesian linear regression: y ~ N(0, noise^2 I + X X^T / alpha) in closed
    form; Laplace at the MAP is exact, with the model's own prior and with the same
    prior given as a precision."""
    from tests.infer.models import linear_regression

    model, (x,), _, _ = linear_regression(noise=0.5, prior_sd=2.0)
    model.apply(borch.set_posteriors(borch.posterior.PointMass))
    closure = fit_map(model, (x,))
    y = model.observed.y.double()
    x = x.double()
    covariance = 0.25 * torch.eye(len(y), dtype=torch.float64) + 4.0 * x @ x.T
    exact = torch.distributions.MultivariateNormal(
        torch.zeros(len(y), dtype=torch.float64), covariance
    ).log_prob(y)
    own = laplace_posterior(model, closure)
    torch.testing.assert_close(
        own.log_marginal_likelihood(), exact, rtol=1e-5, atol=1e-4
    )
    given = laplace_posterior(model, closure, prior_precision=0.25)
    torch.testing.assert_close(
        given.log_marginal_likelihood(), exact, rtol=1e-5, atol=1e-4
    )


def test_prior_precision_by_marginal_likelihood_is_its_maximum():
    model, _, closure = network("categorical", count=20)
    approx = laplace_posterior(model, closure, structure="kfac")
    tuned = approx.optimize_prior_precision("marginal_likelihood")
    best = tuned[0]
    assert all(t == best for t in tuned)
    around = [approx.log_marginal_likelihood(best * f).item() for f in (0.9, 1, 1.1)]
    assert around[1] >= max(around[0], around[2])
    layered = approx.optimize_prior_precision("marginal_likelihood", per_layer=True)
    assert len(layered) == 2
    assert approx.log_marginal_likelihood().item() >= around[1] - 1e-6


def test_prior_precision_by_validation_picks_from_the_grid():
    from borch.infer.laplace.posterior import VALIDATION_GRID

    model, x, closure = network("categorical", count=20)
    targets = model.observed.y
    approx = laplace_posterior(
        model,
        closure,
        structure="diag",
        prior_precision="validation",
        validation=((x,), {"y": targets}),
    )
    chosen = approx.prior_precision
    assert all(c == chosen[0] for c in chosen)
    assert chosen[0] in VALIDATION_GRID


def test_probit_needs_logits():
    model, x, closure = network("heteroscedastic normal")
    approx = laplace_posterior(model, closure, structure="kfac", prior_precision=1.0)
    with pytest.raises(ValueError, match="probit.*Normal"):
        approx.predictive(x, link="probit")
    model, x, closure = network("categorical")
    approx = laplace_posterior(model, closure, structure="kfac", prior_precision=1.0)
    probs = approx.predictive(x, link="probit")["y"].probs
    torch.testing.assert_close(probs.sum(-1), torch.ones(len(x)))


@pytest.mark.parametrize("structure", ["full", "diag", "kfac", "lowrank"])
def test_the_models_own_prior_is_the_same_as_its_precision(structure):
    """borch.nn's default Normal(0, 1) priors are a Gaussian prior of precision 1:
    the evidence and the draws' spread agree (float32 log densities: 1e-5)."""
    model, _, closure = network("categorical")
    own = laplace_posterior(model, closure, structure=structure)
    given = laplace_posterior(model, closure, structure=structure, prior_precision=1.0)
    torch.testing.assert_close(
        own.log_marginal_likelihood(),
        given.log_marginal_likelihood(),
        rtol=1e-5,
        atol=0,
    )
    if structure == "full":  # one distribution, draws through other eigenvectors
        torch.testing.assert_close(own.laplace.covariance, given.laplace.covariance)
        return
    draws = [
        a.samples(3, torch.Generator().manual_seed(0))["net.0.weight"]
        for a in (own, given)
    ]
    torch.testing.assert_close(draws[0], draws[1])


def test_a_likelihood_the_latents_do_not_reach_adds_nothing():
    class Two(bnn.Module):
        def __init__(self):
            super().__init__()
            self.layer = bnn.Linear(2, 1)

        def forward(self, x):
            self.y = dist.Normal(self.layer(x).squeeze(-1), 0.5)
            self.z = dist.Normal(torch.zeros(len(x)), 1.0)

    torch.manual_seed(0)
    model = Two()
    model.apply(borch.set_posteriors(borch.posterior.PointMass))
    x = torch.randn(6, 2)
    model.observe(y=torch.randn(6), z=torch.randn(6))

    def closure():
        borch.sample(model)
        model(x)

    approx = laplace_posterior(model, closure, structure="kfac", prior_precision=1.0)
    reference = Linear()
    reference.layer = model.layer
    reference.observe(y=model.observed.y)

    def reference_closure():
        borch.sample(reference)
        reference(x)

    alone = laplace_posterior(
        reference, reference_closure, structure="kfac", prior_precision=1.0
    )
    torch.testing.assert_close(
        approx.blocks[0].gradient_factor, alone.blocks[0].gradient_factor
    )
    predictive = approx.predictive(x, num_samples=4)
    assert predictive["z"].loc.shape == (6,)
    assert predictive["y"].loc.shape == (4, 6)
