"""The cost of a leapfrog step per chain: one chain at a time against all chains as
one batched computation (``mcmc(chain_method="sequential" | "vectorized")``).

For each workload of ``benchmarks/nuts_numpyro.py`` and each number of chains, both
paths run the same number of NUTS transitions from the same points with a fixed step
size and the identity metric: ``sequential`` runs
:func:`borch.infer.hmc.nuts.nuts_transition` on the traced potential chain after
chain (what each worker process does); ``vectorized`` runs
:func:`borch.infer.hmc.batched_nuts.batched_nuts_transition` on the batched trace.
Reported: microseconds per leapfrog step per chain (wall time over the leapfrog
steps the chains took), and the batched path's *lockstep* factor (every transition
costs the longest chain's trajectory). ``parallel`` on ``k`` cores is about the
sequential figure over ``k``. One torch thread. Results go to
``benchmarks/results/nuts_chain_methods.json``.

Run: ``python benchmarks/nuts_chain_methods.py --chains 4 16``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import time

import numpy as np
import torch

from benchmarks.nuts_numpyro import borch_model, timing_report, write_report

STEP_SIZES = {"logistic": 0.05, "kidiq": 0.02, "mesquite": 0.02}


def potentials(workload: str, chains: int, seed: int):
    from borch.infer.hmc.initialization import initial_point
    from borch.infer.hmc.model_conversion import ModelPotential, sampling_copy
    from borch.infer.hmc.traced.batched import batched_traced_potential
    from borch.infer.hmc.traced.tracing import traced_potential

    model, x = borch_model(workload)
    eager = ModelPotential(sampling_copy(model), (x,), {})
    starts = [initial_point(eager, "uniform", seed + c) for c in range(chains)]
    points = np.stack([s.position for s in starts])
    single = traced_potential(
        eager.evaluate, eager, points[:2], eager.device, eager.dtype
    )
    batched = batched_traced_potential(
        eager.evaluate, eager, points, eager.device, eager.dtype
    )
    return eager, single, batched, points


def time_sequential(single, points, step_size, transitions, seed):
    from borch.infer.hmc.hamiltonian import initial_state
    from borch.infer.hmc.metric import DiagonalMetric
    from borch.infer.hmc.nuts import nuts_transition

    steps = 0
    start = time.perf_counter()
    for chain, point in enumerate(points):
        rng = np.random.default_rng(seed + chain)
        state = initial_state(point, single)
        metric = DiagonalMetric(np.ones_like(point))
        for _ in range(transitions):
            state, info = nuts_transition(state, single, step_size, metric, rng)
            steps += info.num_steps
    return time.perf_counter() - start, steps


def time_vectorized(eager, batched, points, step_size, transitions, seed):
    from borch.infer.hmc.batched_nuts import (
        BatchedMetric,
        BatchedState,
        batched_nuts_transition,
    )

    q = eager.tensor(points)
    state = BatchedState(q, *batched(q))
    metric = BatchedMetric(torch.ones_like(q))
    eps = torch.full((len(points),), step_size).to(q)
    generator = torch.Generator().manual_seed(seed)
    steps = longest = 0
    start = time.perf_counter()
    for _ in range(transitions):
        state, info = batched_nuts_transition(state, batched, eps, metric, generator)
        steps += int(info.num_steps.sum())
        longest += int(info.num_steps.max())
    return time.perf_counter() - start, steps, longest


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", nargs="+", default=list(STEP_SIZES))
    parser.add_argument("--chains", nargs="+", type=int, default=[4, 16])
    parser.add_argument("--transitions", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--output",
        default=str(
            pathlib.Path(__file__).parent / "results" / "nuts_chain_methods.json"
        ),
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for workload in args.workloads:
        for chains in args.chains:
            eager, single, batched, points = potentials(workload, chains, 0)
            eps = STEP_SIZES[workload]
            sequential, vectorized, lockstep = [], [], []
            for repeat in range(args.repeats):  # alternate the two paths
                seconds, steps = time_sequential(
                    single, points, eps, args.transitions, repeat
                )
                sequential.append(1e6 * seconds / steps)
                seconds, steps, longest = time_vectorized(
                    eager, batched, points, eps, args.transitions, repeat
                )
                vectorized.append(1e6 * seconds / steps)
                lockstep.append(longest * chains / steps)
            row = {
                "workload": workload,
                "chains": chains,
                "sequential_us_per_step": statistics.median(sequential),
                "vectorized_us_per_step": statistics.median(vectorized),
                "lockstep_factor": statistics.median(lockstep),
            }
            row["vectorized_over_sequential"] = (
                row["vectorized_us_per_step"] / row["sequential_us_per_step"]
            )
            rows.append(row)
            print(json.dumps(row), flush=True)
    report = timing_report(
        "nuts_chain_methods", vars(args) | {"step_sizes": STEP_SIZES}, rows
    )
    write_report(report, args.output)
    return report


if __name__ == "__main__":
    main()
