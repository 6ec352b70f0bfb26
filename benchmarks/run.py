"""Run the benchmark suite: ``python -m benchmarks.run`` (``make bench``).

Every workload is timed for borch, for the same step written by hand in plain torch
(with ``torch.distributions`` as a torch user writes it, and with the densities written
out as formulas), for borch's and the hand-written torch step with the loss compiled
(``borch.compile_step``, default inductor backend; the compiling call's time reported
apart) and for Pyro when it is installed, all in this one process run, on one
thread, as medians over blocks of steps after a warm-up. Prints a table and writes
``benchmarks/results/benchmarks.json``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

import torch

from benchmarks import harness

WORKLOADS = {
    "seed manual step": "benchmarks.seed_manual",
    "linear regression": "benchmarks.linear_regression",
    "Bayesian MLP": "benchmarks.bnn_mlp",
    "amortised VAE": "benchmarks.vae",
}


def time_workloads(steps: int, blocks: int, only: set[str] | None) -> dict:
    results = {}
    for title, module_name in WORKLOADS.items():
        if only and title not in only:
            continue
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            print(f"skipping {title}: {error}", file=sys.stderr)
            continue
        scale = getattr(module, "STEP_SCALE", 1.0)
        measured = harness.time_steps(
            harness.runnable(module.VARIANTS),
            steps=max(5, int(steps * scale)),
            blocks=blocks,
        )
        entry = {
            "seconds_per_step": {k: v.seconds_per_step for k, v in measured.items()}
        }
        entry["spread"] = {k: v.spread for k, v in measured.items()}
        compile_seconds = dict(harness.COMPILE_SECONDS)
        harness.COMPILE_SECONDS.clear()
        if compile_seconds:
            entry["compile_seconds"] = compile_seconds
        base = measured["torch"].seconds_per_step
        entry["ratio_to_torch"] = {
            k: v.seconds_per_step / base for k, v in measured.items()
        }
        if "torch-formulas" in measured:
            formulas = measured["torch-formulas"].seconds_per_step
            entry["ratio_to_torch_formulas"] = {
                k: v.seconds_per_step / formulas for k, v in measured.items()
            }
        if "pyro" in measured:
            entry["pyro_over_borch"] = (
                measured["pyro"].seconds_per_step / measured["borch"].seconds_per_step
            )
        if hasattr(module, "MEMORY_VARIANTS"):
            entry["peak_bytes"] = {
                variant: harness.peak_memory(make_step)
                for variant, make_step in module.MEMORY_VARIANTS.items()
            }
        results[title] = entry
    return results


def particle_costs(steps: int) -> dict:
    from benchmarks import particles

    rows = {}
    single = particles.gradient_variance(1)
    for count in particles.COUNTS:
        row = {}
        for vectorize in (True, False):
            label = "vectorised" if vectorize else "looped"
            seconds = harness.time_step(
                label,
                particles.make_step(count, vectorize),
                steps=max(5, steps // 4),
                warmup=5,
                blocks=3,
            ).seconds_per_step
            row[f"{label}_seconds_per_step"] = seconds
            row[f"{label}_seconds_per_particle"] = seconds / count
        row["gradient_variance_ratio"] = particles.gradient_variance(count) / single
        rows[count] = row
    return rows


def format_report(results: dict, particle_rows: dict | None) -> str:
    lines = [
        f"{'workload':20s} {'variant':15s} {'ms/step':>9s} {'/torch':>7s} "
        f"{'/formulas':>9s} {'spread':>7s}"
    ]
    for title, entry in results.items():
        for variant, seconds in entry["seconds_per_step"].items():
            formulas = entry.get("ratio_to_torch_formulas", {}).get(variant)
            formulas_text = f"{formulas:9.2f}" if formulas is not None else f"{'-':>9s}"
            lines.append(
                f"{title:20s} {variant:15s} {seconds * 1e3:9.3f} "
                f"{entry['ratio_to_torch'][variant]:7.2f} {formulas_text} "
                f"{entry['spread'][variant]:7.2f}"
            )
        for variant, seconds in entry.get("compile_seconds", {}).items():
            lines.append(f"{title:20s} {variant} compiling call: {seconds:.1f} s")
        if "pyro_over_borch" in entry:
            lines.append(f"{title:20s} pyro / borch = {entry['pyro_over_borch']:.2f}")
        if "peak_bytes" in entry:
            peaks = entry["peak_bytes"]
            relative = peaks["borch"] / peaks["torch"]
            lines.append(
                f"{title:20s} peak memory borch {peaks['borch'] / 1e6:.2f} MB, "
                f"torch {peaks['torch'] / 1e6:.2f} MB: {relative:.2f}x"
            )
    if particle_rows:
        lines.append("")
        lines.append(
            f"{'particles':>9s} {'vec ms/step':>12s} {'vec ms/part':>12s} "
            f"{'loop ms/step':>13s} {'loop ms/part':>13s} {'grad var':>9s}"
        )
        for count, row in particle_rows.items():
            lines.append(
                f"{count:9d} {row['vectorised_seconds_per_step'] * 1e3:12.3f} "
                f"{row['vectorised_seconds_per_particle'] * 1e3:12.3f} "
                f"{row['looped_seconds_per_step'] * 1e3:13.3f} "
                f"{row['looped_seconds_per_particle'] * 1e3:13.3f} "
                f"{row['gradient_variance_ratio']:9.3f}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=200, help="steps per timing block")
    parser.add_argument("--blocks", type=int, default=7, help="timing blocks (median)")
    parser.add_argument("--only", nargs="*", help="workload titles to run")
    parser.add_argument("--no-particles", action="store_true")
    options = parser.parse_args(argv)
    torch.set_num_threads(1)
    results = time_workloads(options.steps, options.blocks, set(options.only or ()))
    particle_rows = None if options.no_particles else particle_costs(options.steps)
    print(format_report(results, particle_rows))
    path = harness.write_json(
        "benchmarks",
        {
            "environment": harness.environment(),
            "workloads": results,
            "particles": particle_rows,
        },
    )
    print(f"\nwritten {path}")


if __name__ == "__main__":
    main()
