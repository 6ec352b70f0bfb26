"""NUTS side by side with NumPyro: minimum bulk ESS per wall-clock second.

Three workloads, 4 chains of 1000 warm-up iterations and 1000 draws each:

* ``logistic``: scikit-learn's breast-cancer data (569 x 30, standardised features),
  ``w ~ Normal(0, 1)``, ``b ~ Normal(0, 5)``, ``y ~ Bernoulli(logits=x @ w + b)``
  (31 dimensions, diagonal mass matrix, float32);
* ``kidiq``: posteriordb's kidiq-kidscore_momhsiq (uncentred predictors, intercept and
  slope at correlation -0.95) with a dense mass matrix (``dense_mass=True`` in both),
  float64;
* ``mesquite``: posteriordb's mesquite-logmesquite_logvas (8 dimensions, correlated
  log predictors, 46 points), diagonal mass matrix, float64. (The issue's third
  workload, nes1972, has no data on this machine; mesquite stands in for it.)

Stan's flat priors are ``Normal(0, 1000)`` (coefficients) and ``HalfNormal(1000)``
(mesquite's sigma) in both libraries.

borch runs ``borch.infer.mcmc`` with each ``--chain-method`` given (default
``parallel``, chains in worker processes, one per core: its fastest on a 2-core CPU
with 4 chains; ``vectorized`` is all chains as one batched computation,
``sequential`` one chain after the other) in this process, after an untimed short run
that pays the imports and compiles the traced potential; its time is that of the
``mcmc`` call (copying and tracing the model included). *borch cold* is the same
``mcmc`` call as the first in a fresh process with empty caches
(``BORCH_CACHE_DIR`` and ``NUMBA_CACHE_DIR`` in a new temporary folder), so
numba's import and compilation are timed in, as JAX's compilation is in NumPyro
cold. ``--chains``, ``--warmup`` and ``--draws`` change the run for every
sampler. NumPyro runs in a fresh
process per workload (``--numpyro-python``, a Python with jax and numpyro;
``chain_method="vectorized"``, its fastest here): *cold* is its first run there (JIT
compilation included), *warm* a second run in the same process. Pyro
(``--pyro-python``, ``jit_compile=False``, chains one after the other) is skipped
unless given: it is an order of magnitude slower. ESS is ArviZ's bulk ESS, the
minimum over every coordinate. Medians over ``--repeats``. Results go to
``benchmarks/results/nuts_numpyro.json``.

Run: ``python benchmarks/nuts_numpyro.py --numpyro-python /tmp/env16/bin/python``
(add ``--chain-method parallel vectorized sequential --chains 16`` to compare borch's
chain methods on 16 chains).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

WARMUP, DRAWS, CHAINS = 1000, 1000, 4
FLAT_SD = 1000.0
POSTERIORDB = pathlib.Path(__file__).parents[1] / "tests" / "data" / "posteriordb"
WORKLOADS = ("logistic", "kidiq", "mesquite")
DENSE = {"logistic": False, "kidiq": True, "mesquite": False}


def data(workload: str) -> dict[str, np.ndarray]:
    """The workload's data as numpy arrays (``x`` with an intercept column where the
    model has one, ``y``)."""
    if workload == "logistic":
        from sklearn.datasets import load_breast_cancer

        x, y = load_breast_cancer(return_X_y=True)
        x = (x - x.mean(0)) / x.std(0)
        return {"x": x.astype(np.float32), "y": y.astype(np.float32)}
    if workload == "kidiq":
        d = json.loads((POSTERIORDB / "kidiq-kidscore_momhsiq.json").read_text())[
            "data"
        ]
        x = np.stack([np.ones(d["N"]), d["mom_hs"], d["mom_iq"]], 1)
        return {"x": x, "y": np.array(d["kid_score"], dtype=np.float64)}
    d = json.loads((POSTERIORDB / "mesquite-logmesquite_logvas.json").read_text())
    d = {k: np.array(v, dtype=np.float64) for k, v in d["data"].items() if k != "N"}
    x = np.stack(
        [
            np.ones_like(d["weight"]),
            np.log(d["diam1"] * d["diam2"] * d["canopy_height"]),
            np.log(d["diam1"] * d["diam2"]),
            np.log(d["diam1"] / d["diam2"]),
            np.log(d["total_height"]),
            np.log(d["density"]),
            d["group"],
        ],
        1,
    )
    return {"x": x, "y": np.log(d["weight"])}


def min_bulk_ess(draws: dict[str, np.ndarray]) -> float:
    """The smallest bulk ESS over every coordinate of ``{name: (chains, draws, ...)}``."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz

    ess = arviz.ess(arviz.convert_to_dataset(draws), method="bulk")
    return float(min(ess[name].values.min() for name in draws))


