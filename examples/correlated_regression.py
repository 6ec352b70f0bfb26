"""A regression on collinear predictors: mean-field VI, full-rank VI and NUTS
==========================================================================

The weights of strongly correlated predictors have a strongly correlated posterior.
``posterior.Normal`` (mean-field) fits each weight on its own and comes out far too
narrow; ``posterior.MultivariateNormal`` fits them jointly and matches NUTS (and the
exact conjugate posterior, known here because the noise scale is). A pair plot of
the three is written to ``results/correlated_regression_pairs.png``.

Run ``python examples/correlated_regression.py`` (about 20 seconds on two slow
cores); ``--help`` lists the options.
"""

import argparse
import pathlib

import matplotlib
import torch

import borch
from borch import distributions as dist
from borch import infer, posterior
from borch.random_variable import particles

NOISE = 0.5


def data(seed=0, n=40):
    generator = torch.Generator().manual_seed(seed)
    common = torch.randn(n, 1, generator=generator)
    x = common + 0.2 * torch.randn(n, 3, generator=generator)
    y = x @ torch.tensor([1.0, -0.5, 0.8]) + NOISE * torch.randn(n, generator=generator)
    return x, y


class Regression(borch.Module):
    """w ~ Normal(0, 1); y ~ Normal(x @ w, 0.5), broadcasting over particles."""

    def forward(self, x):
        self.w = dist.Normal(torch.zeros(x.shape[1]), 1.0)
        self.y = dist.Normal((x * self.w.unsqueeze(-2)).sum(-1), NOISE)
        return self.y


def fit_vi(family, x, y, steps, draws):
    torch.manual_seed(0)
    model = Regression(posterior=family)
    model.observe(y=y)
    model(x)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.03)
    for _ in range(steps):
        optimizer.zero_grad()
        infer.particle_vi_loss(model, x, num_particles=16).backward()
        optimizer.step()
    with torch.no_grad(), particles(draws, 1):
        borch.sample(model)
        model(x)
        samples = model.w.clone()
    borch.sample(model)
    return samples


def exact(x, y):
    precision = x.T @ x / NOISE**2 + torch.eye(x.shape[1])
    covariance = torch.linalg.inv(precision)
    return covariance @ x.T @ y / NOISE**2, covariance


def pair_plot(samples, path):
    from matplotlib import pyplot

    colours = {"Normal": "tab:red", "MultivariateNormal": "tab:blue", "NUTS": "k"}
    figure, axes = pyplot.subplots(3, 3, figsize=(8, 8))
    for i in range(3):
        for j in range(3):
            axis = axes[i, j]
            for name, draws in samples.items():
                if i == j:
                    axis.hist(
                        draws[:, i],
                        bins=40,
                        density=True,
                        histtype="step",
                        color=colours[name],
                        label=name,
                    )
                elif i > j:
                    axis.scatter(
                        draws[:, j], draws[:, i], s=2, alpha=0.3, color=colours[name]
                    )
                else:
                    axis.axis("off")
            if i == 2:
                axis.set_xlabel(f"w[{j}]")
            if j == 0 and i > 0:
                axis.set_ylabel(f"w[{i}]")
    axes[0, 0].legend(fontsize=7, loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=800, help="VI steps")
    parser.add_argument("--samples", type=int, default=600, help="NUTS draws per chain")
    parser.add_argument("--warmup", type=int, default=400, help="NUTS warm-up")
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--results", default="results", help="folder for the plot")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    x, y = data()
    mean, covariance = exact(x, y)
    samples = {
        "Normal": fit_vi(posterior.Normal(), x, y, args.steps, 2000),
        "MultivariateNormal": fit_vi(
            posterior.MultivariateNormal(), x, y, args.steps, 2000
        ),
    }
    model = Regression()
    model.observe(y=y)
    result = infer.mcmc(
        model,
        x,
        num_samples=args.samples,
        warmup=args.warmup,
        chains=args.chains,
        seed=0,
        progress=not args.no_progress,
    )
    samples["NUTS"] = result.samples["w"].reshape(-1, 3)

    sd = covariance.diagonal().sqrt()
    print(f"exact posterior sd: {[round(v, 3) for v in sd.tolist()]}")
    print(f"exact correlation w[0], w[1]: {covariance[0, 1] / sd[0] / sd[1]:.3f}")
    for name, draws in samples.items():
        fitted = torch.cov(draws.T)
        fitted_sd = fitted.diagonal().sqrt()
        print(
            f"{name:>18}: mean error / sd "
            f"{((draws.mean(0) - mean) / sd).abs().max():.2f}, sd / exact sd "
            f"{[round(v, 2) for v in (fitted_sd / sd).tolist()]}, correlation "
            f"w[0], w[1] {fitted[0, 1] / fitted_sd[0] / fitted_sd[1]:.3f}"
        )
    folder = pathlib.Path(args.results)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "correlated_regression_pairs.png"
    pair_plot({k: v.numpy() for k, v in samples.items()}, path)
    print(f"pair plot: {path}")
    return samples


if __name__ == "__main__":
    matplotlib.use("Agg")
    main()
