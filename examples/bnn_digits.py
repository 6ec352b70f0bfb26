"""A Bayesian neural network on handwritten digits, next to its deterministic twin.

The same multilayer perceptron is written once and built twice: from ``torch.nn``
(trained by maximum likelihood) and from ``borch.nn`` (every weight and bias a random
variable with the default priors and posteriors, trained by maximising the ELBO). The
data is scikit-learn's bundled 8x8 digits (no download). After training, the script
prints test accuracy, negative log-likelihood, expected calibration error and the
mean predictive entropy on test digits and on two kinds of inputs neither network
has seen (uniform noise images and inverted digits), and writes a reliability
diagram and a histogram of predictive entropies to the results folder.

    python examples/bnn_digits.py [--results results] [--epochs 60]
"""

from __future__ import annotations

import argparse
import math
import os
import time

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from tqdm import tqdm

import borch
from borch import distributions as dist
from borch import nn as bnn
from borch.infer import analytical_kl_divergence_loss, vi_loss

HIDDEN = 128
BATCH = 64
LR = 0.01
BINS = 15  # calibration bins
DRAWS = 64  # posterior draws averaged per prediction


# ------------------------------------------------------------------------ data
def load_data(seed: int):
    """Digits scaled to [0, 1]; a stratified 75/25 split; two out-of-distribution
    sets the size of the test set."""
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=seed, stratify=y
    )
    generator = torch.Generator().manual_seed(seed)
    ood = {
        "uniform noise": torch.rand(x_test.shape, generator=generator),
        "inverted digits": 1.0 - x_test,
    }
    return x_train, y_train, x_test, y_test, ood


# ----------------------------------------------------------------------- model
def mlp(nn) -> torch.nn.Module:
    """The architecture, from either ``torch.nn`` or ``borch.nn``."""
    return nn.Sequential(
        nn.Linear(64, HIDDEN),
        nn.ReLU(),
        nn.Linear(HIDDEN, HIDDEN),
        nn.ReLU(),
        nn.Linear(HIDDEN, 10),
    )


class BayesianClassifier(bnn.Module):
    """The borch MLP with a categorical likelihood for the labels."""

    def __init__(self):
        super().__init__()
        self.net = mlp(bnn)

    def forward(self, x):
        logits = self.net(x)
        self.y = dist.Categorical(logits=logits)
        return logits


def batches(count: int, generator: torch.Generator):
    order = torch.randperm(count, generator=generator)
    return order.split(BATCH)


