"""NUTS on a Bayesian logistic regression: minimum bulk ESS per second.

The model: scikit-learn's breast-cancer data (569 x 30, standardised features),
``w ~ Normal(0, 1)``, ``b ~ Normal(0, 5)``, ``y ~ Bernoulli(logits=x @ w + b)``; one
chain, 500 warm-up iterations and 500 draws, one torch thread. Three samplers run in
the same process, interleaved:

* ``borch``: ``borch.infer.mcmc`` on the model written as a ``borch.Module``;
* ``plain torch``: borch's NUTS kernel on the same log density written by hand in
  torch (autograd gradient): the cost of the sampler without any model machinery;
* ``pyro``: Pyro's NUTS with ``jit_compile=False`` (skipped if Pyro is missing).

Each run's time is its wall-clock time from the model to the draws (for borch this
includes copying and tracing the model); imports and one-off initialisation are paid
by an untimed warm-up run of each sampler first. ESS is ArviZ's bulk ESS, the minimum
over the 31 coordinates. The summary reports medians over the repeats and the ratios
of the medians. Results go to ``benchmarks/results/nuts_logistic.json``.

Run: ``python benchmarks/nuts_logistic.py [--repeats 3] [--pyro-repeats 2]``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import pathlib
import platform
import statistics
import time
import warnings

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer

import borch
from borch import distributions as dist
from borch.infer.hmc.hamiltonian import initial_state
from borch.infer.hmc.result import import_arviz
from borch.infer.hmc.runner import Settings, sample_chain

WARMUP, DRAWS = 500, 500


def breast_cancer() -> tuple[torch.Tensor, torch.Tensor]:
    features, labels = load_breast_cancer(return_X_y=True)
    features = (features - features.mean(0)) / features.std(0)
    return (
        torch.tensor(features, dtype=torch.float32),
        torch.tensor(labels, dtype=torch.float32),
    )


def min_bulk_ess(draws: dict[str, np.ndarray]) -> float:
    """The smallest bulk ESS over every coordinate of ``{name: (chains, draws, ...)}``."""
    arviz = import_arviz()
    ess = arviz.ess(arviz.convert_to_dataset(draws), method="bulk")
    return float(min(ess[name].values.min() for name in draws))


class LogisticRegression(borch.Module):
    def forward(self, x):
        self.w = dist.Normal(torch.zeros(x.shape[1]), 1.0)
        self.b = dist.Normal(0.0, 5.0)
        self.y = dist.Bernoulli(logits=x @ self.w + self.b)
        return self.y


def run_borch(x, y, seed, warmup=WARMUP, draws=DRAWS):
    start = time.perf_counter()
    model = LogisticRegression()
    model.observe(y=y)
    result = borch.infer.mcmc(
        model, x, num_samples=draws, warmup=warmup, chains=1, seed=seed, progress=False
    )
    seconds = time.perf_counter() - start
    ess = min_bulk_ess({name: value.numpy() for name, value in result.samples.items()})
    return {
        "seconds": seconds,
        "min_ess_bulk": ess,
        "ess_per_second": ess / seconds,
        "leapfrog_steps_in_draws": int(result.num_steps.sum()),
        "divergent": result.num_divergent,
        "traced": result.traced,
    }


def run_plain_torch(x, y, seed, warmup=WARMUP, draws=DRAWS):
    """borch's NUTS kernel on a hand-written torch log density."""

    def potential(position):
        q = torch.from_numpy(position).requires_grad_(True)
        w, b = q[:-1], q[-1]
        energy = (
            0.5 * (w * w).sum()
            + 0.5 * (b / 5.0) ** 2
            + torch.nn.functional.binary_cross_entropy_with_logits(
                x @ w + b, y, reduction="sum"
            )
        )
        (grad,) = torch.autograd.grad(energy, q)
        return energy.item(), grad.numpy()

    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    position = rng.uniform(-2, 2, x.shape[1] + 1).astype(np.float32)
    chain = sample_chain(
        potential,
        initial_state(position, potential),
        Settings(draws, warmup, 0.8, 10),
        rng,
    )
    seconds = time.perf_counter() - start
    positions = chain["positions"][None]
    ess = min_bulk_ess({"w": positions[..., :-1], "b": positions[..., -1]})
    return {"seconds": seconds, "min_ess_bulk": ess, "ess_per_second": ess / seconds}


