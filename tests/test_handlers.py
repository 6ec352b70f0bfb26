"""borch.scale and borch.mask: recorded on the sites, honoured by every loss.

Losses are compared with the same loss written by hand with torch.distributions.
"""

import math

import pytest
import torch
import torch.distributions as td
from hypothesis import given
from hypothesis import strategies as st

import borch
from borch import distributions as dist
from borch import infer, posterior
from borch.infer.hmc.model_conversion import neg_log_joint

Y = torch.tensor([0.3, -1.2, 2.0])
KEEP = torch.tensor([True, False, True])
WEIGHTS = torch.tensor([0.5, 2.0, 3.0])


class Regression(borch.Module):
    """``mu ~ Normal(0, 2)``, ``y_i ~ Normal(mu, 1)``, handlers on the likelihood."""

    def __init__(self, likelihood_handlers=(), latent_handlers=(), family=None):
        super().__init__(posterior=family or posterior.Normal(log_scale=-1.0))
        self.likelihood_handlers = likelihood_handlers
        self.latent_handlers = latent_handlers

    def forward(self):
        with _entered(self.latent_handlers):
            self.mu = dist.Normal(0.0, 2.0)
        with _entered(self.likelihood_handlers):
            self.y = dist.Normal(self.mu.expand(3), 1.0)


class _entered:
    def __init__(self, handlers):
        self.handlers = [make() for make in handlers]

    def __enter__(self):
        for handler in self.handlers:
            handler.__enter__()

    def __exit__(self, *exc):
        for handler in reversed(self.handlers):
            handler.__exit__(*exc)


def run(model):
    model.observe(y=Y)
    borch.sample(model)
    model()
    q = model.posterior.mu.distribution
    mu = model.mu
    log_lik = td.Normal(mu, 1.0).log_prob(Y)
    kl = td.kl_divergence(q, td.Normal(0.0, 2.0))
    log_ratio = q.log_prob(mu) - td.Normal(0.0, 2.0).log_prob(mu)
    return log_lik, kl, log_ratio


def test_scale_and_mask_are_recorded_and_nest():
    model = Regression(
        likelihood_handlers=(
            lambda: borch.scale(2.0),
            lambda: borch.mask(KEEP),
            lambda: borch.scale(WEIGHTS),
            lambda: borch.mask(torch.tensor(True)),
        )
    )
    run(model)
    mu, y = borch.sites(model)
    assert (mu.scale, mu.mask) == (1.0, None)  # assigned outside the handlers
    assert torch.equal(y.scale, 2.0 * WEIGHTS)
    assert torch.equal(y.mask, KEEP)
    inputs = borch.pq_to_infer(model)
    assert inputs["scales"][0] == 1.0 and inputs["masks"][0] is None
    assert borch.handlers.current_context() == borch.handlers.NO_CONTEXT


def test_no_handler_leaves_pq_to_infer_as_it_was():
    model = Regression()
    run(model)
    assert list(borch.pq_to_infer(model)) == [
        "p_dists",
        "q_dists",
        "values",
        "observed",
    ]


@pytest.mark.parametrize(
    ("handlers", "weight"),
    [
        ((lambda: borch.scale(3.0),), torch.full((3,), 3.0)),
        ((lambda: borch.mask(KEEP),), KEEP.double()),
        ((lambda: borch.scale(WEIGHTS),), WEIGHTS.double()),
        (
            (lambda: borch.scale(WEIGHTS), lambda: borch.mask(KEEP)),
            (WEIGHTS * KEEP).double(),
        ),
    ],
)
@pytest.mark.parametrize(
    "div_fn", [infer.elbo_loss, infer.analytical_kl_divergence_loss]
)
def test_vi_loss_weights_the_likelihood(handlers, weight, div_fn):
    model = Regression(likelihood_handlers=handlers)
    log_lik, kl, log_ratio = run(model)
    divergence = kl if div_fn is infer.analytical_kl_divergence_loss else log_ratio
    expected = divergence - (weight.to(log_lik.dtype) * log_lik).sum()
    loss = infer.vi_loss(**borch.pq_to_infer(model), div_fn=div_fn)
    assert torch.allclose(loss, expected)


