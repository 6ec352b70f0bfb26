"""Laplace at network scale: ``diag``, ``kfac`` and ``lowrank`` (rank 10) over
every weight of a 784-1024-1024-10 MLP (1.86M parameters) on random inputs, with
peak memory.

Each structure is fitted in a fresh process run under ``/usr/bin/time -v`` (the
peak resident set size of the whole process, torch included) and timed from the
first forward pass to a fitted posterior plus one draw and the log evidence. The
plain-torch reference is the same process doing one forward and backward pass of
the network's loss (the floor of any curvature). ``structure="full"`` is asked for
too and must refuse at once.

Run ``python benchmarks/laplace_scale.py`` (writes
``benchmarks/results/laplace_scale.json``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import pathlib
import re
import subprocess
import sys
import time

POINTS = 1000
SIZES = (784, 1024, 1024, 10)


def build():
    import torch

    import borch
    from borch import distributions as dist
    from borch import nn as bnn

    torch.manual_seed(0)

    class MLP(bnn.Module):
        def __init__(self):
            super().__init__()
            layers = []
            for i, (a, b) in enumerate(itertools.pairwise(SIZES)):
                layers.append(bnn.Linear(a, b))
                if i < len(SIZES) - 2:
                    layers.append(bnn.ReLU())
            self.net = bnn.Sequential(*layers)

        def forward(self, x):
            self.y = dist.Categorical(logits=self.net(x))

    model = MLP()
    model.apply(borch.set_posteriors(borch.posterior.PointMass))
    x = torch.randn(POINTS, SIZES[0])
    model.observe(y=torch.randint(0, SIZES[-1], (POINTS,)))

    def closure():
        borch.sample(model)
        model(x)
        return borch.infer.vi_loss(**borch.pq_to_infer(model))

    return model, closure


def child(structure: str) -> dict:
    import torch

    import borch

    torch.set_num_threads(1)
    model, closure = build()
    count = sum(p.numel() for p in model.parameters())
    start = time.perf_counter()
    if structure == "torch":
        closure().backward()
        return {
            "structure": structure,
            "parameters": count,
            "seconds": time.perf_counter() - start,
        }
    try:
        approx = borch.infer.laplace_posterior(
            model, closure, structure=structure, prior_precision=1.0
        )
    except MemoryError as error:
        return {
            "structure": structure,
            "parameters": count,
            "seconds": time.perf_counter() - start,
            "refused": str(error),
        }
    approx.samples(1)
    evidence = float(approx.log_marginal_likelihood())
    return {
        "structure": structure,
        "parameters": count,
        "seconds": time.perf_counter() - start,
        "log_evidence": evidence,
    }


def measure(structure: str) -> dict:
    command = ["/usr/bin/time", "-v", sys.executable, __file__, "--child", structure]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    result["peak_rss_mib"] = int(peak.group(1)) / 1024
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        print(json.dumps(child(options.child)))
        return
    results = [measure(s) for s in ("torch", "diag", "kfac", "lowrank", "full")]
    print(f"{'structure':10} {'params':>10} {'seconds':>8} {'peak MiB':>9}")
    for r in results:
        print(
            f"{r['structure']:10} {r['parameters']:>10,} {r['seconds']:>8.2f} "
            f"{r['peak_rss_mib']:>9.0f}  {r.get('refused', '')}"
        )
    folder = pathlib.Path(__file__).parent / "results"
    folder.mkdir(exist_ok=True)
    (folder / "laplace_scale.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