def outcome(seconds: float, draws: dict, steps: np.ndarray) -> dict:
    ess = min_bulk_ess(draws)
    return {
        "seconds": seconds,
        "min_ess_bulk": ess,
        "ess_per_second": ess / seconds,
        "leapfrog_steps_per_draw": float(np.mean(steps)),
    }


# --- borch ---------------------------------------------------------------------------


def borch_model(workload: str):
    import torch

    import borch
    from borch import distributions as dist

    class Logistic(borch.Module):
        def forward(self, x):
            self.w = dist.Normal(torch.zeros(x.shape[1]), 1.0)
            self.b = dist.Normal(0.0, 5.0)
            self.y = dist.Bernoulli(logits=x @ self.w + self.b)

    class Regression(borch.Module):
        def __init__(self, sigma_prior):
            super().__init__()
            self.sigma_prior = sigma_prior

        def forward(self, x):
            self.beta = dist.Normal(torch.zeros(x.shape[1], dtype=x.dtype), FLAT_SD)
            self.sigma = self.sigma_prior(torch.tensor(1.0, dtype=x.dtype))
            self.y = dist.Normal(x @ self.beta, self.sigma)

    arrays = {k: torch.from_numpy(v) for k, v in data(workload).items()}
    if workload == "logistic":
        model = Logistic()
    elif workload == "kidiq":
        model = Regression(lambda one: dist.HalfCauchy(2.5 * one))
    else:
        model = Regression(lambda one: dist.HalfNormal(FLAT_SD * one))
    model.observe(y=arrays["y"])
    return model, arrays["x"]


def run_borch(
    workload: str,
    seed: int,
    warmup=WARMUP,
    draws=DRAWS,
    chains=CHAINS,
    chain_method="parallel",
) -> dict:
    import borch

    model, x = borch_model(workload)
    start = time.perf_counter()
    result = borch.infer.mcmc(
        model,
        x,
        num_samples=draws,
        warmup=warmup,
        chains=chains,
        seed=seed,
        progress=False,
        dense_mass=DENSE[workload],
        chain_method=chain_method,
    )
    seconds = time.perf_counter() - start
    samples = {name: value.numpy() for name, value in result.samples.items()}
    return outcome(seconds, samples, result.num_steps.numpy())


# --- NumPyro and Pyro, each in its own process ------------------------------------


def run_numpyro(
    workload: str, seeds: list[int], warmup=WARMUP, draws=DRAWS, chains=CHAINS
) -> list[dict]:
    """Runs in a Python with jax and numpyro: the first run is cold."""
    import jax

    if workload != "logistic":
        jax.config.update("jax_enable_x64", True)
    import numpyro
    import numpyro.distributions as ndist
    from numpyro.infer import MCMC, NUTS

    arrays = data(workload)
    x, y = arrays["x"], arrays["y"]

    def model(x, y):
        if workload == "logistic":
            w = numpyro.sample("w", ndist.Normal(np.zeros(x.shape[1]), 1.0).to_event(1))
            b = numpyro.sample("b", ndist.Normal(0.0, 5.0))
            numpyro.sample("y", ndist.Bernoulli(logits=x @ w + b), obs=y)
            return
        beta = numpyro.sample(
            "beta", ndist.Normal(np.zeros(x.shape[1]), FLAT_SD).to_event(1)
        )
        if workload == "kidiq":
            sigma = numpyro.sample("sigma", ndist.HalfCauchy(2.5))
        else:
            sigma = numpyro.sample("sigma", ndist.HalfNormal(FLAT_SD))
        numpyro.sample("y", ndist.Normal(x @ beta, sigma), obs=y)

    runs = []
    for seed in seeds:
        start = time.perf_counter()
        sampler = MCMC(
            NUTS(model, dense_mass=DENSE[workload]),
            num_warmup=warmup,
            num_samples=draws,
            num_chains=chains,
            chain_method="vectorized",
            progress_bar=False,
        )
        sampler.run(jax.random.PRNGKey(seed), x, y, extra_fields=("num_steps",))
        samples = jax.block_until_ready(sampler.get_samples(group_by_chain=True))
        seconds = time.perf_counter() - start
        steps = np.asarray(sampler.get_extra_fields()["num_steps"])
        runs.append(
            outcome(seconds, {k: np.asarray(v) for k, v in samples.items()}, steps)
        )
    return runs