@pytest.mark.parametrize(
    "div_fn",
    [
        infer.elbo_loss,
        infer.elbo_path_derivative_loss,
        infer.elbo_entropy_loss,
        infer.analytical_kl_divergence_loss,
    ],
)
def test_vi_loss_weights_a_latent_with_every_div_fn(div_fn):
    model = Regression(latent_handlers=(lambda: borch.scale(0.25),))
    log_lik, _, _ = run(model)
    inputs = borch.pq_to_infer(model)
    unweighted = div_fn(inputs["p_dists"][0], inputs["q_dists"][0], inputs["values"][0])
    loss = infer.vi_loss(**inputs, div_fn=div_fn)
    assert torch.allclose(loss, 0.25 * unweighted - log_lik.sum())


def test_a_masked_latent_counts_only_its_kept_elements():
    class Local(borch.Module):
        def forward(self):
            with borch.mask(KEEP):
                self.z = dist.Normal(torch.zeros(3), 1.0)

    model = Local(posterior=posterior.Normal(log_scale=-1.0))
    model()
    q = model.posterior.z.distribution
    value = model.z
    expected = ((q.log_prob(value) - td.Normal(0.0, 1.0).log_prob(value)) * KEEP).sum()
    assert torch.allclose(infer.vi_loss(**borch.pq_to_infer(model)), expected)


def test_a_non_reparameterised_latent_has_weighted_kl_and_masked_score():
    prior_p = 0.3

    class Flips(borch.Module):
        def forward(self):
            with borch.scale(WEIGHTS), borch.mask(KEEP):
                self.flip = dist.Bernoulli(torch.full((3,), prior_p))

    model = Flips()
    model()
    q = model.posterior.flip.distribution
    kl = td.kl_divergence(q, td.Bernoulli(torch.full((3,), prior_p)))
    loss = infer.vi_loss(**borch.pq_to_infer(model))
    assert torch.allclose(loss, (kl * WEIGHTS * KEEP).sum())
    # The score term is the masked log q of the draw, weighted by the cost.
    (probs,) = [p for p in model.parameters()]
    (grad,) = torch.autograd.grad(loss, probs)
    value = model.flip.detach()
    with torch.enable_grad():
        leaf = probs.detach().requires_grad_()
        surrogate = _bernoulli_surrogate(model, leaf, value, prior_p)
        (expected,) = torch.autograd.grad(surrogate, leaf)
    assert torch.allclose(grad, expected)


def _bernoulli_surrogate(model, leaf, value, prior_p):
    """The same surrogate written by hand from the unconstrained parameter."""
    transform = td.transform_to(td.constraints.unit_interval)
    probs = transform(leaf)
    q = td.Bernoulli(probs)
    cost = (
        td.kl_divergence(q, td.Bernoulli(torch.full((3,), prior_p))) * WEIGHTS * KEEP
    ).sum()
    score = (q.log_prob(value) * KEEP).sum()
    return cost + (score - score.detach()) * cost.detach()


@pytest.mark.parametrize("vectorize", [True, False])
def test_particle_vi_loss_honours_scale_and_mask(vectorize):
    class Observed(borch.Module):
        def forward(self):
            with borch.scale(WEIGHTS), borch.mask(KEEP):
                self.y = dist.Normal(torch.zeros(3), 1.0)

    model = Observed()
    model.observe(y=Y)
    loss = infer.particle_vi_loss(model, num_particles=4, vectorize=vectorize)
    expected = -(td.Normal(0.0, 1.0).log_prob(Y) * WEIGHTS * KEEP).sum()
    assert torch.allclose(loss, expected)


def test_elbo_rb_score_function_reads_scales_from_each_draw():
    model = Regression(likelihood_handlers=(lambda: borch.scale(3.0),))
    draws, expected = [], []
    for _ in range(2):
        log_lik, _, log_ratio = run(model)
        draws.append(borch.pq_to_infer(model))
        expected.append(log_ratio - 3.0 * log_lik.sum())
    loss = infer.elbo_rb_score_function(draws)
    assert torch.allclose(loss, torch.stack(expected).mean())


def test_the_mcmc_potential_honours_scale_and_mask():
    model = Regression(
        likelihood_handlers=(lambda: borch.scale(2.0), lambda: borch.mask(KEEP)),
        family=posterior.PointMass(),
    )
    model.observe(y=Y)
    model()
    mu = model.mu
    expected = -(
        td.Normal(0.0, 2.0).log_prob(mu)
        + 2.0 * (td.Normal(mu, 1.0).log_prob(Y) * KEEP).sum()
    )
    assert torch.allclose(neg_log_joint(model), expected)