def run_pyro(x, y, seed, warmup=WARMUP, draws=DRAWS):
    import pyro
    import pyro.distributions as pdist
    from pyro.infer import MCMC, NUTS

    def model(x, y):
        w = pyro.sample("w", pdist.Normal(torch.zeros(x.shape[1]), 1.0).to_event(1))
        b = pyro.sample("b", pdist.Normal(0.0, 5.0))
        pyro.sample("y", pdist.Bernoulli(logits=x @ w + b).to_event(1), obs=y)

    pyro.set_rng_seed(seed)
    start = time.perf_counter()
    sampler = MCMC(
        NUTS(model, jit_compile=False),
        num_samples=draws,
        warmup_steps=warmup,
        num_chains=1,
        disable_progbar=True,
    )
    sampler.run(x, y)
    seconds = time.perf_counter() - start
    samples = sampler.get_samples(group_by_chain=True)
    ess = min_bulk_ess({name: value.numpy() for name, value in samples.items()})
    return {"seconds": seconds, "min_ess_bulk": ess, "ess_per_second": ess / seconds}


def pyro_available() -> bool:
    try:
        import pyro  # noqa: F401
    except ImportError:
        return False
    return True


def median_summary(runs: list[dict]) -> dict:
    return {
        key: statistics.median(run[key] for run in runs)
        for key in ("seconds", "min_ess_bulk", "ess_per_second")
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of borch")
    parser.add_argument("--pyro-repeats", type=int, default=2, help="runs of Pyro")
    parser.add_argument(
        "--output",
        default=str(pathlib.Path(__file__).parent / "results" / "nuts_logistic.json"),
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    x, y = breast_cancer()
    samplers = {"borch": run_borch, "plain torch": run_plain_torch}
    if pyro_available():
        samplers["pyro"] = run_pyro
    else:
        print("Pyro is not installed: its runs are skipped")
    for run in samplers.values():  # imports and one-off set-up, untimed
        with warnings.catch_warnings():
            # 20 warm-up iterations cannot adapt the step size; say nothing about it
            warnings.simplefilter("ignore", RuntimeWarning)
            run(x, y, seed=0, warmup=20, draws=20)
    runs: dict[str, list[dict]] = {name: [] for name in samplers}
    for repeat in range(args.repeats):
        for name, run in samplers.items():
            if name == "pyro" and repeat >= args.pyro_repeats:
                continue
            outcome = run(x, y, seed=repeat + 1)
            runs[name].append(outcome)
            print(
                f"{name:12s} run {repeat + 1}: {outcome['seconds']:6.1f} s, "
                f"min bulk ESS {outcome['min_ess_bulk']:6.0f}, "
                f"{outcome['ess_per_second']:6.1f} ESS/s",
                flush=True,
            )
    medians = {name: median_summary(found) for name, found in runs.items() if found}
    ratios = {}
    for other in ("plain torch", "pyro"):
        if other in medians:
            ratios[f"borch / {other}"] = (
                medians["borch"]["ess_per_second"] / medians[other]["ess_per_second"]
            )
    print("\nmedian min bulk ESS per second:")
    for name, summary in medians.items():
        print(f"  {name:12s} {summary['ess_per_second']:7.1f}")
    for name, ratio in ratios.items():
        print(f"  {name}: {ratio:.2f}x")
    report = {
        "benchmark": "nuts_logistic",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "settings": {"warmup": WARMUP, "draws": DRAWS, "chains": 1, "threads": 1},
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "pyro": _version("pyro"),
        },
        "runs": runs,
        "medians": medians,
        "ratios": {k: v for k, v in ratios.items() if math.isfinite(v)},
    }
    output = pathlib.Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2))
    print(f"\nwritten to {output}")
    return report


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except ImportError:
        return None


if __name__ == "__main__":
    main()
