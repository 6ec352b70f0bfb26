"""``mcmc(chain_method="vectorized")``: every chain warmed up and sampled together,
as one batched computation in this process.

The chains move by :func:`~borch.infer.hmc.batched_nuts.batched_nuts_transition` on a
batched potential (the model's trace replayed on all chains at once, or the model run
chain by chain). Warm-up is Stan's, per chain: each chain has its own
:class:`~borch.infer.hmc.adaptation.WindowedAdaptation` (dual averaging of its step
size, its mass matrix from its own draws, in the same windows). The result of each
chain has the form of :func:`borch.infer.hmc.runner.sample_chain`'s, so the runner
assembles the same :class:`~borch.infer.hmc.result.MCMCResult`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from borch.infer.hmc.adaptation import WindowedAdaptation, check_iterations
from borch.infer.hmc.batched_nuts import (
    BatchedMetric,
    BatchedNUTSInfo,
    BatchedState,
    batched_initial_step_size,
    batched_nuts_transition,
)
from borch.infer.hmc.batched_potential import BatchedPotential, RowwisePotential
from borch.infer.hmc.metric import MassLayout, Metric
from borch.infer.hmc.potential import Potential, to_numpy
from borch.infer.hmc.traced.batched import differences


def sample_vectorized(
    potential: BatchedPotential,
    positions: torch.Tensor,
    settings: Any,
    seed: int,
    layout: MassLayout,
    tuned: Sequence[tuple[float, Metric]] | None = None,
    reference: Potential | None = None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Warm up and sample every chain together; return each chain's result.

    Args:
        potential: the batched potential of all chains.
        positions: ``(chains, dim)``, each chain's initial point (on the device and
            in the dtype the chains run in).
        settings: the runner's ``Settings`` (draws, warm-up, target, tree depth).
        seed: seeds the ``torch.Generator`` every random number comes from.
        layout: the blocks of the mass matrix warm-up estimates.
        tuned: each chain's ``(step_size, metric)`` to start from instead of the
            identity metric and a step size search.
        reference: the potential (one numpy position) that ``potential`` replays a
            trace of: they are compared at
            :func:`~borch.infer.hmc.adaptation.check_iterations`, and on a difference
            every chain continues on ``reference``, row by row.
        progress: show one progress bar for the chains.

    Returns:
        Per chain, the dict :func:`borch.infer.hmc.runner.sample_chain` returns, with
        ``traced`` (whether its draws came from a checked trace).

    Example:
        >>> import torch
        >>> from borch.infer.hmc.metric import MassLayout
        >>> from borch.infer.hmc.runner import Settings
        >>> scales = torch.tensor([[1.0], [10.0]])  # chain 1 sees a wider Normal
        >>> potential = lambda q: (0.5 * (q / scales).pow(2).sum(-1), q / scales**2)
        >>> results = sample_vectorized(
        ...     potential, torch.zeros(2, 1), Settings(200, 200, 0.8), 0, MassLayout(1)
        ... )
        >>> [round(float(r["positions"].std())) for r in results]  # about 1 and 10
        [1, 11]
        >>> inverse_mass = [float(r["inverse_mass"][0]) for r in results]
        >>> inverse_mass[1] > 20 * inverse_mass[0]  # each chain adapted its own
        True
    """
    chains, warmup = len(positions), settings.warmup
    generator = torch.Generator(device=positions.device).manual_seed(seed)
    state = BatchedState(positions, *potential(positions))
    dtype = positions.dtype
    numpy_dtype = to_numpy(positions[:1]).dtype
    if tuned is None:
        metrics = [layout.identity(numpy_dtype)] * chains
        metric = _batched(metrics, positions)
        step_size = batched_initial_step_size(
            state, potential, metric, generator, torch.ones_like(state.potential_energy)
        )
    else:
        metrics = [metric for _, metric in tuned]
        metric = _batched(metrics, positions)
        step_size = torch.tensor([float(step) for step, _ in tuned]).to(positions)
    adaptations = [
        WindowedAdaptation(
            warmup,
            layout,
            float(step),
            settings.target_accept,
            numpy_dtype,
        )
        for step in step_size.tolist()
    ]
    traced = reference is not None
    checks = check_iterations(warmup) if traced else set()
    mismatches: list[str | None] = [None] * chains
    recorder = _Recorder(settings.num_samples, positions)
    bar = tqdm(
        total=warmup + settings.num_samples,
        desc=f"{chains} chains (vectorized)",
        disable=not progress,
        dynamic_ncols=True,
    )
    try:
        for iteration in range(warmup + settings.num_samples):
            state, info = batched_nuts_transition(
                state, potential, step_size, metric, generator, settings.max_tree_depth
            )
            if iteration < warmup:
                accept = to_numpy(info.accept_prob).astype(np.float64)
                points = to_numpy(state.position)
                changed = [
                    adaptation.update(iteration, points[chain], accept[chain])
                    for chain, adaptation in enumerate(adaptations)
                ]
                if any(changed):
                    metrics = [adaptation.metric for adaptation in adaptations]
                    metric = _batched(metrics, positions)
                    if iteration + 1 < warmup:
                        restarts = batched_initial_step_size(
                            state, potential, metric, generator, step_size
                        )
                        for adaptation, step in zip(adaptations, restarts.tolist()):
                            adaptation.restart(step)
                step_size = torch.tensor(
                    [adaptation.step_size for adaptation in adaptations]
                ).to(dtype=dtype, device=positions.device)
                if iteration in checks and traced:
                    mismatches = _compare(potential, reference, state.position)
                    if any(m is not None for m in mismatches):
                        traced = False
                        potential = RowwisePotential(reference)
                        state = _restart(state, positions, potential)
            else:
                recorder.record(iteration - warmup, state, info)
            if progress:  # the summary costs a device synchronisation
                postfix = _postfix(iteration < warmup, step_size, info)
                bar.set_postfix_str(postfix, refresh=False)
                bar.update(1)
    finally:
        bar.close()
    return recorder.results(state, step_size, metrics, mismatches, traced)


