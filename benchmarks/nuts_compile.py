"""What compiling the traced potential with numba costs, in a fresh process.

For each workload of ``benchmarks/nuts_numpyro.py``, a child process builds the
model and times :func:`borch.infer.hmc.traced.tracing.traced_potential` alone
(tracing, checking and, with numba, numba's import, start-up and compilation): with
``BORCH_NUMBA=0`` (the numpy replay), with numba and empty caches, then twice with
the caches the first numba run filled (a fresh temporary ``BORCH_CACHE_DIR`` and
``NUMBA_CACHE_DIR`` per workload). Results go to
``benchmarks/results/nuts_compile.json``.

Run: ``python benchmarks/nuts_compile.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

from benchmarks.nuts_numpyro import DENSE, timing_report, write_report

_CHILD = r"""
import json, sys, time
import torch
torch.set_num_threads(1)
from benchmarks.nuts_numpyro import borch_model
from borch.infer.hmc.initialization import initial_point
from borch.infer.hmc.model_conversion import ModelPotential, sampling_copy
from borch.infer.hmc.traced.tracing import traced_potential
model, x = borch_model(sys.argv[1])
eager = ModelPotential(sampling_copy(model), (x,), {})
points = [initial_point(eager, "uniform", seed).position for seed in range(2)]
eager(points[0])
start = time.perf_counter()
potential = traced_potential(eager.evaluate, eager, points, eager.device, eager.dtype)
print(json.dumps({"backend": potential.backend, "seconds": time.perf_counter() - start}))
"""


def _child(workload: str, env: dict) -> dict:
    found = subprocess.run(
        [sys.executable, "-c", _CHILD, workload],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(found.stdout.strip().splitlines()[-1])


def profile(workload: str) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, BORCH_CACHE_DIR=cache, NUMBA_CACHE_DIR=cache)
        row = {"workload": workload}
        runs = [
            ("numpy", dict(env, BORCH_NUMBA="0")),
            ("numba_empty_cache", env),
            ("numba_cached", env),
            ("numba_cached_again", env),
        ]
        for name, settings in runs:
            found = _child(workload, settings)
            row[f"{name}_s"], row[f"{name}_backend"] = (
                found["seconds"],
                found["backend"],
            )
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", nargs="+", default=list(DENSE))
    parser.add_argument(
        "--output",
        default=str(pathlib.Path(__file__).parent / "results" / "nuts_compile.json"),
    )
    args = parser.parse_args(argv)
    rows = []
    for workload in args.workloads:
        rows.append(profile(workload))
        print(json.dumps(rows[-1]), flush=True)
    report = timing_report("nuts_compile", vars(args), rows)
    write_report(report, args.output)
    return report


if __name__ == "__main__":
    main()
