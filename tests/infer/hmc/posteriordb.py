"""posteriordb reference posteriors (``tests/data/posteriordb``) as borch models, and
the check of a sampler's draws against Stan's reference summary."""

import json
import pathlib

import numpy as np
import torch

import borch
from borch import distributions as dist
from tests.infer.mcmc_stats import mcse_mean

DATA = pathlib.Path(__file__).parents[2] / "data" / "posteriordb"
#: posteriordb's reference: 10 chains x 1000 thinned (so nearly independent) draws.
REFERENCE_DRAWS = 10_000
#: A flat prior in Stan, a very wide proper one here.
FLAT_SD = 1000.0


def load(name: str) -> dict:
    return json.loads((DATA / f"{name}.json").read_text())


class KidScoreMomHsIq(borch.Module):
    """kidiq-kidscore_momhsiq: ``kid_score ~ Normal(x @ beta, sigma)`` on the
    uncentred predictors (1, mom_hs, mom_iq); intercept and mom_iq slope correlate
    at -0.95."""

    def forward(self, x):
        self.beta = dist.Normal(torch.zeros(3, dtype=x.dtype), FLAT_SD)
        self.sigma = dist.HalfCauchy(torch.tensor(2.5, dtype=x.dtype))
        self.y = dist.Normal(x @ self.beta, self.sigma)


def kidiq():
    """The model, its arguments, and the reference summary ``{name: (means, sds)}``."""
    posterior = load("kidiq-kidscore_momhsiq")
    data = posterior["data"]
    x = torch.tensor(
        [[1.0] * data["N"], data["mom_hs"], data["mom_iq"]], dtype=torch.float64
    ).T
    model = KidScoreMomHsIq()
    model.observe(y=torch.tensor(data["kid_score"], dtype=torch.float64))
    summary = posterior["reference"]["summary"]
    beta = [summary[f"beta[{i}]"] for i in (1, 2, 3)]
    reference = {
        "beta": (
            np.array([b["mean"] for b in beta]),
            np.array([b["sd"] for b in beta]),
        ),
        "sigma": (
            np.array([summary["sigma"]["mean"]]),
            np.array([summary["sigma"]["sd"]]),
        ),
    }
    return model, (x,), reference


class KidScoreMomIq(borch.Module):
    """kidiq-kidscore_momiq (the data of kidscore_momhsiq): ``kid_score ~
    Normal(b1 + b2 * mom_iq, sigma)``, ``b1, b2 ~ Normal(0, 100)``, ``sigma ~
    HalfCauchy(2.5)``; intercept and slope correlate at -0.989."""

    def forward(self, mom_iq):
        zero = torch.zeros((), dtype=mom_iq.dtype)
        self.b1 = dist.Normal(zero, 100.0)
        self.b2 = dist.Normal(zero, 100.0)
        self.sigma = dist.HalfCauchy(zero + 2.5)
        self.kid_score = dist.Normal(self.b1 + self.b2 * mom_iq, self.sigma)


def kidiq_momiq(dtype=torch.float32, posterior=None):
    """The model (observed), its arguments, and borch's NUTS reference
    (``kidiq-kidscore_momiq.reference.json``: means, sds, corr_b1_b2; ``None``
    before ``kidiq_momiq_reference.py`` wrote it)."""
    data = load("kidiq-kidscore_momhsiq")["data"]
    model = KidScoreMomIq(posterior=posterior)
    model.observe(kid_score=torch.tensor(data["kid_score"], dtype=dtype))
    path = DATA / "kidiq-kidscore_momiq.reference.json"
    reference = json.loads(path.read_text()) if path.exists() else None
    return model, (torch.tensor(data["mom_iq"], dtype=dtype),), reference


def assert_matches_reference(samples, reference, sd_tolerance=0.15, n_se=4.0):
    """Means within ``n_se`` combined standard errors (the draws' ESS-based MCSE and
    the reference's ``sd / sqrt(10000)``), sds within ``sd_tolerance``."""
    for name, (means, sds) in reference.items():
        draws = samples[name].reshape(*samples[name].shape[:2], -1).numpy()
        for i, (mean, sd) in enumerate(zip(means, sds)):
            coordinate = draws[..., i]
            error = abs(coordinate.mean() - mean)
            bound = n_se * np.hypot(
                mcse_mean(coordinate), sd / np.sqrt(REFERENCE_DRAWS)
            )
            assert error <= bound, f"{name}[{i}]: mean {coordinate.mean()} vs {mean}"
            assert abs(coordinate.std() / sd - 1) <= sd_tolerance, (
                f"{name}[{i}]: sd {coordinate.std()} vs {sd}"
            )