def train_bnn(model, x, y, epochs: int, generator) -> list[float]:
    """Minimise the negative ELBO: per batch, the batch's negative log-likelihood
    plus ``batch / N`` of the KL divergence (an unbiased estimate, up to the factor
    ``batch / N``, of the full-data negative ELBO)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    losses = []
    bar = tqdm(range(epochs), desc="Bayesian MLP", unit="epoch")
    for _ in bar:
        total = 0.0
        for index in batches(len(x), generator):
            borch.sample(model)
            model.observe(y=y[index])
            model(x[index])
            loss = vi_loss(
                **borch.pq_to_infer(model),
                kl_scaling=len(index) / len(x),
                div_fn=analytical_kl_divergence_loss,
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item()
        losses.append(total / len(x))
        bar.set_postfix(loss_per_example=f"{losses[-1]:.3f}")
    model.observe(None)
    return losses


def train_deterministic(net, x, y, epochs: int, generator) -> list[float]:
    optimizer = torch.optim.Adam(net.parameters(), lr=LR)
    losses = []
    bar = tqdm(range(epochs), desc="deterministic MLP", unit="epoch")
    for _ in bar:
        total = 0.0
        for index in batches(len(x), generator):
            loss = F.cross_entropy(net(x[index]), y[index], reduction="sum")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item()
        losses.append(total / len(x))
        bar.set_postfix(loss_per_example=f"{losses[-1]:.3f}")
    return losses


@torch.no_grad()
def predict_bnn(model, x) -> torch.Tensor:
    """Posterior predictive probabilities: the mean of the softmax over draws."""
    probabilities = torch.zeros(len(x), 10)
    for _ in range(DRAWS):
        borch.sample(model)
        probabilities += model(x).softmax(-1)
    return probabilities / DRAWS


@torch.no_grad()
def predict_deterministic(net, x) -> torch.Tensor:
    return net(x).softmax(-1)


# --------------------------------------------------------------------- metrics
def accuracy(probabilities, y) -> float:
    return float((probabilities.argmax(-1) == y).float().mean())


def nll(probabilities, y) -> float:
    picked = probabilities[torch.arange(len(y)), y]
    return float(-picked.clamp_min(1e-12).log().mean())


def entropy(probabilities) -> torch.Tensor:
    """Predictive entropy per input, in nats."""
    return -(probabilities * probabilities.clamp_min(1e-12).log()).sum(-1)


def calibration_bins(probabilities, y, bins: int = BINS):
    """Per confidence bin: mean confidence, accuracy and count."""
    confidence, predicted = probabilities.max(-1)
    correct = (predicted == y).float()
    edges = torch.linspace(0, 1, bins + 1)
    index = torch.bucketize(confidence, edges[1:-1], right=True)
    count = torch.bincount(index, minlength=bins).float()
    mean_conf = torch.bincount(index, confidence, minlength=bins) / count.clamp_min(1)
    mean_acc = torch.bincount(index, correct, minlength=bins) / count.clamp_min(1)
    return mean_conf, mean_acc, count


def expected_calibration_error(probabilities, y, bins: int = BINS) -> float:
    """ECE (Naeini et al., 2015): the count-weighted mean |accuracy - confidence|
    over equal-width confidence bins."""
    mean_conf, mean_acc, count = calibration_bins(probabilities, y, bins)
    return float(((mean_acc - mean_conf).abs() * count).sum() / count.sum())


# ----------------------------------------------------------------------- plots
def plot_reliability(results: dict, y, path: str) -> None:
    figure, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4.5))
    for axis, (name, result) in zip(np.atleast_1d(axes), results.items()):
        mean_conf, mean_acc, count = calibration_bins(result["test"], y)
        centers = (torch.arange(BINS) + 0.5) / BINS
        shown = count > 0
        axis.bar(
            centers[shown], mean_acc[shown], width=1 / BINS, edgecolor="black",
            alpha=0.7, label="accuracy",
        )
        axis.plot([0, 1], [0, 1], "k--", label="perfect calibration")
        axis.set_title(f"{name}: ECE {expected_calibration_error(result['test'], y):.3f}")
        axis.set_xlabel("confidence")
        axis.set_ylabel("accuracy")
        axis.set_xlim(0, 1)
        axis.set_ylim(0, 1)
        axis.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_entropies(results: dict, path: str) -> None:
    figure, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4), sharey=True)
    bins = np.linspace(0, math.log(10), 30)
    for axis, (name, result) in zip(np.atleast_1d(axes), results.items()):
        for label, probabilities in result.items():
            axis.hist(entropy(probabilities).numpy(), bins=bins, alpha=0.5, label=label)
        axis.set_title(name)
        axis.set_xlabel("predictive entropy (nats)")
        axis.legend()
    np.atleast_1d(axes)[0].set_ylabel("inputs")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


# ------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results", help="folder for the PNGs")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args(argv)
    start = time.perf_counter()
    torch.manual_seed(options.seed)
    x_train, y_train, x_test, y_test, ood = load_data(options.seed)
    generator = torch.Generator().manual_seed(options.seed)

    net = mlp(torch.nn)
    train_deterministic(net, x_train, y_train, options.epochs, generator)
    model = BayesianClassifier()
    train_bnn(model, x_train, y_train, options.epochs, generator)

    inputs = {"test digits": x_test, **ood}
    results = {
        "deterministic MLP": {k: predict_deterministic(net, v) for k, v in inputs.items()},
        "Bayesian MLP": {k: predict_bnn(model, v) for k, v in inputs.items()},
    }
    for result in results.values():
        result["test"] = result.pop("test digits")

    rows = {}
    for name, result in results.items():
        rows[name] = {
            "accuracy": accuracy(result["test"], y_test),
            "NLL": nll(result["test"], y_test),
            "ECE": expected_calibration_error(result["test"], y_test),
            "entropy test": float(entropy(result["test"]).mean()),
            **{f"entropy {k}": float(entropy(result[k]).mean()) for k in ood},
        }
    columns = list(next(iter(rows.values())))
    print()
    print(f"{'':20s}" + "".join(f"{c:>18s}" for c in columns))
    for name, row in rows.items():
        print(f"{name:20s}" + "".join(f"{row[c]:18.4f}" for c in columns))

    os.makedirs(options.results, exist_ok=True)
    reliability = os.path.join(options.results, "bnn_digits_reliability.png")
    histogram = os.path.join(options.results, "bnn_digits_entropy.png")
    plot_reliability(results, y_test, reliability)
    plot_entropies(
        {
            name: {
                "test digits": r["test"],
                **{k: r[k] for k in ood},
            }
            for name, r in results.items()
        },
        histogram,
    )
    print(f"\nwritten {reliability} and {histogram}")
    print(f"total time {time.perf_counter() - start:.1f} s")
    return rows


if __name__ == "__main__":
    main()
