"""structure="lowrank": the full posterior when the Gauss-Newton matrix's rank is
at most ``rank``, closer to it than the diagonal on correlated weights, draws of the
right covariance, and clear errors for a bad rank."""

import pytest
import torch

import borch
from borch import distributions as dist
from borch import nn as bnn
from borch.infer import laplace_posterior
from tests.infer.laplace.test_laplace import fit_map
from tests.infer.laplace.test_structures import HEADS, network, scaled_fit

PRIOR = torch.tensor(1.0, dtype=torch.float64)


@pytest.mark.parametrize("head_name", list(HEADS))
def test_at_the_matrix_rank_lowrank_is_the_full_posterior(head_name):
    """7 rows: the matrix of 43 parameters has rank at most 14, so the subspace
    holds all of it; covariance, evidence and GLM output covariance agree to
    float64 round-off of the eigensolver."""
    model, x, closure = network(head_name)
    full = laplace_posterior(model, closure, prior_precision=1.0)
    rank = int(torch.linalg.matrix_rank(full.blocks[0].curvature))
    assert rank < full.blocks[0].size
    low = laplace_posterior(
        model, closure, structure="lowrank", rank=rank, prior_precision=1.0
    )
    torch.testing.assert_close(
        low.blocks[0].covariance(PRIOR),
        full.blocks[0].covariance(PRIOR),
        rtol=0,
        atol=1e-6,
    )
    torch.testing.assert_close(
        low.log_marginal_likelihood(), full.log_marginal_likelihood(), rtol=1e-8, atol=0
    )
    outputs = [
        a.linearise(x[:3])["y"].covariance(a._block_priors()) for a in (full, low)
    ]
    torch.testing.assert_close(outputs[1], outputs[0], rtol=0, atol=1e-6)


class Correlated(bnn.Module):
    def __init__(self):
        super().__init__()
        self.layer = bnn.Linear(6, 1)

    def forward(self, x):
        self.y = dist.Normal(self.layer(x).squeeze(-1), 0.3)


def correlated_fit():
    """Inputs from two factors: the 7 x 7 matrix has three large eigenvalues (the
    factors and the bias, 2e3 to 1e4), four small ones (about 5) and large
    off-diagonal entries."""
    generator = torch.Generator().manual_seed(0)
    factors = torch.randn(200, 2, generator=generator)
    x = factors @ torch.randn(2, 6, generator=generator)
    x = x + 0.05 * torch.randn(200, 6, generator=generator)
    torch.manual_seed(0)
    model = Correlated()
    model.apply(borch.set_posteriors(borch.posterior.PointMass))
    model.observe(y=x[:, 0] - x[:, 1] + 0.3 * torch.randn(200, generator=generator))
    return model, fit_map(model, (x,), steps=1)


def test_below_the_matrix_rank_lowrank_is_between_diag_and_full():
    """rank 3 of 7 keeps the large directions: its precision (Frobenius) and log
    evidence are less than half as far from the full ones as the diagonal's."""
    model, closure = correlated_fit()
    approx = {
        s: laplace_posterior(model, closure, structure=s, prior_precision=1.0, **kw)
        for s, kw in [("full", {}), ("diag", {}), ("lowrank", {"rank": 3})]
    }
    (dense,) = approx["full"].blocks
    exact = dense.curvature + torch.eye(dense.size, dtype=torch.float64)
    # structure="diag" is the dense matrix's diagonal (test_structures checks it)
    diag_error = torch.linalg.norm(exact - torch.diag(exact.diagonal()))
    low = torch.linalg.inv(approx["lowrank"].blocks[0].covariance(PRIOR))
    low_error = torch.linalg.norm(exact - low)
    assert low_error < 0.5 * diag_error
    evidence = {s: float(a.log_marginal_likelihood()) for s, a in approx.items()}
    assert abs(evidence["lowrank"] - evidence["full"]) < 0.5 * abs(
        evidence["diag"] - evidence["full"]
    )


def test_draws_have_the_blocks_covariance():
    """20,000 draws: every entry of the sample covariance within 5 standard errors,
    sqrt((S_ii S_jj + S_ij^2) / n), of the block's covariance."""
    model, closure = correlated_fit()
    approx = laplace_posterior(
        model, closure, structure="lowrank", rank=2, prior_precision=1.0
    )
    count = 20_000
    draws = approx.samples(count, torch.Generator().manual_seed(0))
    flat = torch.cat([draws["layer.weight"].reshape(count, -1), draws["layer.bias"]], 1)
    empirical = torch.cov(flat.double().T)
    expected = approx.blocks[0].covariance(PRIOR)
    variance = expected.diagonal()
    error = ((torch.outer(variance, variance) + expected.pow(2)) / count).sqrt()
    assert bool(((empirical - expected).abs() < 5 * error).all())


@pytest.mark.parametrize(
    ("rank", "message"),
    [
        (0, "positive integer, got 0"),
        (-3, "positive integer, got -3"),
        (2.5, "positive integer, got 2.5"),
        (True, "positive integer, got True"),
        (44, "rank=44 exceeds the 43 parameters"),
    ],
)
def test_a_bad_rank_is_refused(rank, message):
    model, _, closure = network("categorical")
    with pytest.raises(ValueError, match=message):
        laplace_posterior(model, closure, structure="lowrank", rank=rank)


def test_rank_belongs_to_lowrank():
    model, _, closure = network("categorical")
    with pytest.raises(ValueError, match="rank=3 applies to structure='lowrank'"):
        laplace_posterior(model, closure, structure="diag", rank=3)


def test_a_latent_outside_linear_layers_joins_the_low_rank_block():
    """A learned noise scale next to a linear layer: one block of all 5
    parameters; at rank 5 it is the full posterior."""

    model, closure = scaled_fit()
    full = laplace_posterior(model, closure, prior_precision=1.0)
    low = laplace_posterior(
        model, closure, structure="lowrank", rank=5, prior_precision=1.0
    )
    assert low.blocks[0].names == full.blocks[0].names
    torch.testing.assert_close(
        low.blocks[0].covariance(PRIOR),
        full.blocks[0].covariance(PRIOR),
        rtol=0,
        atol=1e-6,
    )


def test_the_products_do_not_depend_on_the_chunk_of_output_rows(monkeypatch):
    """Layers of 5 and 3 outputs in chunks of 2 rows (the last one shorter) give
    the matrix-vector products of a single chunk."""
    from borch.infer.laplace.structures import LowRankBlock

    model, _, closure = network("categorical")
    whole = laplace_posterior(model, closure, structure="lowrank", prior_precision=1.0)
    monkeypatch.setattr(LowRankBlock, "ROWS_PER_CHUNK", 2)
    chunked = laplace_posterior(
        model, closure, structure="lowrank", prior_precision=1.0
    )
    torch.testing.assert_close(
        chunked.blocks[0].eigenvalues, whole.blocks[0].eigenvalues, rtol=1e-10, atol=0
    )
    torch.testing.assert_close(
        chunked.blocks[0].covariance(PRIOR), whole.blocks[0].covariance(PRIOR)
    )
