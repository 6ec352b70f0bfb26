"""Accuracy and calibration of a Bayesian MLP under borch.nn's default priors and
posteriors, next to bayesian-torch's defaults and a plain torch twin.

The setting of the issue "Deep models done right" (item 4): scikit-learn's bundled
digits (1797 8x8 images, no download), one stratified 75/25 train/test split
(``random_state=0``, the split ``examples/bnn_digits.py`` uses with its default seed),
inputs standardised with the training pixels' mean and standard deviation for every
library; a 64-128-10 ReLU MLP trained by Adam (lr 3e-3, 60 epochs, batch 128) on the
exact minibatch ELBO (batch NLL summed + KL x B / N, no tempering); predictions
average 50 posterior draws. Accuracy and ECE (:func:`borch.metrics.
expected_calibration_error`, 15 bins) are computed the same way for every row.

Variants (``--variants``; ``--sweep`` adds every ``sweep:`` variant):

* ``borch``: ``borch.nn`` with the defaults of the installed borch;
* ``borch old defaults``: the defaults before this benchmark (``Normal(0, sqrt(2 /
  fan_in))`` weight priors, posterior scale ``exp(-5)``), kept so the comparison
  survives the change;
* ``bayesian-torch``: ``bayesian_torch.layers.LinearReparameterization`` with its
  defaults (prior ``N(0, 1)``, posterior mu ~ ``N(0, 0.1)``, rho ~ ``N(-3, 0.1)``,
  scale ``softplus(rho)``), trained with its own KL (``get_kl_loss``) x B / N.
  Skipped when bayesian-torch is not importable. Note that bayesian-torch's layer KL
  is the *mean* over a tensor's elements, not the sum, so its "KL" is the true KL
  divided by each tensor's size: its ELBO is tempered by ~1/8000 here;
* ``bayesian-torch summed KL``: the same layers with the true (summed) KL, the
  exact ELBO for bayesian-torch's parametrisation;
* ``torch``: the deterministic twin, cross-entropy, one prediction;
* ``sweep: ...``: borch.nn with a given prior factory and posterior (see ``SWEEP``).

Run ``python -m benchmarks.bnn_defaults`` (add ``--sweep`` for the sweep table in
``benchmarks/README.md``; ``--seeds 0 --epochs 10`` for a quick run). It prints one
row per variant and seed and a mean per variant, and writes
``benchmarks/results/bnn_defaults.json``. One thread; about 5 s per borch run on a
slow core.
"""

from __future__ import annotations

import argparse
import functools
import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import borch
from borch import distributions as dist
from borch import metrics, posterior, rv_factories
from borch import nn as bnn
from borch.infer import analytical_kl_divergence_loss, vi_loss

try:
    from benchmarks.harness import environment, write_json
except ImportError:  # run as a script: python benchmarks/bnn_defaults.py
    from harness import environment, write_json

CLASSES = 10
BINS = 15
SPLIT_SEED = 0


# ------------------------------------------------------------------------ data
def load_data(split_seed: int = SPLIT_SEED):
    """Standardised digits, one stratified 75/25 split (as ``examples/bnn_digits.py``
    makes it)."""
    digits = load_digits()
    pixels = torch.tensor(digits.data, dtype=torch.float32)
    labels = torch.tensor(digits.target)
    x_train, x_test, y_train, y_test = train_test_split(
        pixels, labels, test_size=0.25, random_state=split_seed, stratify=labels
    )
    mean, std = x_train.mean(), x_train.std()
    return (x_train - mean) / std, y_train, (x_test - mean) / std, y_test


def batches(count: int, size: int, generator: torch.Generator):
    return torch.randperm(count, generator=generator).split(size)


# ----------------------------------------------------------------------- borch
class BorchClassifier(bnn.Module):
    def __init__(self, hidden: int, layer_options: Callable[[], dict]):
        super().__init__()
        self.net = bnn.Sequential(
            bnn.Linear(64, hidden, **layer_options()),
            bnn.ReLU(),
            bnn.Linear(hidden, CLASSES, **layer_options()),
        )

    def forward(self, x):
        logits = self.net(x)
        self.y = dist.Categorical(logits=logits)
        return logits


def run_borch(data, options, generator, prior=None, log_scale=None, estimator=None):
    """``prior``: a prior factory (``None``: the default); ``log_scale``: the Normal
    posterior's initial log scale (``None`` with ``prior=None``: the default
    posterior); ``estimator``: the layers' gradient estimator (``None``: the
    default)."""
    x, y, x_test, _ = data

    def layer_options() -> dict:  # a posterior object per layer
        chosen = {}
        if prior is not None:
            chosen["rv_factory"] = prior
        if log_scale is not None:
            chosen["posterior"] = posterior.Normal(
                log_scale=log_scale, loc_at_prior_mean=False
            )
        if estimator is not None:
            chosen["estimator"] = estimator
        return chosen

    model = BorchClassifier(options.hidden, layer_options)
    optimizer = torch.optim.Adam(model.parameters(), lr=options.lr)
    for _ in range(options.epochs):
        for index in batches(len(x), options.batch, generator):
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
    # The network alone: assigning the likelihood under no_grad after observe(None)
    # would build an approximation of it (tests/nn/test_prediction.py).
    with torch.no_grad():
        draws = []
        for _ in range(options.draws):
            borch.sample(model)
            draws.append(model.net(x_test).softmax(-1))
    return torch.stack(draws).mean(0)


