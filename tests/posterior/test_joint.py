"""The joint families' structure and their ELBO, checked against a hand-computed
one: the joint log-density of the draw in unconstrained space, minus the
log-det-Jacobian of the constrained variables, minus the model's log joint."""

import contextlib

import pytest
import torch

import borch
from borch import distributions as dist
from borch import infer, posterior
from borch.infer.variational.terms import detach_distribution
from borch.random_variable import particles

FAMILIES = {
    "MultivariateNormal": posterior.MultivariateNormal,
    "LowRankMultivariateNormal": lambda: posterior.LowRankMultivariateNormal(rank=2),
}
#: The families whose own ``log_prob`` holds their parameters fixed by default.
PATH_DERIVATIVE = {
    "MultivariateNormal",
    "LowRankMultivariateNormal",
    "LowRankMultivariateNormal(low-rank identities)",
}
FULL_GRADIENT = {
    "MultivariateNormal(path_derivative=False)": lambda: posterior.MultivariateNormal(
        path_derivative=False
    ),
    "LowRankMultivariateNormal(path_derivative=False)": lambda: (
        posterior.LowRankMultivariateNormal(rank=2, path_derivative=False)
    ),
}
#: The low-rank family through its low-rank identities rather than the Cholesky
#: factor of the covariance, which it uses for a joint this small.
FAMILIES["LowRankMultivariateNormal(low-rank identities)"] = lambda: _low_rank_only(
    posterior.LowRankMultivariateNormal(rank=2)
)
FULL_GRADIENT["LowRankMultivariateNormal(low-rank identities, full gradient)"] = (
    lambda: _low_rank_only(
        posterior.LowRankMultivariateNormal(rank=2, path_derivative=False)
    )
)


def _low_rank_only(family):
    family.dense_limit = 0
    return family


X = torch.tensor([[1.0, 0.5], [0.2, -1.0], [-0.7, 0.3], [1.5, 1.2]])
Y = torch.tensor([1.2, -0.8, 0.1, 2.0])


class Regression(borch.Module):
    """Weights and a constrained noise scale; broadcasts over a leading particle
    dimension."""

    def forward(self, x):
        self.w = dist.Normal(torch.zeros(2), 1.0)
        self.sigma = dist.HalfCauchy(2.5)
        self.y = dist.Normal((x * self.w.unsqueeze(-2)).sum(-1), self.sigma)
        return self.y


def model_for(family):
    torch.manual_seed(0)
    model = Regression(posterior={**FAMILIES, **FULL_GRADIENT}[family]())
    model.observe(y=Y)
    model(X)
    with torch.no_grad():  # away from the symmetric start
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    return model


def hand_loss(model, joint):
    """``log q(u) - log|d sigma / du| - log p(y, w, sigma)`` per particle."""
    w, sigma = model.w, model.sigma.reshape(model.w.shape[:-1])
    u = torch.cat([w, sigma.log().unsqueeze(-1)], dim=-1)
    log_q = joint.log_prob(u) - sigma.log()
    log_p = (
        torch.distributions.Normal(0.0, 1.0).log_prob(w).sum(-1)
        + torch.distributions.HalfCauchy(2.5).log_prob(sigma)
        + torch.distributions.Normal((X * w.unsqueeze(-2)).sum(-1), sigma.unsqueeze(-1))
        .log_prob(Y)
        .sum(-1)
    )
    return log_q - log_p


def gradients(model, loss):
    parameters = list(model.parameters())
    return torch.autograd.grad(loss, parameters, retain_graph=True)