def run_pyro(
    workload: str, seeds: list[int], warmup=WARMUP, draws=DRAWS, chains=CHAINS
) -> list[dict]:
    """Runs in a Python with pyro (chains one after the other, no JIT)."""
    import pyro
    import pyro.distributions as pdist
    import torch
    from pyro.infer import MCMC, NUTS

    torch.set_num_threads(1)
    arrays = {k: torch.from_numpy(v) for k, v in data(workload).items()}

    def model(x, y):
        if workload == "logistic":
            w = pyro.sample("w", pdist.Normal(torch.zeros(x.shape[1]), 1.0).to_event(1))
            b = pyro.sample("b", pdist.Normal(0.0, 5.0))
            pyro.sample("y", pdist.Bernoulli(logits=x @ w + b).to_event(1), obs=y)
            return
        one = torch.tensor(1.0, dtype=x.dtype)
        beta = pyro.sample(
            "beta",
            pdist.Normal(torch.zeros(x.shape[1], dtype=x.dtype), FLAT_SD).to_event(1),
        )
        prior = (
            pdist.HalfCauchy(2.5 * one)
            if workload == "kidiq"
            else (pdist.HalfNormal(FLAT_SD * one))
        )
        sigma = pyro.sample("sigma", prior)
        pyro.sample("y", pdist.Normal(x @ beta, sigma).to_event(1), obs=y)

    runs = []
    for seed in seeds:
        pyro.set_rng_seed(seed)
        start = time.perf_counter()
        sampler = MCMC(
            NUTS(model, jit_compile=False, full_mass=DENSE[workload]),
            num_samples=draws,
            warmup_steps=warmup,
            num_chains=chains,
            mp_context="spawn",
            disable_progbar=True,
        )
        sampler.run(arrays["x"], arrays["y"])
        seconds = time.perf_counter() - start
        samples = sampler.get_samples(group_by_chain=True)
        draws = {k: v.numpy() for k, v in samples.items()}
        runs.append(outcome(seconds, draws, np.array([math.nan])))
    return runs


def run_borch_cold(
    workload: str, seeds: list[int], warmup=WARMUP, draws=DRAWS, chains=CHAINS
) -> list[dict]:
    """Runs in a fresh process with empty caches: the first ``mcmc`` call compiles."""
    import torch

    torch.set_num_threads(1)
    method = os.environ["BORCH_BENCHMARK_CHAIN_METHOD"]
    return [run_borch(workload, seed, warmup, draws, chains, method) for seed in seeds]


def in_process(
    python: str,
    engine: str,
    workload: str,
    seeds: list[int],
    run: dict,
    env: dict | None = None,
) -> list[dict]:
    """Run ``engine`` on ``workload`` in a fresh process of ``python`` (``run``: the
    warm-up, draws and chains; ``env``: the environment, this one's by default)."""
    command = [python, __file__, "--engine", engine, "--workload", workload]
    command += ["--seeds", *map(str, seeds)]
    command += [f"--{key}={value}" for key, value in run.items()]
    found = subprocess.run(
        command, capture_output=True, text=True, check=False, env=env
    )
    if found.returncode != 0:
        raise RuntimeError(f"{engine} on {workload} failed:\n{found.stderr[-3000:]}")
    return json.loads(found.stdout.strip().splitlines()[-1])