# -------------------------------------------------------------- bayesian-torch
def bayesian_torch_available() -> bool:
    try:
        import bayesian_torch.layers  # noqa: F401
    except Exception:  # not installed, or built for another torch
        return False
    return True


def true_kl(layer) -> torch.Tensor:
    """KL(q || p) summed over every weight and bias of a bayesian-torch layer."""
    total = 0.0
    for kind in ("weight", "bias"):
        mu = getattr(layer, f"mu_{kind}")
        if mu is None:
            continue
        sigma_q = F.softplus(getattr(layer, f"rho_{kind}"))
        mu_p = getattr(layer, f"prior_{kind}_mu")
        sigma_p = getattr(layer, f"prior_{kind}_sigma")
        kl = (
            sigma_p.log()
            - sigma_q.log()
            + (sigma_q**2 + (mu - mu_p) ** 2) / (2 * sigma_p**2)
            - 0.5
        )
        total = total + kl.sum()
    return total


def run_bayesian_torch(data, options, generator, summed_kl=False):
    from bayesian_torch.layers import LinearReparameterization

    x, y, x_test, _ = data
    first = LinearReparameterization(64, options.hidden)
    second = LinearReparameterization(options.hidden, CLASSES)

    def forward(inputs):
        hidden, kl_first = first(inputs)
        logits, kl_second = second(F.relu(hidden))
        if summed_kl:
            return logits, true_kl(first) + true_kl(second)
        return logits, kl_first + kl_second  # what get_kl_loss(model) returns

    parameters = [*first.parameters(), *second.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=options.lr)
    for _ in range(options.epochs):
        for index in batches(len(x), options.batch, generator):
            logits, kl = forward(x[index])
            nll = F.cross_entropy(logits, y[index], reduction="sum")
            loss = nll + kl * len(index) / len(x)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        draws = [forward(x_test)[0].softmax(-1) for _ in range(options.draws)]
    return torch.stack(draws).mean(0)


