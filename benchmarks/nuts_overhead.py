"""Where the time of a leapfrog step goes on the per-chain NUTS path.

For each workload of ``benchmarks/nuts_numpyro.py``, one chain is warmed up by
``mcmc`` (``--warmup`` iterations, the workload's ``dense_mass``); from its last
point, with its adapted step size and metric held fixed, it runs ``--transitions``
calls of :func:`borch.infer.hmc.nuts.nuts_transition` on the traced potential (what
each worker process of ``mcmc(chain_method="parallel")`` runs per draw, without the
adaptation). The microseconds per leapfrog step are split into

- ``potential``: the traced potential's value and gradient, timed on the positions
  the run visited;
- ``leapfrog``: the integrator without the potential (momentum and position
  updates, the velocity), timed by replaying the run's steps with a potential that
  hands back the recorded results;
- ``tree``: the rest of a transition (kinetic energy, multinomial weights, U-turn
  checks, the momentum draw), the replayed run's time less the ``leapfrog`` part;
- ``playback``: the cost of the stand-in potential itself (subtracted above).

``total`` is the run's own time per step; it should be close to the sum. One torch
thread; medians of ``--repeats`` alternating repeats. Results go to
``benchmarks/results/nuts_overhead.json``.

Run: ``python benchmarks/nuts_overhead.py --repeats 5``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import time

import numpy as np
import torch

from benchmarks.nuts_chain_methods import potentials
from benchmarks.nuts_numpyro import DENSE, borch_model, timing_report, write_report


class _Recording:
    """The traced potential, keeping every position and result it gave."""

    def __init__(self, potential):
        self.potential, self.positions, self.results = potential, [], []

    def __call__(self, position):
        result = self.potential(position)
        self.positions.append(position.copy())
        self.results.append(result)
        return result


class _Playback:
    """Hands back recorded results in order (the same run, without the model)."""

    def __init__(self, results):
        self.results, self.index = results, 0

    def __call__(self, position):
        result = self.results[self.index]
        self.index += 1
        return result


def _adapted(workload: str, warmup: int, dtype):
    """The last point, step size and metric of a warmed-up chain."""
    import borch
    from borch.infer.hmc.metric import DenseMetric, DiagonalMetric

    model, x = borch_model(workload)
    result = borch.infer.mcmc(
        model,
        x,
        num_samples=1,
        warmup=warmup,
        chains=1,
        seed=0,
        progress=False,
        dense_mass=DENSE[workload],
        chain_method="sequential",
    )
    matrix = result.inverse_mass_matrix[0].numpy().astype(dtype)
    metric = DenseMetric(matrix) if matrix.ndim == 2 else DiagonalMetric(matrix)
    point = result.final_positions[0].numpy().astype(dtype)
    return point, float(result.step_size[0]), metric


def _run(potential, point, step_size, metric, transitions, seed):
    from borch.infer.hmc.hamiltonian import IntegratorState
    from borch.infer.hmc.nuts import nuts_transition

    rng = np.random.default_rng(seed)
    energy, grad = potential(point)
    state = IntegratorState(point, np.zeros_like(point), energy, grad)
    steps = 0
    start = time.perf_counter()
    for _ in range(transitions):
        state, info = nuts_transition(state, potential, step_size, metric, rng)
        steps += info.num_steps
    return time.perf_counter() - start, steps


def _time_leapfrog(results, point, step_size, metric):
    from borch.infer.hmc.hamiltonian import IntegratorState, leapfrog

    playback = _Playback(results)
    energy, grad = playback(point)
    state = IntegratorState(point, np.zeros_like(point), energy, grad)
    start = time.perf_counter()
    for _ in range(len(results) - 1):
        state = leapfrog(state, step_size, metric, playback)
    return (time.perf_counter() - start) / (len(results) - 1)


def _time_calls(function, arguments):
    start = time.perf_counter()
    for argument in arguments:
        function(argument)
    return (time.perf_counter() - start) / len(arguments)


def profile(workload: str, warmup: int, transitions: int, repeats: int) -> dict:
    _, single, _, _ = potentials(workload, 1, 0)
    point, eps, metric = _adapted(workload, warmup, single.numpy_dtype)
    recording = _Recording(single)
    _run(recording, point, eps, metric, transitions, 0)
    positions, results = recording.positions, recording.results
    parts = {"total": [], "potential": [], "leapfrog": [], "tree": [], "playback": []}
    for _ in range(repeats):
        seconds, steps = _run(single, point, eps, metric, transitions, 0)
        parts["total"].append(1e6 * seconds / steps)
        parts["potential"].append(1e6 * _time_calls(single, positions))
        playback = 1e6 * _time_calls(_Playback(results), positions)
        parts["playback"].append(playback)
        seconds, _ = _run(_Playback(results), point, eps, metric, transitions, 0)
        leapfrog = 1e6 * _time_leapfrog(results, point, eps, metric) - playback
        parts["leapfrog"].append(leapfrog)
        parts["tree"].append(1e6 * seconds / steps - playback - leapfrog)
    row = {"workload": workload, "steps": steps, "step_size": eps}
    row |= {f"{part}_us": statistics.median(v) for part, v in parts.items()}
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", nargs="+", default=list(DENSE))
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--transitions", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--output",
        default=str(pathlib.Path(__file__).parent / "results" / "nuts_overhead.json"),
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for workload in args.workloads:
        rows.append(profile(workload, args.warmup, args.transitions, args.repeats))
        print(json.dumps(rows[-1]), flush=True)
    report = timing_report("nuts_overhead", vars(args), rows)
    write_report(report, args.output)
    return report


if __name__ == "__main__":
    main()