def test_a_mask_that_does_not_fit_names_the_variable():
    model = Regression(
        likelihood_handlers=(lambda: borch.mask(torch.ones(2, dtype=torch.bool)),)
    )
    with pytest.raises(ValueError, match=r"the mask of 'y' has shape \(2,\)"):
        run(model)
    model = Regression(
        latent_handlers=(lambda: borch.mask(torch.ones(2, dtype=torch.bool)),)
    )
    run(model)
    with pytest.raises(ValueError, match=r"variable 0: its mask of shape \(2,\)"):
        infer.vi_loss(**borch.pq_to_infer(model))


def test_a_div_fn_without_elementwise_form_cannot_be_masked():
    def summed_only(p, q, value):
        return (q.log_prob(value) - p.log_prob(value)).sum()

    model = Regression(latent_handlers=(lambda: borch.mask(torch.tensor(True)),))
    run(model)
    with pytest.raises(ValueError, match="register_elementwise"):
        infer.vi_loss(**borch.pq_to_infer(model), div_fn=summed_only)
    # A number scale needs no elementwise form.
    model = Regression(latent_handlers=(lambda: borch.scale(2.0),))
    log_lik, _, log_ratio = run(model)
    loss = infer.vi_loss(**borch.pq_to_infer(model), div_fn=summed_only)
    assert torch.allclose(loss, 2.0 * log_ratio - log_lik.sum())


def test_handlers_are_left_on_error():
    with pytest.raises(RuntimeError), borch.scale(2.0), borch.mask(KEEP):
        raise RuntimeError("inside")
    assert borch.handlers.current_context() == borch.handlers.NO_CONTEXT


@given(
    st.one_of(
        st.floats(max_value=0.0),
        st.just(math.inf),
        st.just(math.nan),
    )
)
def test_scale_refuses_factors_that_are_not_positive_and_finite(factor):
    with pytest.raises(ValueError, match="positive and finite"):
        borch.scale(factor)


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: borch.scale("2"), TypeError, "number or a tensor"),
        (lambda: borch.scale(True), TypeError, "number or a tensor"),
        (lambda: borch.scale(torch.tensor([1, 2])), TypeError, "floating point"),
        (lambda: borch.scale(torch.tensor([1.0, -1.0])), ValueError, "every element"),
        (lambda: borch.mask(torch.ones(2)), TypeError, "bool tensor"),
        (lambda: borch.mask([True]), TypeError, "bool tensor"),
    ],
)
def test_bad_handler_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()


# ---------------------------------------------------------------------- plates
N_DATA = 12
DATA = torch.linspace(-1.0, 2.0, N_DATA)


class PlateMean(borch.Module):
    """``mu ~ Normal(0, 3)``, ``y_i ~ Normal(mu, 1)`` in a plate."""

    def forward(self, index):
        self.mu = dist.Normal(0.0, 3.0)
        with borch.plate("data", N_DATA, subsample=index):
            self.observe(y=DATA[index])
            self.y = dist.Normal(self.mu.expand(len(index)), 1.0)


def point_mass_loss(model, index):
    borch.sample(model)
    model(index)
    return infer.vi_loss(**borch.pq_to_infer(model))


def test_a_plate_scales_the_terms_inside_by_size_over_batch():
    model = PlateMean(posterior=posterior.PointMass())
    index = torch.tensor([1, 4, 9])
    loss = point_mass_loss(model, index)
    mu = model.mu.detach()
    q = model.posterior.mu.distribution
    divergence = q.log_prob(mu) - td.Normal(0.0, 3.0).log_prob(mu)
    likelihood = td.Normal(mu, 1.0).log_prob(DATA[index]).sum()
    expected = divergence - N_DATA / 3 * likelihood
    assert torch.allclose(loss, expected)
    mu_site, y_site = borch.sites(model)
    assert mu_site.scale == 1.0 and mu_site.plates == ()
    assert y_site.scale == N_DATA / 3
    (frame,) = y_site.plates
    assert (frame.name, frame.size, frame.dim) == ("data", N_DATA, -1)
    assert torch.equal(frame.subsample, index)


def test_the_minibatch_estimate_averages_to_the_full_data_loss():
    """With point masses the loss is deterministic: the mean over every one-point
    subsample is exactly the full-data loss."""
    model = PlateMean(posterior=posterior.PointMass())
    full = point_mass_loss(model, torch.arange(N_DATA))
    singles = [point_mass_loss(model, torch.tensor([i])) for i in range(N_DATA)]
    assert torch.allclose(torch.stack(singles).mean(), full)


