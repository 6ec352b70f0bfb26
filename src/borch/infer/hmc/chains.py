"""Run independent Markov chains, in worker processes or one after the other, with a
progress bar per chain.

Each chain is a job ``job(chain, report) -> result`` that draws every random number
from its own generators, so a chain's result does not depend on where it runs. Worker
processes use one torch thread each, and so does the sequential path (torch's thread
setting is restored afterwards), so both give the same numbers.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

#: ``report(chain, done, postfix)``: a chain finished ``done`` iterations.
Report = Callable[[int, int, str], None]
ChainJob = Callable[[int, Report], Any]

#: Seconds between progress messages from a worker process.
_REPORT_INTERVAL = 0.2


def available_cores() -> int:
    """The number of CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def start_method() -> str:
    """``fork`` on Linux (no pickling of the model needed), ``spawn`` elsewhere."""
    methods = multiprocessing.get_all_start_methods()
    return "fork" if sys.platform.startswith("linux") and "fork" in methods else "spawn"


def run_chains(
    job: ChainJob,
    chains: int,
    iterations: int,
    parallel: bool,
    progress: bool,
) -> list[Any]:
    """Run ``job`` for chains ``0 .. chains-1``; return the results in chain order.

    Args:
        job: ``job(chain, report)``; calls ``report(chain, done, postfix)`` as it goes.
            It must be picklable when the start method is ``spawn``.
        chains: the number of chains.
        iterations: the iterations of one chain (the length of its progress bar).
        parallel: run chains in worker processes (one per core, at most one per
            chain); otherwise one after the other here.
        progress: show a progress bar per chain.
    """
    bars = [
        tqdm(
            total=iterations,
            desc=f"chain {chain}",
            position=chain,
            leave=True,
            disable=not progress,
            dynamic_ncols=True,
        )
        for chain in range(chains)
    ]
    try:
        if parallel and chains > 1:
            workers = max(1, min(chains, available_cores()))
            return _run_in_processes(job, chains, workers, iterations, bars)
        return _run_here(job, chains, iterations, bars)
    finally:
        for bar in bars:
            bar.close()


def _show(bars: Sequence[tqdm], chain: int, done: int, postfix: str) -> None:
    bar = bars[chain]
    bar.set_postfix_str(postfix, refresh=False)
    bar.update(done - bar.n)


def _run_here(
    job: ChainJob, chains: int, iterations: int, bars: Sequence[tqdm]
) -> list[Any]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        throttled = _Throttle(
            lambda chain, done, postfix: _show(bars, chain, done, postfix), iterations
        )
        return [job(chain, throttled) for chain in range(chains)]
    finally:
        torch.set_num_threads(threads)


class _Throttle:
    """Pass on progress at most every ``_REPORT_INTERVAL`` seconds (and at the end)."""

    def __init__(self, report: Report, total: int) -> None:
        self.report = report
        self.total = total
        self.last = 0.0

    def __call__(self, chain: int, done: int, postfix: str) -> None:
        now = time.monotonic()
        if done >= self.total or now - self.last >= _REPORT_INTERVAL:
            self.last = now
            self.report(chain, done, postfix)


def _worker(
    job: ChainJob, chains: Sequence[int], iterations: int, messages: Any
) -> None:
    torch.set_num_threads(1)

    def send(chain: int, done: int, postfix: str) -> None:
        messages.put(("progress", chain, done, postfix))

    for chain in chains:
        try:
            result = job(chain, _Throttle(send, iterations))
        except BaseException as error:
            messages.put(("error", chain, _picklable(error)))
            return
        messages.put(("done", chain, result))


def _picklable(error: BaseException) -> BaseException:
    import pickle

    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        text = "".join(traceback.format_exception(error))
        return RuntimeError(f"a chain failed in a worker process:\n{text}")


def _run_in_processes(
    job: ChainJob, chains: int, workers: int, iterations: int, bars: Sequence[tqdm]
) -> list[Any]:
    context = multiprocessing.get_context(start_method())
    messages = context.Queue()
    assignments = [list(range(w, chains, workers)) for w in range(workers)]
    processes = [
        context.Process(
            target=_worker, args=(job, assigned, iterations, messages), daemon=True
        )
        for assigned in assignments
    ]
    results: dict[int, Any] = {}
    try:
        for process in processes:
            process.start()
        while len(results) < chains:
            try:
                kind, chain, *payload = messages.get(timeout=0.5)
            except queue.Empty:
                _check_alive(processes, assignments, results)
                continue
            if kind == "progress":
                _show(bars, chain, *payload)
            elif kind == "done":
                results[chain] = payload[0]
            else:
                raise payload[0]
        for process in processes:
            process.join()
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
                process.join()
        messages.close()
    return [results[chain] for chain in range(chains)]


def _check_alive(
    processes: Sequence[Any], assignments: Sequence[Sequence[int]], results: dict
) -> None:
    for process, assigned in zip(processes, assignments):
        pending = [chain for chain in assigned if chain not in results]
        if pending and process.exitcode not in (None, 0):
            raise RuntimeError(
                f"the worker process running chain(s) {pending} stopped with exit code "
                f"{process.exitcode} before finishing (out of memory?)"
            )


__all__ = ["available_cores", "run_chains", "start_method"]
