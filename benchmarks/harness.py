"""Timing and memory measurement shared by the benchmarks.

Every workload provides step factories: ``make_step()`` returns a zero-argument
callable doing one full training step. Timings are medians over repeated blocks after
a warm-up, on one thread, all variants measured in the same process run.
"""

from __future__ import annotations

import cProfile
import gc
import importlib.util
import io
import json
import os
import platform
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch.profiler import ProfilerActivity, profile

RESULTS = os.path.join(os.path.dirname(__file__), "results")


@dataclass
class Measurement:
    name: str
    seconds_per_step: float
    spread: float  # (max - min) / median over the blocks
    peak_bytes: int | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class Training:
    """The parts of one training step: ``loss_fn(*inputs())`` is the loss (``inputs``
    gives the step's data: a new minibatch, ...), then backward and ``optimizer``."""

    loss_fn: Callable[..., torch.Tensor]
    optimizer: torch.optim.Optimizer
    inputs: Callable[[], tuple] = tuple


#: Seconds the first compiled call of each compiled variant took, by variant name
#: (filled in by the step factories of :func:`training_step`).
COMPILE_SECONDS: dict[str, float] = {}


def training_step(
    make_training: Callable[[], Training], compiled: str | None = None
) -> Callable[[], Callable[[], None]]:
    """A step factory for ``make_training``: eager, or, with ``compiled`` (the
    variant's name), the whole step compiled by :func:`borch.compile_step` with
    the optimiser (the loss and the optimiser's update compiled, default inductor
    backend; backward runs the compiled loss's backward graph), and the time of the
    compiling call kept in :data:`COMPILE_SECONDS`."""

    def make_step() -> Callable[[], None]:
        training = make_training()
        loss_fn, optimizer, inputs = (
            training.loss_fn,
            training.optimizer,
            training.inputs,
        )
        if compiled is None:

            def step() -> None:
                loss_fn(*inputs()).backward()
                optimizer.step()
                optimizer.zero_grad()

            return step

        from borch.compiling import compile_step

        train = compile_step(loss_fn, optimizer)

        def compiled_step() -> None:
            train(*inputs())

        compiled_step()  # eager: creates the lazily made parameters
        start = time.perf_counter()
        compiled_step()
        COMPILE_SECONDS[compiled] = time.perf_counter() - start
        return compiled_step

    return make_step


def runnable(variants: dict[str, Callable]) -> dict[str, Callable]:
    """``variants`` without Pyro's when Pyro (an optional extra) is not installed."""
    if "pyro" not in variants or importlib.util.find_spec("pyro") is not None:
        return dict(variants)
    print("skipping pyro: not installed", file=sys.stderr)
    return {name: make for name, make in variants.items() if name != "pyro"}


def time_step(
    name: str,
    make_step: Callable[[], Callable[[], object]],
    steps: int = 200,
    warmup: int = 50,
    blocks: int = 7,
) -> Measurement:
    """Median time of one step over ``blocks`` blocks of ``steps`` steps."""
    return time_steps({name: make_step}, steps, warmup, blocks)[name]


def time_steps(
    makers: dict[str, Callable[[], Callable[[], object]]],
    steps: int = 200,
    warmup: int = 50,
    blocks: int = 7,
) -> dict[str, Measurement]:
    """:func:`time_step` for several variants, their blocks taken in turn.

    Timing one variant after the other lets a slow drift of the machine (another
    process, frequency scaling) land on one variant only; round-robin blocks spread
    it over all of them, so the ratios between variants are what the machine gives.
    """
    prepared = {}
    for name, make_step in makers.items():
        torch.manual_seed(0)
        step = make_step()
        for _ in range(warmup):
            step()
        prepared[name] = step
    gc.collect()
    per_block: dict[str, list[float]] = {name: [] for name in prepared}
    for _ in range(blocks):
        for name, step in prepared.items():
            step()  # one untimed step: caches warm again after the other variants
            start = time.perf_counter()
            for _ in range(steps):
                step()
            per_block[name].append((time.perf_counter() - start) / steps)
    measured = {}
    for name, times in per_block.items():
        median = statistics.median(times)
        spread = (max(times) - min(times)) / median
        measured[name] = Measurement(name, median, spread)
    return measured