def test_nested_plates_multiply_and_subsamples_are_drawn():
    class Grid(borch.Module):
        def forward(self):
            with (
                borch.plate("rows", 10, subsample_size=2, dim=-2) as rows,
                borch.plate("columns", 6, subsample_size=3) as columns,
            ):
                self.observe(y=torch.zeros(len(rows), len(columns)))
                self.y = dist.Normal(torch.zeros(2, 3), 1.0)
            self.rows, self.columns = rows, columns

    model = Grid()
    model()
    (site,) = borch.sites(model)
    assert site.scale == 5.0 * 2.0
    assert [frame.name for frame in site.plates] == ["rows", "columns"]
    assert len(set(model.rows.tolist())) == 2 and len(set(model.columns.tolist())) == 3
    assert model.rows.max() < 10 and model.columns.max() < 6


def test_a_variable_inside_a_plate_must_have_the_subsample_size():
    class Wrong(borch.Module):
        def forward(self):
            with borch.plate("data", 10, subsample_size=4):
                self.z = dist.Normal(torch.zeros(3), 1.0)

    with pytest.raises(
        ValueError, match=r"'z' is assigned inside plate 'data'.*4 rows"
    ):
        Wrong()()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"size": 0}, ValueError, "size must be a positive int"),
        ({"subsample": torch.tensor([0.0, 1.0])}, TypeError, "integer tensor"),
        ({"subsample": torch.tensor([0, 10])}, ValueError, r"in \[0, 10\)"),
        ({"subsample": torch.zeros(0, dtype=torch.long)}, ValueError, "non-empty"),
        ({"subsample_size": 11}, ValueError, "exceeds size=10"),
        (
            {"subsample": torch.tensor([1, 2]), "subsample_size": 3},
            ValueError,
            "subsample_size=3",
        ),
        ({"dim": 0}, ValueError, "negative int"),
    ],
)
def test_bad_plate_arguments(kwargs, error, match):
    arguments = {"size": 10, **kwargs}
    with pytest.raises(error, match=match):
        borch.plate("data", **arguments)


def test_plates_refuse_a_name_or_dim_in_force():
    with (
        borch.plate("data", 4),
        pytest.raises(ValueError, match="already in force"),
        borch.plate("data", 4, dim=-2),
    ):
        pass
    with (
        borch.plate("rows", 4),
        pytest.raises(ValueError, match="indexes dim -1"),
        borch.plate("columns", 4),
    ):
        pass


def test_missing_observations_in_masked_places_give_finite_gradients():
    data = torch.tensor([0.5, float("nan"), -1.0, float("nan")])
    keep = ~data.isnan()

    class Missing(borch.Module):
        def forward(self):
            self.mu = dist.Normal(0.0, 1.0)
            with borch.mask(keep):
                self.y = dist.Normal(self.mu.expand(4), 1.0)

    model = Missing(posterior=posterior.Normal(log_scale=-1.0))
    model.observe(y=data)
    model()
    loss = infer.vi_loss(**borch.pq_to_infer(model))
    mu = model.mu
    q = model.posterior.mu.distribution
    expected = (q.log_prob(mu) - td.Normal(0.0, 1.0).log_prob(mu)) - td.Normal(
        mu, 1.0
    ).log_prob(data[keep]).sum()
    assert torch.allclose(loss, expected)
    loss.backward()
    for parameter in model.parameters():
        assert torch.isfinite(parameter.grad).all()


def test_sharded_vi_loss_takes_the_weights_of_pq_to_infer():
    model = Regression(likelihood_handlers=(lambda: borch.scale(2.0),))
    log_lik, _, log_ratio = run(model)
    loss = borch.distributed.sharded_vi_loss(
        **borch.pq_to_infer(model), dataset_size=6, batch_size=3
    )
    expected = 2 * (0.5 * log_ratio - 2.0 * log_lik.sum())
    assert torch.allclose(loss, expected)


def test_a_prior_of_numbers_serves_inside_a_plate_with_data_or_an_approximation():
    class Amortised(borch.Module):
        def forward(self, index):
            with borch.plate("data", 100, subsample=index, dim=-2):
                loc = torch.zeros(len(index), 2, requires_grad=True)
                self.z = borch.RVPair(
                    dist.Normal(0.0, 1.0), dist.Normal(loc, torch.ones(len(index), 2))
                )
                self.observe(y=torch.zeros(len(index), 2))
                self.y = dist.Normal(self.z, 1.0)
                self.observe(w=torch.zeros(len(index), 2))
                self.w = dist.Normal(0.0, 1.0)

    model = Amortised()
    model(torch.arange(10))
    assert [site.scale for site in borch.sites(model)] == [10.0, 10.0, 10.0]