@pytest.fixture(autouse=True)
def float64():
    """Every test here compares two computations of the same numbers: in float32
    their roundoff differs by up to 1e-4 of the gradients' size."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(default)


@pytest.mark.parametrize("detached", [False, True], ids=["elbo", "path-derivative"])
@pytest.mark.parametrize("family", [*FAMILIES, *FULL_GRADIENT])
def test_vi_loss_is_the_joint_elbo_in_value_and_gradient(family, detached):
    """With ``elbo_path_derivative_loss`` (or a family whose ``log_prob`` does so
    itself) the joint's parameters are held fixed in ``log q``: its gradient
    reaches them through the draw only."""
    model = model_for(family)
    borch.sample(model)
    model(X)
    div_fn = infer.elbo_path_derivative_loss if detached else infer.elbo_loss
    loss = infer.vi_loss(**borch.pq_to_infer(model), div_fn=div_fn)
    joint = model.posterior.unconstrained_distribution()
    held_fixed = detached or family in PATH_DERIVATIVE
    expected = hand_loss(model, detach_distribution(joint) if held_fixed else joint)
    assert torch.allclose(loss, expected, rtol=1e-10, atol=1e-10)
    for actual, wanted in zip(gradients(model, loss), gradients(model, expected)):
        assert torch.allclose(actual, wanted, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("family", [*FAMILIES, *FULL_GRADIENT])
def test_log_q_of_fixed_values_keeps_the_parameters_gradient(family):
    """A score-function estimator differentiates ``log q`` of detached draws with
    respect to the parameters: the path-derivative default must not hold them
    fixed there, or the estimator's gradient would silently vanish."""
    model = model_for(family)
    borch.sample(model)
    model(X)
    sites = borch.pq_to_infer(model)
    log_q = sum(
        q.log_prob(value.detach()).sum()
        for q, value, observed in zip(
            sites["q_dists"], sites["values"], sites["observed"]
        )
        if not observed
    )
    w, sigma = model.w.detach(), model.sigma.detach().reshape(())
    u = torch.cat([w, sigma.log().reshape(1)])
    expected = model.posterior.unconstrained_distribution().log_prob(u) - sigma.log()
    assert torch.allclose(log_q, expected, rtol=1e-10, atol=1e-10)
    actual, wanted = gradients(model, log_q), gradients(model, expected)
    assert any(gradient.abs().sum() > 0 for gradient in actual)
    for a, b in zip(actual, wanted):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("family", FAMILIES)
def test_vectorised_particles_give_the_joint_elbo_of_each_particle(family):
    model = model_for(family)
    torch.manual_seed(5)
    loss = infer.particle_vi_loss(model, X, num_particles=6)
    torch.manual_seed(5)
    with particles(6, 1):
        borch.sample(model)
        model(X)
        assert model.w.shape == (6, 2) and model.sigma.shape == (6, 1)
        expected = hand_loss(model, model.posterior.unconstrained_distribution())
    assert torch.allclose(loss, expected.mean(), atol=1e-4)
    borch.sample(model)


