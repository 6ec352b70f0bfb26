"""Heteroscedastic regression with predictive intervals
====================================================

Heteroscedastic Bayesian linear regression on scikit-learn's diabetes data.

442 patients, 10 standardised features, disease progression after one year as the
target. Both the mean and the log standard deviation of the likelihood are linear in
the features, with Normal priors on every weight; the posterior is fitted by
variational inference (a Normal per weight). The posterior predictive distribution of
the held-out patients gives the test RMSE of its mean, the negative log predictive
density and the coverage of its central 50% and 90% intervals; the predictive band is
written as a PNG.

Run ``python examples/diabetes_regression.py`` (a few seconds on two slow cores);
``--help`` lists the options.
"""

import argparse
import math
import pathlib

import matplotlib
import torch
from sklearn.datasets import load_diabetes
from sklearn.model_selection import train_test_split

import borch
from borch import distributions as dist
from borch import metrics, plots


def diabetes(seed, test_size=0.3):
    """Train and test tensors, standardised with the training statistics, and the
    target's mean and scale (to report in the original units)."""
    features, target = load_diabetes(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        features, target, test_size=test_size, random_state=seed
    )
    x_mean, x_std = x_train.mean(0), x_train.std(0)
    y_mean, y_std = y_train.mean(), y_train.std()

    def tensor(values, mean, std):
        return torch.tensor((values - mean) / std, dtype=torch.float32)

    return (
        tensor(x_train, x_mean, x_std),
        tensor(y_train, y_mean, y_std),
        tensor(x_test, x_mean, x_std),
        tensor(y_test, y_mean, y_std),
        float(y_mean),
        float(y_std),
    )


class HeteroscedasticRegression(borch.Module):
    """``y ~ Normal(x @ w + b, exp(x @ v + c))``.

    The approximations start narrow (``posterior.Normal``), which keeps the early
    gradients of the log-scale weights tame. The products are written as batched
    matrix-vector products so the model also runs with a leading sample dimension
    (``predictive(vectorize=True)``).
    """

    def __init__(self):
        super().__init__(posterior=borch.posterior.Normal())

    def forward(self, x):
        features = x.shape[-1]
        self.w = dist.Normal(torch.zeros(features), 1.0)
        self.b = dist.Normal(0.0, 1.0)
        self.v = dist.Normal(torch.zeros(features), 0.5)
        self.c = dist.Normal(0.0, 1.0)
        loc = (x @ self.w[..., None])[..., 0] + self.b
        scale = torch.exp((x @ self.v[..., None])[..., 0] + self.c)
        self.y = dist.Normal(loc, scale)
        return loc, scale


def fit(model, x, steps, learning_rate=0.05):
    """Maximise the ELBO with Adam; returns the final loss."""
    model(x)  # creates the approximations, so the optimizer sees their parameters
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    for _ in range(steps):
        optimizer.zero_grad()
        borch.sample(model)
        model(x)
        loss = borch.infer.vi_loss(**borch.pq_to_infer(model))
        loss.backward()
        optimizer.step()
    return loss.item()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--steps", type=int, default=2000, help="VI steps")
    parser.add_argument("--samples", type=int, default=1000, help="predictive draws")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", default="results", help="folder for the plot")
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    x_train, y_train, x_test, y_test, y_mean, y_std = diabetes(args.seed)
    model = HeteroscedasticRegression()
    model.observe(y=y_train)
    loss = fit(model, x_train, args.steps)
    print(f"final negative ELBO: {loss:.1f} ({len(y_train)} training points)")

    draws = borch.infer.predictive(
        model, x_test, num_samples=args.samples, vectorize=True
    )
    loc, scale = draws["_return"]  # (samples, test points) each
    predictions = draws["y"]  # posterior predictive draws of the test targets
    rmse = metrics.mean_squared_error(loc.mean(0), y_test).sqrt() * y_std
    log_likelihoods = torch.distributions.Normal(loc, scale).log_prob(y_test)
    nlpd = -metrics.log_predictive_density(log_likelihoods).mean() + math.log(y_std)
    coverage = {
        level: metrics.interval_coverage(predictions, y_test, level)
        for level in (0.5, 0.9)
    }
    split = metrics.regression_uncertainty(loc, scale)
    print(f"test points: {len(y_test)}")
    print(f"test RMSE: {rmse:.2f}")
    print(f"negative log predictive density: {nlpd:.3f}")
    print(f"coverage of the 50% interval: {coverage[0.5]:.3f}")
    print(f"coverage of the 90% interval: {coverage[0.9]:.3f}")
    print(
        "mean predictive variance (standardised units): aleatoric "
        f"{split.aleatoric.mean():.3f}, epistemic {split.epistemic.mean():.3f}"
    )

    folder = pathlib.Path(args.results)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "diabetes_predictive_band.png"
    plots.regression_band(
        loc.mean(0) * y_std + y_mean,
        predictions * y_std + y_mean,
        y_test * y_std + y_mean,
        path=path,
        title="Diabetes: posterior predictive band on the test set",
        xlabel="predicted mean progression",
        ylabel="disease progression",
    )
    print(f"predictive band plot: {path}")
    return {"rmse": rmse.item(), "nlpd": nlpd.item(), "coverage": coverage}


if __name__ == "__main__":
    matplotlib.use("Agg")
    main()
