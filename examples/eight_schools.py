"""MCMC: eight schools with NUTS
=============================

Eight schools with NUTS: the non-centred model, its ArviZ summary and a trace plot.

Eight schools estimated the effect of coaching on test scores, each with a standard
error (Rubin, 1981). The hierarchical model pools the effects towards a common mean
``mu`` with spread ``tau``; in the non-centred form each school's effect is
``mu + tau * theta_tilde`` with ``theta_tilde ~ Normal(0, 1)``, which NUTS samples
without divergences. Published posterior means: mu about 4.4, tau about 3.6.

Run ``python examples/eight_schools.py`` (about 20 seconds on two slow cores);
``--help`` lists the options for longer runs.
"""

import argparse
import pathlib

import matplotlib
import torch

import borch
from borch import distributions as dist

EFFECTS = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
STANDARD_ERRORS = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


class EightSchools(borch.Module):
    """theta_j = mu + tau * theta_tilde_j;  y_j ~ Normal(theta_j, sigma_j)."""

    def forward(self, sigma):
        self.mu = dist.Normal(0.0, 5.0)
        self.tau = dist.HalfCauchy(5.0)
        self.theta_tilde = dist.Normal(torch.zeros(len(sigma)), 1.0)
        self.y = dist.Normal(self.mu + self.tau * self.theta_tilde, sigma)
        return self.y


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--samples", type=int, default=1000, help="draws per chain")
    parser.add_argument("--warmup", type=int, default=1000, help="warm-up per chain")
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", default="results", help="folder for the plot")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    model = EightSchools()
    model.observe(y=EFFECTS)
    result = borch.infer.mcmc(
        model,
        STANDARD_ERRORS,
        num_samples=args.samples,
        warmup=args.warmup,
        chains=args.chains,
        seed=args.seed,
        progress=not args.no_progress,
    )
    summary = result.summary()
    print(summary.to_string())
    share = result.num_divergent / result.divergences.numel()
    print(f"divergent transitions: {result.num_divergent} ({share:.2%})")
    print(
        f"posterior means: mu {summary.loc['mu', 'mean']:.2f} (published 4.4), "
        f"tau {summary.loc['tau', 'mean']:.2f} (published 3.6)"
    )
    folder = pathlib.Path(args.results)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "eight_schools_trace.png"
    result.plot_trace(["mu", "tau"], path=path)
    print(f"trace plot: {path}")
    return result


if __name__ == "__main__":
    matplotlib.use("Agg")
    main()