@pytest.mark.parametrize("family", FAMILIES)
def test_entropies_add_up_to_the_joint_entropy(family):
    model = borch.Module(posterior=FAMILIES[family]())
    model.a = dist.Normal(torch.zeros(3), 1.0)
    model.b = dist.Normal(0.0, 1.0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    total = sum(model.posterior.approximation(n).entropy().sum() for n in "ab")
    expected = model.posterior.unconstrained_distribution().entropy()
    assert torch.allclose(total, expected, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_draws_follow_the_joint(family):
    model = borch.Module(posterior=FAMILIES[family]())
    model.a = dist.Normal(torch.zeros(2), 1.0)
    model.b = dist.LogNormal(0.0, 1.0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.5 * torch.randn_like(parameter))
    joint = model.posterior.unconstrained_distribution()
    with torch.no_grad(), particles(4000, 1):
        borch.sample(model)
        draws = torch.cat([model.a, model.b.log().reshape(4000, 1)], dim=1)
    borch.sample(model)
    sd = joint.variance.sqrt()
    # 4000 draws: the mean is within 5 standard errors, the covariance entries
    # (standard error below sd_i sd_j sqrt(2 / 4000)) within 0.15 sd_i sd_j.
    assert ((draws.mean(0) - joint.mean).abs() / sd).max() < 5 / 4000**0.5
    scaled = (torch.cov(draws.T) - joint.covariance_matrix) / sd[:, None] / sd
    assert scaled.abs().max() < 0.15


def test_variables_read_before_the_next_is_assigned_and_added_later():
    """The chain grows as variables appear: a later one conditions on the earlier
    ones, which keep their parameters; the ELBO stays the joint's."""
    model = borch.Module(posterior=posterior.MultivariateNormal())
    model.a = dist.Normal(torch.zeros(2), 1.0)
    first_draw = model.a  # drawn before b exists
    model.b = dist.Normal(model.a.sum(), 1.0)
    assert torch.equal(model.a, first_draw)  # the same run: b extends the draw
    numbers_a = model.posterior.a.numbers.detach().clone()
    cross_b = model.posterior.block_view("b")["cross"]
    assert cross_b.shape == (1, 2)
    assert not cross_b.any()  # starts uncorrelated
    model.c = dist.Gamma(torch.ones(3), 1.0)  # appears later in training
    assert model.posterior.joint_names() == ["a", "b", "c"]
    assert model.posterior.block_view("c")["cross"].shape == (3, 3)
    assert torch.equal(model.posterior.a.numbers, numbers_a)
    assert model.posterior.dimension() == 6
    assert bool((model.c > 0).all())


def test_a_submodule_sharing_the_posterior_joins_the_joint():
    shared = posterior.MultivariateNormal()

    class Inner(borch.Module):
        def forward(self):
            self.scale = dist.HalfNormal(1.0)
            return self.scale

    class Outer(borch.Module):
        def __init__(self):
            super().__init__(posterior=shared)
            self.inner = Inner(posterior=shared)

        def forward(self):
            self.loc = dist.Normal(0.0, 1.0)
            self.x = dist.Normal(self.loc, self.inner())
            return self.x

    model = Outer()
    model.observe(x=torch.tensor(0.5))
    model()
    assert shared.joint_names() == ["loc", "scale"]
    names = [site.name for site in borch.sites(model) if not site.observed]
    assert sorted(names) == ["inner.scale", "loc"]
    infer.vi_loss(**borch.pq_to_infer(model)).backward()
    assert shared.scale.numbers.grad is not None  # its cross entries among them


def test_to_float64_moves_the_joint():
    model = model_for("MultivariateNormal")
    model.double()
    borch.sample(model)
    model.observe(y=Y.double())
    out = model(X.double())
    assert out.dtype == model.w.dtype == model.sigma.dtype == torch.float64
    loss = infer.vi_loss(**borch.pq_to_infer(model))
    assert loss.dtype == torch.float64
    loss.backward()


def test_calling_an_approximation_draws_the_joint_anew():
    model = borch.Module(posterior=posterior.MultivariateNormal())
    model.a = dist.Normal(0.0, 1.0)
    model.b = dist.Normal(0.0, 1.0)
    before = model.a.clone(), model.b.clone()
    model.posterior.a()
    assert not torch.equal(model.a, before[0])
    assert not torch.equal(model.b, before[1])


def test_clear_errors():
    model = borch.Module(posterior=posterior.MultivariateNormal())
    with pytest.raises(ValueError, match="'k'.*discrete support"):
        model.k = dist.Poisson(3.0)
    model.a = dist.Normal(torch.zeros(2), 1.0)
    with pytest.raises(ValueError, match="'a' changed shape from \\(2,\\) to \\(3,\\)"):
        model.a = dist.Normal(torch.zeros(3), 1.0)
    model.b = dist.Normal(0.0, 1.0)
    model.posterior.remove_approximation("a")
    borch.sample(model)
    with pytest.raises(RuntimeError, match="'b' was built after \\['a'\\]"):
        model.b  # noqa: B018
    with pytest.raises(ValueError, match="init_scale"):
        posterior.MultivariateNormal(init_scale=0.0)
    with pytest.raises(ValueError, match="rank"):
        posterior.LowRankMultivariateNormal(rank=0)


def test_a_local_variable_in_a_subsampled_plate_is_a_clear_error():
    class Local(borch.Module):
        def forward(self):
            with borch.plate("data", 10, subsample=torch.tensor([1, 3])):
                self.z = dist.Normal(torch.zeros(2), 1.0)
            return self.z

    model = Local(posterior=posterior.MultivariateNormal())
    with pytest.raises(ValueError, match="'z'.*joint families approximate global"):
        model()


def test_a_bayesian_layer_gets_one_joint_over_its_weight_and_bias():
    import borch.nn as bnn

    layer = bnn.Linear(3, 2, posterior=posterior.MultivariateNormal())
    x = torch.randn(5, 3)
    layer(x)
    borch.sample(layer)  # later runs assign priors of numbers again
    assert layer(x).shape == (5, 2)
    assert layer.posterior.joint_names() == ["weight", "bias"]
    assert layer.posterior.dimension() == 8
    infer.vi_loss(**borch.pq_to_infer(layer)).backward()
    view = layer.posterior.block_view("bias")
    assert view["cross"].shape == (2, 6)
    assert layer.posterior.bias.numbers.grad is not None


@pytest.mark.parametrize("family", FAMILIES)
def test_the_joint_before_any_variable_is_a_clear_error(family):
    model = Regression(posterior=FAMILIES[family]())
    model.observe(y=Y)
    with torch.no_grad():
        model(X)
    with pytest.raises(ValueError, match="approximates no variables yet"):
        model.posterior.unconstrained_distribution()


@pytest.mark.parametrize("count", [None, 3])
@pytest.mark.parametrize("family", [*FAMILIES, *FULL_GRADIENT])
def test_the_joint_terms_of_a_run_agree_with_the_terms_block_by_block(family, count):
    """At the run's own draw a block's log-density is its columns of the terms of
    the whole joint, computed once; at any other tensor of the same values it is
    computed block by block. Both must give the same values and gradients."""
    model = model_for(family)
    borch.sample(model)
    drawing = contextlib.nullcontext() if count is None else particles(count, 1)
    own, block_by_block = 0.0, 0.0
    with drawing:
        model(X)
        joint = model.posterior
        for name in joint.joint_names():
            distribution = getattr(joint, name).distribution
            value = getattr(model, name)
            own = own + distribution.log_prob(value).sum()
            block_by_block = block_by_block + distribution.log_prob(value.clone()).sum()
        assert joint.current_run().terms is not None  # the joint terms were used
    assert torch.allclose(own, block_by_block, rtol=1e-10, atol=1e-10)
    parameters = list(model.parameters())
    for a, b in zip(
        torch.autograd.grad(own, parameters, retain_graph=True, allow_unused=True),
        torch.autograd.grad(block_by_block, parameters, allow_unused=True),
    ):
        assert (a is None and b is None) or torch.allclose(a, b, rtol=1e-10, atol=1e-10)


def test_block_view_names_the_entries_of_the_joint_factor():
    """Each block's one parameter vector, read through ``block_view``, is its rows
    of ``loc`` and of the factor: exp(log_diag) on the diagonal, ``tril`` below it
    row by row, ``cross`` under the earlier blocks, zeros above."""
    family = posterior.MultivariateNormal(init="prior")
    model = borch.Module(posterior=family)
    model.a = dist.Normal(torch.zeros(2), 1.0)
    model.b = dist.Normal(model.a.sum(), 1.0)
    model.c = dist.Gamma(torch.ones(3), 1.0)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name in ("a", "b", "c"):
            numbers = getattr(model.posterior, name).numbers
            numbers.copy_(torch.randn(numbers.shape, generator=generator))
    joint = family.unconstrained_distribution()
    factor = joint.scale_tril
    assert torch.equal(factor.triu(1), torch.zeros(6, 6))
    for name, (offset, size) in {"a": (0, 2), "b": (2, 1), "c": (3, 3)}.items():
        view = family.block_view(name)
        rows = slice(offset, offset + size)
        within = factor[rows, rows]
        below = torch.tril_indices(size, size, -1)
        assert torch.equal(joint.loc[rows], view["loc"])
        assert torch.allclose(torch.diagonal(within), view["log_diag"].exp())
        assert torch.equal(within[below[0], below[1]], view["tril"])
        assert torch.equal(factor[rows, :offset], view["cross"])


@pytest.mark.parametrize("run_first", [False, True], ids=["fresh", "already run"])
def test_a_state_dict_with_separate_parameters_still_loads(run_first):
    """State dicts saved before one vector per variable (``loc``, ``log_diag``,
    ``tril`` as a square matrix, ``cross``) load into the same joint."""

    def build():
        model = borch.Module(posterior=posterior.MultivariateNormal(init="prior"))
        model.a = dist.Normal(torch.zeros(2), 1.0)
        model.b = dist.Normal(model.a.sum(), 1.0)
        return model

    source = build()
    generator = torch.Generator().manual_seed(0)
    old = {k: v for k, v in source.state_dict().items() if "numbers" not in k}
    with torch.no_grad():
        for name in ("a", "b"):
            numbers = getattr(source.posterior, name).numbers
            numbers.copy_(torch.randn(numbers.shape, generator=generator))
            view = source.posterior.block_view(name)
            size = view["loc"].shape[0]
            old[f"posterior.{name}.loc"] = view["loc"].clone()
            old[f"posterior.{name}.log_diag"] = view["log_diag"].clone()
            if size > 1:
                tril = torch.zeros(size, size)
                below = torch.tril_indices(size, size, -1)
                tril[below[0], below[1]] = view["tril"]
                old[f"posterior.{name}.tril"] = tril
            if view["cross"].numel():
                old[f"posterior.{name}.cross"] = view["cross"].clone()
    assert "posterior.b.cross" in old and "posterior.a.tril" in old
    target = (
        build()
        if run_first
        else borch.Module(posterior=posterior.MultivariateNormal(init="prior"))
    )
    target.load_state_dict(old)
    if not run_first:
        target.a = dist.Normal(torch.zeros(2), 1.0)
        target.b = dist.Normal(target.a.sum(), 1.0)
    expected = source.posterior.unconstrained_distribution()
    loaded = target.posterior.unconstrained_distribution()
    assert torch.equal(loaded.loc, expected.loc)
    assert torch.equal(loaded.scale_tril, expected.scale_tril)