def peak_memory(make_step: Callable[[], Callable[[], object]], steps: int = 3) -> int:
    """Peak bytes of CPU tensor memory of a workload: its construction and ``steps``
    steps, as recorded by torch's allocator under the profiler.

    The profiler's memory events carry the allocator's running total since profiling
    began, so the maximum is the workload's high-water mark: parameters, optimiser
    state, anything kept between steps and the activations of the step itself.
    """
    gc.collect()
    with tempfile.TemporaryDirectory() as folder:
        trace = os.path.join(folder, "trace.json")
        with profile(
            activities=[ProfilerActivity.CPU], profile_memory=True
        ) as profiler:
            step = make_step()
            for _ in range(steps):
                step()
        profiler.export_chrome_trace(trace)
        with open(trace) as handle:
            events = json.load(handle)["traceEvents"]
    totals = [
        event["args"]["Total Allocated"]
        for event in events
        if event.get("name") == "[memory]" and event["args"].get("Device Type") == 0
    ]
    return max(totals, default=0)


def environment() -> dict:
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "threads": torch.get_num_threads(),
    }


def write_json(name: str, payload: dict) -> str:
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"{name}.json")
    with open(path, "w") as handle:
        json.dump(payload, handle, indent=2, default=lambda o: asdict(o))
    return path


def ratio_table(rows: list[tuple[str, float, float | None, float | None]]) -> str:
    """Format (workload, borch ratio, pyro ratio, borch/pyro speed-up) rows."""
    lines = [
        f"{'workload':28s} {'borch/torch':>12s} {'pyro/torch':>11s} {'pyro/borch':>11s}"
    ]
    for workload, borch_ratio, pyro_ratio, speedup in rows:
        pyro_text = f"{pyro_ratio:11.2f}" if pyro_ratio is not None else f"{'-':>11s}"
        speed_text = f"{speedup:11.2f}" if speedup is not None else f"{'-':>11s}"
        lines.append(f"{workload:28s} {borch_ratio:12.2f} {pyro_text} {speed_text}")
    return "\n".join(lines)


def profile_step(make_step, steps: int = 300, top: int = 25) -> str:
    """cProfile of the step ``make_step()`` returns (after a warm-up): the functions
    with the most own time, then borch's own functions alone, per step, with the
    total time spent in borch's Python code (cProfile roughly doubles the cost of
    Python calls, so read these as shares, not as timings)."""
    step = make_step()
    for _ in range(30):
        step()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(steps):
        step()
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    rows = [
        (own, cumulative, calls, f"{path}:{line}({name})")
        for (path, line, name), (_, calls, own, cumulative, _) in stats.stats.items()
    ]
    mine = sorted((row for row in rows if "/borch/" in row[3]), reverse=True)
    total = sum(row[0] for row in rows)
    own = sum(row[0] for row in mine)
    out.write(
        f"borch's own Python code: {own / steps * 1e3:.3f} ms of "
        f"{total / steps * 1e3:.3f} ms per profiled step ({own / total:.1%})\n"
        f"{'own us/step':>12s} {'cum us/step':>12s} {'calls/step':>11s}  function\n"
    )
    for own_time, cumulative, calls, where in mine[:top]:
        where = where[where.index("/borch/") + 1 :]
        out.write(
            f"{own_time / steps * 1e6:12.1f} {cumulative / steps * 1e6:12.1f} "
            f"{calls / steps:11.1f}  {where}\n"
        )
    return out.getvalue()


def print_steps(measured: dict) -> None:
    """Print a workload's variants: ms per step, ratio to ``torch``, spread, and
    Pyro / borch when Pyro ran."""
    base = measured["torch"].seconds_per_step
    print(f"{'variant':16s} {'ms/step':>8s} {'/torch':>7s} {'spread':>7s}")
    for variant, result in measured.items():
        print(
            f"{variant:16s} {result.seconds_per_step * 1e3:8.3f} "
            f"{result.seconds_per_step / base:7.2f} {result.spread:7.2f}"
        )
    if "pyro" in measured:
        speedup = measured["pyro"].seconds_per_step / measured["borch"].seconds_per_step
        print(f"pyro / borch = {speedup:.2f}")