def _batched(metrics: Sequence[Metric], like: torch.Tensor) -> BatchedMetric:
    inverse = np.stack([metric.inverse_mass for metric in metrics])
    return BatchedMetric(torch.from_numpy(inverse).to(like))


def _compare(
    potential: BatchedPotential, reference: Potential, positions: torch.Tensor
) -> list[str | None]:
    """How the batched potential differs from ``reference`` at each chain's
    position."""
    energies, grads = potential(positions)
    return differences(
        to_numpy(energies), to_numpy(grads), reference, to_numpy(positions)
    )


def _restart(
    state: BatchedState, starts: torch.Tensor, potential: BatchedPotential
) -> BatchedState:
    """The chains' points on a new potential: where they are, or back at their start
    where it is not finite."""
    energy, grad = potential(state.position)
    finite = torch.isfinite(energy) & torch.isfinite(grad).all(-1)
    positions = torch.where(finite.unsqueeze(-1), state.position, starts)
    return BatchedState(positions, *potential(positions))


def _postfix(warming: bool, step_size: torch.Tensor, info: BatchedNUTSInfo) -> str:
    phase = "warmup" if warming else "sampling"
    return (
        f"{phase} median step {float(step_size.median()):.2g} "
        f"accept {float(info.accept_prob.mean()):.2f} "
        f"divergent {int(info.diverging.sum())}"
    )


class _Recorder:
    """The draws and statistics of every chain after warm-up, kept on the device
    until the end."""

    def __init__(self, num_samples: int, like: torch.Tensor) -> None:
        chains, dim = like.shape
        self.positions = like.new_empty(num_samples, chains, dim)
        self.stats: dict[str, torch.Tensor] = {}
        self.num_samples = num_samples

    def record(self, draw: int, state: BatchedState, info: BatchedNUTSInfo) -> None:
        self.positions[draw] = state.position
        fields = {**info._asdict(), "log_density": -state.potential_energy}
        for name, value in fields.items():
            if name not in self.stats:
                dtype = torch.float64 if value.is_floating_point() else value.dtype
                self.stats[name] = value.new_empty(
                    (self.num_samples, *value.shape), dtype=dtype
                )
            self.stats[name][draw] = value

    def results(
        self,
        state: BatchedState,
        step_size: torch.Tensor,
        metrics: Sequence[Metric],
        mismatches: Sequence[str | None],
        traced: bool,
    ) -> list[dict[str, Any]]:
        positions = to_numpy(self.positions)
        stats = {name: to_numpy(value) for name, value in self.stats.items()}
        final = to_numpy(state.position)
        return [
            {
                "positions": np.ascontiguousarray(positions[:, chain]),
                "stats": {
                    name: np.ascontiguousarray(value[:, chain])
                    for name, value in stats.items()
                },
                "position": final[chain],
                "step_size": step,
                "inverse_mass": metrics[chain].inverse_mass,
                "mismatch": mismatches[chain],
                "traced": traced,
            }
            for chain, step in enumerate(step_size.tolist())
        ]


__all__ = ["sample_vectorized"]
