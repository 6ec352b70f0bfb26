"""MCMC diagnostics and model comparison
=====================================

Two models of the eight schools data, sampled with NUTS: *complete pooling*, one
common effect ``mu`` for every school, and the *hierarchical* model, in which the
schools' effects spread around ``mu`` with scale ``tau`` (non-centred, as in the
eight schools tutorial). For each, the convergence diagnostics (R-hat, effective
sample size, divergent transitions) from :meth:`borch.infer.MCMCResult.summary`,
then the two compared by their expected log predictive density estimated with
PSIS leave-one-out cross-validation (ArviZ's ``loo`` and ``compare``).

Run ``python examples/mcmc_model_comparison.py`` (about half a minute).
"""

import warnings

import arviz as az
import torch

import borch
from borch import distributions as dist

EFFECTS = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SIGMA = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])
DRAWS = {"num_samples": 500, "warmup": 500, "chains": 4, "seed": 0, "progress": False}


class Pooled(borch.Module):
    def forward(self, sigma):
        self.mu = dist.Normal(0.0, 5.0)
        self.y = dist.Normal(self.mu.expand(sigma.shape), sigma)


class Hierarchical(borch.Module):
    def forward(self, sigma):
        self.mu = dist.Normal(0.0, 5.0)
        self.tau = dist.HalfCauchy(5.0)
        self.theta_tilde = dist.Normal(torch.zeros(len(sigma)), 1.0)
        self.y = dist.Normal(self.mu + self.tau * self.theta_tilde, sigma)


# %%
# Sampling and diagnostics
# ------------------------
# ``summary`` is ArviZ's, with R-hat and the bulk and tail effective sample sizes.

results = {}
for name, model in {"pooled": Pooled(), "hierarchical": Hierarchical()}.items():
    model.observe(y=EFFECTS)
    results[name] = borch.infer.mcmc(model, SIGMA, **DRAWS)
    summary = results[name].summary()
    print(f"--- {name}: {results[name].num_divergent} divergent transitions")
    print(summary[["mean", "sd", "ess_bulk", "ess_tail", "r_hat"]].to_string())

# %%
# Model comparison
# ----------------
# PSIS-LOO needs the log likelihood of each school at each draw. ``to_arviz()``
# carries it in the ``log_likelihood`` group (one variable per observed site, here
# ``y`` with shape (chain, draw, school)), evaluated from the models' own
# likelihoods at every draw, next to the ``observed_data``.

datasets = {}
for name, result in results.items():
    idata = result.to_arviz()
    print(f"{name}: log likelihood of y, shape {idata.log_likelihood['y'].shape}")
    datasets[name] = idata
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loo = az.loo(idata, pointwise=True)
    print(
        f"{name}: elpd_loo {loo.elpd_loo:.2f} (se {loo.se:.2f}), p_loo {loo.p_loo:.2f}"
    )
    print("  Pareto k per school:", loo.pareto_k.values.round(2))
    for warning in caught:
        print("  ArviZ warns:", str(warning.message).split(". ")[0])

# %%
# A Pareto k above 0.7 marks a school whose leave-one-out posterior is far from the
# full one, so the importance-sampling estimate for it is unreliable (ArviZ's
# warning above). ``compare`` ranks the models by ``elpd_loo``. A difference
# (``elpd_diff``) of a fraction of a unit, of the order of its standard error
# (``dse``), does not separate the models: the data are compatible with little
# spread between the schools, as the wide posterior of ``tau`` already showed.

with warnings.catch_warnings():
    # the Pareto k warning shown above, and pandas' deprecation notes on ArviZ's code
    warnings.simplefilter("ignore")
    comparison = az.compare(datasets)
print(
    comparison[["rank", "elpd_loo", "p_loo", "elpd_diff", "dse", "weight"]].to_string()
)
