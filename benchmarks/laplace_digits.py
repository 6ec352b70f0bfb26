"""Laplace on a MAP-trained MLP: borch next to laplace-torch on the same network.

The setting of the Laplace issue: a 64-128-10 MLP trained by maximum a posteriori
(Adam, lr 3e-3, weight decay 1e-4, 100 epochs, batches of 128, cross-entropy) on
scikit-learn's bundled digits (pixels / 16), test split 30% with ``random_state=0``,
``torch.manual_seed(0)``. Each configuration is fitted by borch
(``nn.borchify_network(net, posterior_creator=PointMass)`` and
:func:`borch.infer.laplace_posterior`) and, when ``laplace`` (laplace-torch) is
importable, by laplace-torch, both with the prior precision maximising the log
marginal likelihood; the table reports test accuracy, NLL, ECE (15 bins), the
seconds to fit and predict, and the AUROC of the predictive entropy for telling test
digits from inverted digits and from uniform noise images.

The validation rows train a second network on 80% of the training split and pick
the prior precision of a last-layer KFAC on the other 20% (borch:
``optimize_prior_precision("validation", rule=..., link=...)`` with the rules
``"one_standard_error"``, the default, and ``"best"``; laplace-torch:
``optimize_prior_precision(method="gridsearch", val_loader=...)``), next to the
same network with the prior its weight decay implies (precision ``weight_decay *
N``) and the one maximising the log marginal likelihood.

Run ``python benchmarks/laplace_digits.py [--seeds N]`` (writes
``benchmarks/results/laplace_digits.json``); PYTHONPATH must reach borch's ``src``
when run from another environment.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import pathlib
import time

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

import borch
from borch import distributions as dist
from borch import nn as bnn

try:
    import laplace as laplace_torch
except ImportError:  # the anchor is optional
    laplace_torch = None

BINS = 15
SAMPLES = 200
CONFIGS = [
    # name, subset, structure, link
    ("last layer, KFAC, GLM, MC", "last_layer", "kfac", "mc"),
    ("last layer, KFAC, GLM, probit", "last_layer", "kfac", "probit"),
    ("last layer, full, GLM, MC", "last_layer", "full", "mc"),
    ("all weights, KFAC, GLM, MC", None, "kfac", "mc"),
    ("all weights, diagonal, GLM, MC", None, "diag", "mc"),
]


def data():
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16
    y = torch.tensor(digits.target)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.3, random_state=0
    )
    generator = torch.Generator().manual_seed(0)
    ood = {
        "inverted": 1 - x_test,
        "noise": torch.rand(x_test.shape, generator=generator),
    }
    return x_train, y_train, x_test, y_test, ood


def train_map(x, y, seed=0):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)
    )
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3, weight_decay=1e-4)
    for _ in range(100):
        for index in torch.randperm(len(x)).split(128):
            optimizer.zero_grad()
            F.cross_entropy(net(x[index]), y[index]).backward()
            optimizer.step()
    return net


class Classifier(bnn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = bnn.borchify_network(
            net, posterior_creator=borch.posterior.PointMass
        )

    def forward(self, x):
        logits = self.net(x)
        self.y = dist.Categorical(logits=logits)
        return logits


def metrics(probs, y, ood_probs):
    probs = probs.double().clamp_min(1e-12)
    nll = -probs[torch.arange(len(y)), y].log().mean().item()
    confidence, predicted = probs.max(-1)
    correct = (predicted == y).double()
    edges = torch.linspace(0, 1, BINS + 1, dtype=torch.float64)
    ece = 0.0
    for low, high in itertools.pairwise(edges):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            gap = (confidence[inside].mean() - correct[inside].mean()).abs()
            ece += inside.double().mean().item() * gap.item()

    def entropy(p):
        p = p.double().clamp_min(1e-12)
        return -(p * p.log()).sum(-1)

    aurocs = {}
    for name, other in ood_probs.items():
        scores = torch.cat([entropy(probs), entropy(other)])
        labels = torch.cat([torch.zeros(len(probs)), torch.ones(len(other))])
        aurocs[name] = roc_auc_score(labels.numpy(), scores.numpy())
    return {
        "accuracy": correct.mean().item(),
        "nll": nll,
        "ece": ece,
        "auroc_inverted": aurocs["inverted"],
        "auroc_noise": aurocs["noise"],
    }


def borch_run(net, x, y, x_test, ood, subset, structure, link, prior, rule=None):
    """``prior``: a number, ``"marginal_likelihood"`` or ``(args, targets)`` of a
    validation set, to choose by ``rule`` on the ``link`` predictive."""
    torch.manual_seed(0)
    start = time.perf_counter()
    model = Classifier(net)
    model.observe(y=y)

    def closure():
        borch.sample(model)
        model(x)

    approx = borch.infer.laplace_posterior(
        model,
        closure,
        structure=structure,
        subset=subset,
        prior_precision=prior if rule is None else None,
    )
    if rule is not None:
        approx.optimize_prior_precision(
            "validation", validation=prior, rule=rule, link=link
        )

    def predict(inputs):
        generator = torch.Generator().manual_seed(0)
        predictive = approx.predictive(
            inputs, link=link, num_samples=SAMPLES, generator=generator
        )["y"]
        return predictive.probs.mean(0) if link == "mc" else predictive.probs

    probs = predict(x_test)
    seconds = time.perf_counter() - start
    return probs, {k: predict(v) for k, v in ood.items()}, seconds, approx


def laplace_torch_run(net, x, y, x_test, ood, subset, structure, link, validation=None):
    torch.manual_seed(0)
    start = time.perf_counter()
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=128
    )
    la = laplace_torch.Laplace(
        net,
        "classification",
        subset_of_weights="last_layer" if subset else "all",
        hessian_structure={"kfac": "kron"}.get(structure, structure),
    )
    la.fit(loader)
    if validation is None:
        la.optimize_prior_precision(method="marglik")
    else:
        val_loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(*validation), batch_size=128
        )
        la.optimize_prior_precision(
            method="gridsearch",
            val_loader=val_loader,
            pred_type="glm",
            link_approx="probit",
        )

    def predict(inputs):
        with torch.no_grad():
            return la(inputs, pred_type="glm", link_approx=link, n_samples=SAMPLES)

    probs = predict(x_test)
    seconds = time.perf_counter() - start
    return probs, {k: predict(v) for k, v in ood.items()}, seconds


def point_nll(probs, y):
    return -probs.double().clamp_min(1e-12)[torch.arange(len(y)), y].log()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument(
        "--seeds",
        type=int,
        default=0,
        help="repeat the validation rows (borch only) for networks trained from "
        "seeds 1..SEEDS (the data split stays)",
    )
    options = parser.parse_args()
    torch.set_num_threads(1)
    x_train, y_train, x_test, y_test, ood = data()
    rows = []
    map_nll = []  # per test point, of the latest MAP row

    def add(name, library, probs, ood_probs, seconds, extra=None):
        row = {"configuration": name, "library": library, "seconds": seconds}
        row.update(metrics(probs, y_test, ood_probs))
        row.update(extra or {})
        nll = point_nll(probs, y_test)
        if library == "torch":
            map_nll[:] = [nll]
        else:  # against MAP on the same test points: mean and standard error
            difference = nll - map_nll[0]
            row["nll_minus_map"] = difference.mean().item()
            row["nll_minus_map_se"] = (difference.std() / len(nll) ** 0.5).item()
        rows.append(row)
        print(
            f"{name:36} {library:14} acc {row['accuracy']:.3f} NLL {row['nll']:.4f} "
            f"ECE {row['ece']:.3f} AUROC inv {row['auroc_inverted']:.3f} noise "
            f"{row['auroc_noise']:.3f} {seconds:6.2f}s "
            f"precision {row.get('prior_precision', float('nan')):.4g} NLL - MAP "
            f"{row.get('nll_minus_map', 0):+.4f} +- {row.get('nll_minus_map_se', 0):.4f}",
            flush=True,
        )

    def add_map(name, net):
        with torch.no_grad():
            probs = net(x_test).softmax(-1)
            add(
                name, "torch", probs, {k: net(v).softmax(-1) for k, v in ood.items()}, 0
            )

    def add_borch(name, *run_args, **run_kwargs):
        probs, ood_probs, seconds, approx = borch_run(*run_args, **run_kwargs)
        precision = {"prior_precision": float(approx.prior_precision[0])}
        add(name, "borch", probs, ood_probs, seconds, precision)

    def compare(name, net, x, y, subset, structure, link):
        """borch's row and, when installed, laplace-torch's for one configuration."""
        add_borch(
            name, net, x, y, x_test, ood, subset, structure, link, "marginal_likelihood"
        )
        if laplace_torch is not None:
            anchor = laplace_torch_run(net, x, y, x_test, ood, subset, structure, link)
            add(name, "laplace-torch", *anchor)

    net = train_map(x_train, y_train)
    add_map("MAP", net)
    for name, subset, structure, link in CONFIGS:
        compare(name, net, x_train, y_train, subset, structure, link)

    # the prior of a last-layer KFAC by a validation set: a network trained on 80% of
    # the training split, the prior chosen on the other 20%
    x_fit, x_val, y_fit, y_val = train_test_split(
        x_train, y_train, test_size=0.2, random_state=0
    )
    validation = ((x_val,), {"y": y_val})
    for seed in range(options.seeds + 1):
        tag = "" if seed == 0 else f", seed {seed}"
        small = train_map(x_fit, y_fit, seed)
        add_map(f"MAP (80% of training){tag}", small)
        fit = (small, x_fit, y_fit, x_test, ood, "last_layer", "kfac")
        for link in ("mc", "probit"):
            for rule in ("one_standard_error", "best"):
                name = f"last layer, KFAC, {link}, validation, {rule}{tag}"
                add_borch(name, *fit, link, validation, rule=rule)
            if seed:
                continue
            if laplace_torch is not None:
                anchor = laplace_torch_run(*fit, link, (x_val, y_val))
                add(f"last layer, KFAC, {link}, validation", "laplace-torch", *anchor)
            weight_decay = 1e-4 * len(x_fit)
            add_borch(
                f"last layer, KFAC, {link}, weight decay x N", *fit, link, weight_decay
            )
            add_borch(
                f"last layer, KFAC, {link}, marginal likelihood",
                *fit,
                link,
                "marginal_likelihood",
            )
    folder = pathlib.Path(__file__).parent / "results"
    folder.mkdir(exist_ok=True)
    (folder / "laplace_digits.json").write_text(json.dumps(rows, indent=2))
    assert math.isfinite(sum(r["nll"] for r in rows))


if __name__ == "__main__":
    main()