def borch_cold(workload: str, seed: int, run: dict, method: str) -> dict:
    """borch's ``mcmc`` call as the first in a fresh process with empty caches."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(
            os.environ,
            BORCH_CACHE_DIR=cache,
            NUMBA_CACHE_DIR=cache,
            BORCH_BENCHMARK_CHAIN_METHOD=method,
        )
        return in_process(sys.executable, "borch", workload, [seed], run, env)[0]


def median(runs: list[dict], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS))
    parser.add_argument("--numpyro-python", default=None)
    parser.add_argument("--pyro-python", default=None)
    parser.add_argument(
        "--chain-method",
        nargs="+",
        default=["parallel"],
        choices=["parallel", "sequential", "vectorized"],
        help="borch's chain methods to run (each is a sampler of its own)",
    )
    parser.add_argument("--chains", type=int, default=CHAINS)
    parser.add_argument("--warmup", type=int, default=WARMUP)
    parser.add_argument("--draws", type=int, default=DRAWS)
    parser.add_argument(
        "--no-cold",
        action="store_true",
        help="skip borch's cold run (a fresh process with empty compilation caches)",
    )
    parser.add_argument(
        "--engine", choices=["numpyro", "pyro", "borch"], help=argparse.SUPPRESS
    )
    parser.add_argument("--workload", help=argparse.SUPPRESS)
    parser.add_argument("--seeds", nargs="+", type=int, help=argparse.SUPPRESS)
    parser.add_argument(
        "--output",
        default=str(pathlib.Path(__file__).parent / "results" / "nuts_numpyro.json"),
    )
    args = parser.parse_args(argv)
    if args.engine is not None:  # a child process: print the runs as JSON
        run = {"numpyro": run_numpyro, "pyro": run_pyro, "borch": run_borch_cold}[
            args.engine
        ]
        found = run(args.workload, args.seeds, args.warmup, args.draws, args.chains)
        print(json.dumps(found))
        return None

    import torch

    torch.set_num_threads(1)
    seeds = list(range(1, args.repeats + 1))
    run = {"warmup": args.warmup, "draws": args.draws, "chains": args.chains}
    borchs = [f"borch {method}" for method in args.chain_method]
    colds = [] if args.no_cold else [f"{name} cold" for name in borchs]
    runs: dict[str, dict[str, list]] = {}
    for workload in args.workloads:
        for method in args.chain_method:  # imports and compilation, untimed
            run_borch(workload, 0, 20, 20, args.chains, method)
        found: dict[str, list] = {name: [] for name in borchs + colds}
        found |= {"numpyro cold": [], "numpyro warm": []}
        for seed in seeds:  # alternate the samplers
            for method, name in zip(args.chain_method, borchs):
                found[name].append(
                    run_borch(workload, seed, **run, chain_method=method)
                )
                print(workload, name, found[name][-1], flush=True)
                if not args.no_cold:
                    found[f"{name} cold"].append(
                        borch_cold(workload, seed, run, method)
                    )
                    print(workload, f"{name} cold", found[f"{name} cold"][-1])
            if args.numpyro_python:
                cold, warm = in_process(
                    args.numpyro_python, "numpyro", workload, [seed, seed + 100], run
                )
                found["numpyro cold"].append(cold)
                found["numpyro warm"].append(warm)
                print(workload, "numpyro", cold, warm, flush=True)
        if args.pyro_python:
            found["pyro"] = in_process(
                args.pyro_python, "pyro", workload, seeds[:1], run
            )
        runs[workload] = {name: value for name, value in found.items() if value}
    medians = {
        workload: {
            name: {
                key: median(found, key)
                for key in ("seconds", "min_ess_bulk", "ess_per_second")
            }
            | {"leapfrog_steps_per_draw": median(found, "leapfrog_steps_per_draw")}
            for name, found in by_sampler.items()
        }
        for workload, by_sampler in runs.items()
    }
    ratios = {}
    for workload, by_sampler in medians.items():
        for name in borchs + colds:
            for other in ("numpyro cold", "numpyro warm", "pyro", *borchs):
                if other in by_sampler and other != name:
                    ratios[f"{workload}: {name} / {other}"] = (
                        by_sampler[name]["ess_per_second"]
                        / by_sampler[other]["ess_per_second"]
                    )
    print(f"\n{'workload':10s} {'sampler':19s} {'ESS/s':>8s} {'steps/draw':>11s}")
    for workload, by_sampler in medians.items():
        for name, summary in by_sampler.items():
            print(
                f"{workload:10s} {name:19s} {summary['ess_per_second']:8.1f} "
                f"{summary['leapfrog_steps_per_draw']:11.1f}"
            )
    for name, ratio in ratios.items():
        print(f"  {name}: {ratio:.2f}")
    report = {
        "benchmark": "nuts_numpyro",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "settings": {
            **run,
            "chain_methods": args.chain_method,
            "repeats": args.repeats,
            "dense_mass": DENSE,
        },
        "load_average": os.getloadavg(),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cores": len(os.sched_getaffinity(0)),
        },
        "runs": runs,
        "medians": medians,
        "ratios": ratios,
    }
    write_report(report, args.output)
    return report


def timing_report(benchmark: str, settings: dict, rows: list) -> dict:
    """The record of a timing benchmark: its name, when, the settings and the load."""
    import torch

    return {
        "benchmark": benchmark,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "settings": settings,
        "load_average": os.getloadavg(),
        "torch": torch.__version__,
        "rows": rows,
    }


def write_report(report: dict, path: str) -> None:
    """Write ``report`` as JSON to ``path`` (creating its folder)."""
    output = pathlib.Path(path)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2))
    print(f"\nwritten to {output}")


if __name__ == "__main__":
    main()
