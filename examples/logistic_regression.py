"""MCMC: Bayesian logistic regression
==================================

Bayesian logistic regression with NUTS on scikit-learn's breast-cancer data.

569 tumours, 30 standardised features, the diagnosis as a Bernoulli outcome;
``w ~ Normal(0, 1)`` for each feature and ``b ~ Normal(0, 5)`` for the intercept.
Prints the ArviZ summary, the training accuracy of the posterior predictive mean,
and writes a trace plot.

Run ``python examples/logistic_regression.py`` (about 20 seconds on two slow cores);
``--help`` lists the options for longer runs.
"""

import argparse
import pathlib

import matplotlib
import torch
from sklearn.datasets import load_breast_cancer

import borch
from borch import distributions as dist


def breast_cancer():
    """Standardised features and 0/1 labels as float32 tensors."""
    features, labels = load_breast_cancer(return_X_y=True)
    features = (features - features.mean(0)) / features.std(0)
    return (
        torch.tensor(features, dtype=torch.float32),
        torch.tensor(labels, dtype=torch.float32),
    )


class LogisticRegression(borch.Module):
    def forward(self, x):
        self.w = dist.Normal(torch.zeros(x.shape[1]), 1.0)
        self.b = dist.Normal(0.0, 5.0)
        self.y = dist.Bernoulli(logits=x @ self.w + self.b)
        return self.y


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--samples", type=int, default=500, help="draws per chain")
    parser.add_argument("--warmup", type=int, default=500, help="warm-up per chain")
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", default="results", help="folder for the plot")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    x, y = breast_cancer()
    model = LogisticRegression()
    model.observe(y=y)
    result = borch.infer.mcmc(
        model,
        x,
        num_samples=args.samples,
        warmup=args.warmup,
        chains=args.chains,
        seed=args.seed,
        progress=not args.no_progress,
    )
    summary = result.summary()
    print(summary.to_string())
    print(f"divergent transitions: {result.num_divergent}")
    print(
        f"smallest bulk ESS: {summary['ess_bulk'].min():.0f}, "
        f"largest r-hat: {summary['r_hat'].max():.3f}"
    )

    w = result.samples["w"].flatten(0, 1)  # (chains * draws, 30)
    b = result.samples["b"].flatten(0, 1)
    probability = torch.sigmoid(x @ w.T + b).mean(1)
    accuracy = ((probability > 0.5).float() == y).float().mean()
    print(f"training accuracy of the posterior predictive mean: {accuracy:.3f}")
    folder = pathlib.Path(args.results)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "logistic_regression_trace.png"
    result.plot_trace(["b", "w"], path=path)
    print(f"trace plot: {path}")
    return result


if __name__ == "__main__":
    matplotlib.use("Agg")
    main()