# ----------------------------------------------------------------------- torch
def run_torch(data, options, generator):
    x, y, x_test, _ = data
    net = torch.nn.Sequential(
        torch.nn.Linear(64, options.hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(options.hidden, CLASSES),
    )
    optimizer = torch.optim.Adam(net.parameters(), lr=options.lr)
    for _ in range(options.epochs):
        for index in batches(len(x), options.batch, generator):
            loss = F.cross_entropy(net(x[index]), y[index], reduction="sum")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        return net(x_test).softmax(-1)


# ----------------------------------------------------------------------- sweep
def fan_in_prior(factor: float):
    """``Normal(0, factor / sqrt(fan_in))`` on weights, ``Normal(0, 1)`` on vectors."""

    def factory(name, parameter):
        if parameter.dim() >= 2:
            return rv_factories.parameter_to_scaled_normal_rv(
                name, parameter, std_scale=factor
            )
        return rv_factories.parameter_to_normal_rv(name, parameter)

    return factory


def normal_prior(scale: float):
    """``Normal(0, scale)`` on every parameter."""
    return functools.partial(rv_factories.parameter_to_normal_rv, prior_sd=scale)


#: bayesian-torch's initial posterior scale, softplus(-3) = 0.0486
BT_LOG_SCALE = math.log(math.log1p(math.exp(-3.0)))

#: name -> (prior factory, initial log scale of the Normal posterior); every
#: posterior's loc starts at torch's initialisation of the layer
SWEEP: dict[str, tuple[Callable, float]] = {
    "He sqrt(2/fan_in), log_scale -5 (old)": (fan_in_prior(math.sqrt(2)), -5.0),
    "He sqrt(2/fan_in), log_scale -3": (fan_in_prior(math.sqrt(2)), -3.0),
    "He sqrt(2/fan_in), log_scale -7": (fan_in_prior(math.sqrt(2)), -7.0),
    "2/sqrt(fan_in), log_scale -5": (fan_in_prior(2.0), -5.0),
    "4/sqrt(fan_in), log_scale -5": (fan_in_prior(4.0), -5.0),
    "4/sqrt(fan_in), log_scale -3": (fan_in_prior(4.0), -3.0),
    "8/sqrt(fan_in), log_scale -5": (fan_in_prior(8.0), -5.0),
    "8/sqrt(fan_in), log_scale -3": (fan_in_prior(8.0), -3.0),
    "N(0, 0.3), log_scale -5": (normal_prior(0.3), -5.0),
    "N(0, 0.3), log_scale -3": (normal_prior(0.3), -3.0),
    "N(0, 1), log_scale -7": (normal_prior(1.0), -7.0),
    "N(0, 1), log_scale -6": (normal_prior(1.0), -6.0),
    "N(0, 1), log_scale -5": (normal_prior(1.0), -5.0),
    "N(0, 1), log_scale -4": (normal_prior(1.0), -4.0),
    "N(0, 1), log_scale -3 (bayesian-torch)": (normal_prior(1.0), BT_LOG_SCALE),
    "N(0, 1), log_scale -2": (normal_prior(1.0), -2.0),
    "N(0, 3), log_scale -5": (normal_prior(3.0), -5.0),
}


#: the variance-reducing estimators of ``borch.nn.estimators`` in the sweep
ESTIMATORS = ("local_reparameterization", "flipout")


def variants() -> dict[str, Callable]:
    table: dict[str, Callable] = {
        "borch": run_borch,
        "borch old defaults": functools.partial(
            run_borch, prior=fan_in_prior(math.sqrt(2)), log_scale=-5.0
        ),
    }
    if bayesian_torch_available():
        table["bayesian-torch"] = run_bayesian_torch
        table["bayesian-torch summed KL"] = functools.partial(
            run_bayesian_torch, summed_kl=True
        )
    table["torch"] = run_torch
    for name, (prior, log_scale) in SWEEP.items():
        table[f"sweep: {name}"] = functools.partial(
            run_borch, prior=prior, log_scale=log_scale
        )
    for estimator in ESTIMATORS:
        for log_scale in (-6.0, -5.0, -4.0):
            table[f"sweep: N(0, 1), log_scale {log_scale:g}, {estimator}"] = (
                functools.partial(
                    run_borch,
                    prior=normal_prior(1.0),
                    log_scale=log_scale,
                    estimator=estimator,
                )
            )
    return table


# ------------------------------------------------------------------------ main
def evaluate(probs: torch.Tensor, labels: torch.Tensor) -> dict:
    picked = probs[torch.arange(len(labels)), labels]
    return {
        "accuracy": float(metrics.accuracy(probs.argmax(-1), labels)),
        "ECE": float(metrics.expected_calibration_error(probs, labels, n_bins=BINS)),
        "NLL": float(-picked.clamp_min(1e-12).log().mean()),
    }


def parse(argv: list[str] | None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--draws", type=int, default=50, help="predictive draws")
    parser.add_argument(
        "--variants",
        nargs="+",
        default=None,
        help="names (or name prefixes) of the variants to run; default: every "
        "non-sweep variant",
    )
    parser.add_argument("--sweep", action="store_true", help="also run the sweep")
    parser.add_argument("--output", default="bnn_defaults", help="JSON file name")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    options = parse(argv)
    torch.set_num_threads(1)
    available = variants()
    if options.variants:
        chosen = [
            name
            for name in available
            if any(name.startswith(prefix) for prefix in options.variants)
        ]
    else:
        chosen = [
            name
            for name in available
            if options.sweep or not name.startswith("sweep: ")
        ]
    if not bayesian_torch_available():
        print("bayesian-torch is not importable: its rows are skipped")
    data = load_data()
    results: dict[str, dict] = {}
    print(f"{'variant':58s} {'seed':>4s} {'accuracy':>9s} {'ECE':>7s} {'NLL':>7s}")
    for name in chosen:
        results[name] = {}
        for seed in options.seeds:
            torch.manual_seed(seed)
            generator = torch.Generator().manual_seed(seed)
            start = time.perf_counter()
            probs = available[name](data, options, generator)
            row = evaluate(probs, data[3])
            row["seconds"] = time.perf_counter() - start
            results[name][seed] = row
            print(
                f"{name:58s} {seed:4d} {row['accuracy']:9.4f} {row['ECE']:7.4f} "
                f"{row['NLL']:7.4f}",
                flush=True,
            )
    print(
        "\nper variant over seeds", options.seeds, "(accuracy, ECE as min / mean / max)"
    )
    for name, rows in results.items():
        acc = [r["accuracy"] for r in rows.values()]
        ece = [r["ECE"] for r in rows.values()]
        print(
            f"{name:58s} acc {min(acc):.3f}/{sum(acc) / len(acc):.3f}/{max(acc):.3f}"
            f"  ECE {min(ece):.3f}/{sum(ece) / len(ece):.3f}/{max(ece):.3f}"
        )
    payload = {
        "settings": vars(options) | {"split_seed": SPLIT_SEED, "ece_bins": BINS},
        "environment": environment(),
        "results": results,
    }
    print("\nwrote", write_json(options.output, payload))
    return results


if __name__ == "__main__":
    main()
