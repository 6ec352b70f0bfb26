"""``borch.infer.mcmc``: an MCMC kernel (NUTS by default) with Stan-style warm-up on
several chains.

The runner works on a copy of the model whose latent variables are point masses in
unconstrained space; their flat vector of unconstrained values is the position the
kernel moves (:mod:`borch.infer.hmc.kernels`). The model's log density and gradient
are traced once and replayed (see :mod:`borch.infer.hmc.traced.tracing`), or evaluated
by running the model where tracing is not possible. A traced potential is compared
with the model again at a few warm-up iterations (:func:`check_iterations`); a chain
where they differ continues on the model itself.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from borch.infer.hmc.adaptation import WindowedAdaptation, check_iterations
from borch.infer.hmc.batched_potential import RowwisePotential
from borch.infer.hmc.chains import Report, available_cores, run_chains
from borch.infer.hmc.checkpoint import ChainCheckpoint
from borch.infer.hmc.checkpoint import tensor as checkpoint_tensor
from borch.infer.hmc.hamiltonian import IntegratorState
from borch.infer.hmc.initialization import check_init, initial_point
from borch.infer.hmc.kernels import NUTS, Kernel, as_kernel
from borch.infer.hmc.metric import MassLayout, Metric
from borch.infer.hmc.model_conversion import ModelPotential, sampling_copy
from borch.infer.hmc.potential import Potential
from borch.infer.hmc.result import MCMCResult
from borch.infer.hmc.traced.batched import batched_traced_potential
from borch.infer.hmc.traced.tracing import (
    TraceError,
    UntestedTorchError,
    disagreement,
    traced_potential,
)
from borch.infer.hmc.vectorized import sample_vectorized
from borch.validation import check_count

logger = logging.getLogger(__name__)

#: Draws between checkpoints when ``checkpoint`` is given.
CHECKPOINT_EVERY = 100


class Settings(NamedTuple):
    """What every chain does (``max_tree_depth`` is that of the NUTS kernel
    :func:`sample_chain` uses when it is given no kernel)."""

    num_samples: int
    warmup: int
    target_accept: float
    max_tree_depth: int = 10


def mcmc(
    model: nn.Module,
    *args: Any,
    num_samples: int = 1000,
    warmup: int = 1000,
    chains: int = 4,
    seed: int | None = None,
    progress: bool = True,
    target_accept: float = 0.8,
    max_tree_depth: int | None = None,
    parallel: bool | None = None,
    chain_method: str | None = None,
    trace: bool = True,
    kernel: Kernel | str | None = None,
    dense_mass: bool | Sequence[Sequence[str]] | None = None,
    init: str | dict[str, Any] | None = None,
    continue_from: MCMCResult | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = CHECKPOINT_EVERY,
    **kwargs: Any,
) -> MCMCResult:
    """Sample the latent variables of a model with NUTS (or another kernel).

    Args:
        model: a :class:`borch.Module` (or a network containing them); calling
            ``model(*args, **kwargs)`` runs the model. Observed variables stay fixed;
            every other continuous random variable it uses is sampled, in
            unconstrained space. The model itself is not changed.
        num_samples: draws per chain after warm-up.
        warmup: warm-up iterations per chain (Stan's windows: step size by dual
            averaging throughout, the diagonal mass matrix in doubling windows; a
            kernel that is not adaptive only burns in).
        chains: the number of independent chains.
        seed: seed of every random number; ``None`` draws one from torch's global
            generator (so ``torch.manual_seed`` makes runs repeatable).
        progress: show a progress bar per chain (step size, acceptance, divergences).
        target_accept: the mean acceptance statistic warm-up aims for; raise it (e.g.
            0.95) to take smaller steps where the posterior is hard.
        max_tree_depth: at most ``2**max_tree_depth`` leapfrog steps per draw of the
            default NUTS kernel (10 if ``None``).
        parallel: ``True`` is ``chain_method="parallel"``, ``False``
            ``"sequential"`` (giving both is an error unless they agree).
        chain_method: how the chains run. ``"parallel"``: in worker processes (one
            torch thread each); ``"sequential"``: one after the other in this
            process; the same ``seed`` gives the same draws either way. Models on an
            accelerator run ``"parallel"`` as ``"sequential"``. ``"vectorized"``: all
            chains as one batched computation in this process (the model's trace
            replayed on a ``(chains, dim)`` batch of positions, and a batched NUTS in
            torch where every chain has its own tree, step size, mass matrix and
            warm-up), on the model's device; best with many chains or on a GPU. Its
            draws differ from the other methods' (other random numbers) but are the
            same for the same ``seed`` on the same device. It supports
            ``dense_mass``, ``init`` and ``continue_from``, but only the NUTS kernel
            and no ``checkpoint``; a model that cannot be traced is run chain by
            chain. ``None``: ``"parallel"`` when there is more than one chain and
            core, else ``"sequential"``.
        trace: replay a trace of the model's log density and gradient (much faster);
            models that cannot be traced (value-dependent control flow) are run
            instead either way, and so is every model on a torch version tracing was
            not tested on (with a ``UserWarning``). A chain whose trace differs from
            the model at a warm-up check continues on the model (with a
            ``RuntimeWarning``). On the CPU, with numba installed (``pip install
            borch[fast]``), the per-chain trace is compiled to machine code where
            numba runs every operation of it (else it is replayed in numpy); set
            the environment variable ``BORCH_NUMBA=0`` to replay it in numpy.
        kernel: ``None`` or ``"nuts"`` (:class:`~borch.infer.hmc.kernels.NUTS`),
            ``"hmc"`` (:class:`~borch.infer.hmc.kernels.HMC`), or a
            :class:`~borch.infer.hmc.kernels.Kernel` instance; it must be picklable
            for worker processes.
        dense_mass: the mass matrix warm-up adapts: ``False`` a diagonal one,
            ``True`` a dense one over every latent coordinate (for posteriors with
            strong correlations; Stan's regularised covariance), or blocks of
            variable names, e.g. ``[("alpha", "beta")]``: a dense block over each
            group (a name alone is a dense block over that variable's elements),
            diagonal elsewhere. ``None``: that of ``continue_from``, else diagonal.
        init: where chains start: ``"uniform"`` (the default: uniform in (-2, 2) in
            unconstrained space), ``"prior"`` (a prior draw), ``"median"`` (the
            median of 15 prior draws), or a dict of values of latent variables by
            name, in their own space (the others start by the default).
        continue_from: an :class:`MCMCResult` of the same model and number of
            chains: each chain starts at its last draw with its adapted step size
            and mass matrix (``warmup=0`` keeps them; a warm-up adapts on from
            them).
        checkpoint: a folder; each chain saves its draws, position, step size,
            mass matrix and random state there (``chain_<k>.pt``) when warm-up ends
            and every ``checkpoint_every`` draws. Calling ``mcmc`` again with the
            same arguments resumes from the files, with the same draws as a run that
            was never interrupted (a chain stopped during warm-up starts it again).
            Needs a ``seed``; a kernel whose state holds more than the position,
            step size and metric (not NUTS or HMC) resumes without the rest.
        checkpoint_every: draws between checkpoints.
        kwargs: passed to the model, apart from the keywords above.

    Returns:
        An :class:`MCMCResult`: ``samples`` by variable name (``(chains, draws,
        *shape)``), divergences, the kernel's statistics (``stats``), ``to_arviz()``
        and ``summary()``.

    References:
        Hoffman and Gelman, "The No-U-Turn Sampler", JMLR 2014; Betancourt, "A
        Conceptual Introduction to Hamiltonian Monte Carlo", arXiv:1701.02434;
        the Stan Reference Manual (warm-up).

    Example:
        >>> import torch
        >>> import borch
        >>> from borch import distributions as dist
        >>> class Mean(borch.Module):
        ...     def forward(self, y):
        ...         self.mu = dist.Normal(0.0, 10.0)
        ...         self.y = dist.Normal(self.mu.expand(y.shape), 1.0)
        >>> model = Mean()
        >>> y = torch.tensor([4.8, 5.1, 5.3, 4.6])
        >>> model.observe(y=y)
        >>> result = borch.infer.mcmc(
        ...     model, y, num_samples=300, warmup=200, chains=2, seed=1, progress=False
        ... )
        >>> result.samples["mu"].shape
        torch.Size([2, 300])
        >>> round(result.samples["mu"].mean().item(), 1)
        5.0
    """
    kernel = as_kernel(kernel, max_tree_depth)
    chain_method = _chain_method(chain_method, parallel)
    if chain_method == "vectorized":
        _check_vectorizable(kernel, checkpoint)
    settings = Settings(
        num_samples=check_count("num_samples", num_samples, minimum=1),
        warmup=check_count("warmup", warmup, minimum=0),
        target_accept=_fraction("target_accept", target_accept),
        max_tree_depth=getattr(kernel, "max_tree_depth", 10),
    )
    chains = check_count("chains", chains, minimum=1)
    seed = check_count("seed", seed, minimum=0, allow_none=True)
    if checkpoint is not None and seed is None:
        raise ValueError(
            "checkpoint needs a seed: a run resumes from its checkpoint only when "
            "called again with the same seed (and the same other arguments)"
        )
    if seed is None:
        seed = int(torch.randint(0, 2**62, ()).item())

    eager = ModelPotential(sampling_copy(model), args, kwargs)
    init_seeds, chain_seeds = _chain_seeds(seed, chains)
    if continue_from is not None:
        if init is not None:
            raise ValueError("give init or continue_from, not both")
        starts, tuned = _continued(eager, continue_from, chains)
        dense_mass = continue_from.dense_mass if dense_mass is None else dense_mass
    else:
        init = check_init(init, eager)
        starts = [initial_point(eager, init, s) for s in init_seeds]
        tuned = None
    dense_mass = False if dense_mass is None else dense_mass
    layout = mass_layout(eager, dense_mass)
    if tuned is not None:
        tuned = [(step, layout.from_matrix(matrix)) for step, matrix in tuned]
    _check_deterministic(eager, starts[0])
    if chain_method == "vectorized":
        results = _vectorized(
            eager, starts, settings, chain_seeds[0], layout, tuned, trace, progress
        )
        return _assemble(eager, results, seed, dense_mass)
    potential = _fast_potential(eager, starts[:2]) if trace else eager
    traced = potential is not eager

    if eager.device.type != "cpu":
        parallel = False  # worker processes cannot share an accelerator safely
    elif chain_method is None:
        parallel = chains > 1 and available_cores() > 1
    else:
        parallel = chain_method == "parallel"
    checkpoints = None
    if checkpoint is not None:
        header = {
            "seed": seed,
            "chains": chains,
            "dim": eager.dim,
            **settings._asdict(),
        }
        checkpoints = [
            ChainCheckpoint(checkpoint, chain, checkpoint_every, header)
            for chain in range(chains)
        ]
    job = ChainJob(
        eager,
        potential,
        traced,
        starts,
        chain_seeds,
        settings,
        kernel,
        layout=layout,
        tuned=tuned,
        checkpoints=checkpoints,
    )
    results = run_chains(
        job,
        chains,
        settings.warmup + settings.num_samples,
        parallel=bool(parallel),
        progress=progress,
    )
    return _assemble(eager, results, seed, dense_mass)


def mass_layout(
    potential: ModelPotential, dense_mass: bool | Sequence[Sequence[str]]
) -> MassLayout:
    """The blocks of the mass matrix ``dense_mass`` asks for (see :func:`mcmc`)."""
    if isinstance(dense_mass, bool):
        return MassLayout(
            potential.dim, [np.arange(potential.dim)] if dense_mass else []
        )
    latents = {latent.name: latent for latent in potential.latents}
    if isinstance(dense_mass, str) or not all(
        isinstance(group, (tuple, list)) for group in dense_mass
    ):
        raise TypeError(
            "dense_mass must be True, False or a list of tuples of variable names, "
            f'e.g. [("alpha", "beta")], got {dense_mass!r}'
        )
    blocks, seen = [], set()
    for group in dense_mass:
        for name in group:
            if name not in latents:
                raise ValueError(
                    f"dense_mass names '{name}', which is not a latent variable of the "
                    f"model; they are {list(latents)}"
                )
            if name in seen:
                raise ValueError(f"dense_mass names '{name}' in two blocks")
            seen.add(name)
        blocks.append(
            np.concatenate(
                [
                    np.arange(latents[n].offset, latents[n].offset + latents[n].size)
                    for n in group
                ]
            )
        )
    return MassLayout(potential.dim, blocks)


def _continued(
    potential: ModelPotential, result: MCMCResult, chains: int
) -> tuple[list[IntegratorState], list[tuple[float, np.ndarray]] | None]:
    """The last point of each chain of ``result``, and its step size and inverse mass
    matrix (``None`` for a kernel without them)."""
    if not isinstance(result, MCMCResult):
        raise TypeError(
            f"continue_from must be an MCMCResult, got {type(result).__name__}"
        )
    positions = result.final_positions
    if positions.shape != (chains, potential.dim):
        raise ValueError(
            f"continue_from has {positions.shape[0]} chains of {positions.shape[1]} "
            f"coordinates, but this run has {chains} chains of {potential.dim}: "
            "continue with the same model and number of chains"
        )
    starts = []
    for chain, position in enumerate(positions.numpy()):
        position = position.astype(potential.numpy_dtype)
        energy, grad = potential(position)
        if not (math.isfinite(energy) and np.isfinite(grad).all()):
            raise ValueError(
                f"the log density is not finite at the last draw of chain {chain} of "
                "continue_from: is it a result of the same model and data?"
            )
        starts.append(IntegratorState(position, np.zeros_like(position), energy, grad))
    if result.step_size is None:
        return starts, None
    tuned = [
        (float(step), matrix.numpy())
        for step, matrix in zip(result.step_size, result.inverse_mass_matrix)
    ]
    return starts, tuned


def _fraction(name: str, value: Any) -> float:
    value = float(value)
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {value}")
    return value


def _chain_seeds(seed: int, chains: int) -> tuple[list[int], list[int]]:
    """Independent seeds per chain for its initial point and for its transitions."""
    streams = np.random.SeedSequence(seed).spawn(chains)
    init, run = [], []
    for stream in streams:
        first, second = stream.generate_state(2, dtype=np.uint64)
        init.append(int(first) >> 1)
        run.append(int(second) >> 1)
    return init, run


def _check_deterministic(potential: ModelPotential, start: IntegratorState) -> None:
    """Refuse a log density that changes between evaluations at the same point."""
    energy, _ = potential(start.position)
    if not math.isclose(energy, start.potential_energy, rel_tol=1e-6, abs_tol=1e-9):
        raise ValueError(
            "the model's log density changed between two evaluations at the same "
            f"latent values ({-start.potential_energy:.6g}, then {-energy:.6g}): MCMC "
            "needs it to be a function of the latent variables. Is something in the "
            "model random (dropout in training mode, noise drawn with torch.randn, a "
            "random variable drawn outside a borch.Module)?"
        )


def _fast_potential(
    eager: ModelPotential, starts: Sequence[IntegratorState]
) -> Potential:
    """The traced potential, checked at ``starts``; ``eager`` if tracing fails (with
    a warning if the torch version is the reason)."""
    points = [start.position for start in starts]
    traced = _traced_or_none(traced_potential, eager, points)
    return eager if traced is None else traced


def _traced_or_none(trace: Callable, eager: ModelPotential, points: Any) -> Any:
    """``trace(eager.evaluate, eager, points, device, dtype)``, or ``None`` if the
    model cannot be traced (with a warning if the torch version is the reason)."""
    try:
        return trace(eager.evaluate, eager, points, eager.device, eager.dtype)
    except UntestedTorchError as error:
        warnings.warn(str(error), UserWarning, stacklevel=4)
    except TraceError as error:
        logger.info("evaluating the model eagerly: %s", error)
    return None


#: The values of ``mcmc(chain_method=...)``.
CHAIN_METHODS = ("parallel", "sequential", "vectorized")


def _chain_method(chain_method: str | None, parallel: bool | None) -> str | None:
    """The chain method ``chain_method`` and ``parallel`` ask for together (``None``:
    choose by the cores)."""
    if chain_method is not None and chain_method not in CHAIN_METHODS:
        raise ValueError(
            f"chain_method must be one of {CHAIN_METHODS} or None, got {chain_method!r}"
        )
    if parallel is None:
        return chain_method
    if not isinstance(parallel, bool):
        raise TypeError(f"parallel must be True, False or None, got {parallel!r}")
    implied = "parallel" if parallel else "sequential"
    if chain_method not in (None, implied):
        raise ValueError(
            f"parallel={parallel} asks for chain_method={implied!r}, but "
            f"chain_method={chain_method!r} was given: give one of the two"
        )
    return implied


def _check_vectorizable(kernel: Kernel, checkpoint: Any) -> None:
    if type(kernel) is not NUTS:
        raise ValueError(
            f'chain_method="vectorized" runs the NUTS kernel only, got kernel={kernel!r}: '
            'use chain_method="parallel" or "sequential" for other kernels'
        )
    if checkpoint is not None:
        raise ValueError(
            'chain_method="vectorized" does not write checkpoints: use '
            'chain_method="parallel" or "sequential" with checkpoint='
        )


def _vectorized(
    eager: ModelPotential,
    starts: Sequence[IntegratorState],
    settings: Settings,
    seed: int,
    layout: MassLayout,
    tuned: Sequence[tuple[float, Metric]] | None,
    trace: bool,
    progress: bool,
) -> list[dict[str, Any]]:
    """Every chain at once (:func:`~borch.infer.hmc.vectorized.sample_vectorized`),
    on the batched trace of the model where it can be traced."""
    points = np.stack([start.position for start in starts])
    potential = (
        _traced_or_none(batched_traced_potential, eager, points) if trace else None
    )
    reference = None if potential is None else eager
    if potential is None:
        potential = RowwisePotential(eager)
    return sample_vectorized(
        potential,
        eager.tensor(points),
        settings,
        seed,
        layout,
        tuned,
        reference=reference,
        progress=progress,
    )


class ChainJob:
    """One chain's work, picklable for worker processes started by ``spawn``.

    The potential is not pickled: a process that does not inherit it rebuilds it from
    the model (traced again if it was traced here). A chain's result says whether its
    draws came from the traced potential (``traced``) and why not if it switched
    (``mismatch``), so that the parent process can warn.
    """

    def __init__(
        self,
        eager: ModelPotential,
        potential: Potential,
        traced: bool,
        starts: Sequence[IntegratorState],
        seeds: Sequence[int],
        settings: Settings,
        kernel: Kernel,
        layout: MassLayout | None = None,
        tuned: Sequence[tuple[float, Metric]] | None = None,
        checkpoints: Sequence[ChainCheckpoint] | None = None,
    ) -> None:
        self.eager = eager
        self.trace = traced
        self.starts = list(starts)
        self.seeds = list(seeds)
        self.settings = settings
        self.kernel = kernel
        self.potential: Potential | None = potential
        self.layout = layout
        self.tuned = tuned
        self.checkpoints = checkpoints

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["potential"] = None
        return state

    def _potential(self) -> Potential:
        if self.potential is None:
            self.potential = (
                _fast_potential(self.eager, self.starts[:1])
                if self.trace
                else self.eager
            )
        return self.potential

    def __call__(self, chain: int, report: Report) -> dict[str, Any]:
        potential = self._potential()
        traced = potential is not self.eager
        result = sample_chain(
            potential,
            self.starts[chain],
            self.settings,
            np.random.default_rng(self.seeds[chain]),
            lambda done, postfix: report(chain, done, postfix),
            kernel=self.kernel,
            reference=self.eager if traced else None,
            layout=self.layout,
            tuned=None if self.tuned is None else self.tuned[chain],
            checkpoint=None if self.checkpoints is None else self.checkpoints[chain],
        )
        result["traced"] = traced and result["mismatch"] is None
        return result


def sample_chain(
    potential: Potential,
    start: IntegratorState,
    settings: Settings,
    rng: np.random.Generator,
    report: Callable[[int, str], None] | None = None,
    kernel: Kernel | None = None,
    reference: Potential | None = None,
    layout: MassLayout | None = None,
    tuned: tuple[float, Metric] | None = None,
    checkpoint: ChainCheckpoint | None = None,
) -> dict[str, Any]:
    """Warm up and sample one chain with ``kernel``; return its draws and statistics.

    Args:
        potential: what the kernel moves on.
        start: the initial point (its ``position`` is used).
        settings: draws, warm-up and the adaptation's target.
        rng: the source of every random number.
        report: ``report(done, postfix)`` is called after every iteration.
        kernel: a :class:`~borch.infer.hmc.kernels.Kernel`; by default
            ``NUTS(settings.max_tree_depth)``. An adaptive kernel gets its step size
            and metric from Stan's windowed warm-up.
        reference: the potential ``potential`` replays (the eager model behind a
            traced one). They are compared at :func:`check_iterations`; on a
            difference the chain continues on ``reference``.
        layout: the blocks of the mass matrix warm-up estimates (diagonal if
            ``None``).
        tuned: ``(step_size, metric)`` to start from (a continued chain) instead of
            the identity metric and a step size search; warm-up, if any, adapts on
            from them.
        checkpoint: where to save the sampling phase as it goes, and to resume it
            from if a checkpoint is there.

    Returns:
        ``positions (num_samples, dim)``; ``stats``, an array ``(num_samples, ...)``
        per field of the kernel's info plus ``log_density``; the final
        ``position``, ``step_size`` and ``inverse_mass`` (``None`` for kernels that
        are not adaptive); and ``mismatch``, a description of how ``potential``
        differed from ``reference`` (``None`` if it did not, or was not checked).
    """
    kernel = NUTS(settings.max_tree_depth) if kernel is None else kernel
    num_samples, warmup = settings.num_samples, settings.warmup
    position = start.position
    layout = MassLayout(position.size) if layout is None else layout
    resume = None if checkpoint is None else checkpoint.load()
    mismatch = None
    if resume is not None:
        mismatch = resume["mismatch"]
        if mismatch is not None and reference is not None:
            potential = reference
        position = resume["position"].numpy()
        rng.bit_generator.state = resume["rng"]
        if resume["step_size"] is not None:
            inverse_mass = resume["inverse_mass"].numpy()
            tuned = (resume["step_size"], layout.from_matrix(inverse_mass))
    state = kernel.init(position, potential)
    step_size = metric = adaptation = None
    if kernel.adaptive:
        if tuned is None:
            metric = layout.identity(position.dtype)
            state = kernel.tune(state, 1.0, metric)
            step_size = kernel.find_step_size(state, rng)
        else:
            step_size, metric = float(tuned[0]), tuned[1]
        state = kernel.tune(state, step_size, metric)
        adaptation = WindowedAdaptation(
            warmup, layout, step_size, settings.target_accept, position.dtype
        )
    checks = check_iterations(warmup) if reference is not None else set()
    positions = np.empty((num_samples, position.size), dtype=position.dtype)
    stats: dict[str, np.ndarray] | None = None
    progress = _Progress(report, warmup)
    first = 0
    if resume is not None:
        done = resume["draw"]
        first = warmup + done
        positions[:done] = resume["positions"].numpy()
        if resume["stats"]:
            stats = _restore(resume["stats"], num_samples)
        progress.phase_start = warmup

    def save(draws: int) -> None:
        checkpoint.save(
            {
                "draw": draws,
                "position": checkpoint_tensor(state.position),
                "step_size": step_size,
                "inverse_mass": None
                if metric is None
                else checkpoint_tensor(metric.inverse_mass),
                "rng": rng.bit_generator.state,
                "positions": checkpoint_tensor(positions[:draws]),
                "stats": {}
                if stats is None
                else {k: checkpoint_tensor(v[:draws]) for k, v in stats.items()},
                "mismatch": mismatch,
            }
        )

    for iteration in range(first, warmup + num_samples):
        state, info = kernel.step(state, rng)
        if iteration < warmup:
            if adaptation is not None:
                if adaptation.update(iteration, state.position, info.accept_prob):
                    metric = adaptation.metric
                    if iteration + 1 < warmup:
                        state = kernel.tune(state, step_size, metric)
                        adaptation.restart(kernel.find_step_size(state, rng))
                step_size = adaptation.step_size
                state = kernel.tune(state, step_size, metric)
            if iteration in checks and mismatch is None:
                mismatch = _compare(potential, reference, state.position)
                if mismatch is not None:
                    potential = reference
                    state = _restart(kernel, state, start, potential, step_size, metric)
            if iteration + 1 == warmup and checkpoint is not None:
                save(0)
        else:
            draw = iteration - warmup
            if stats is None:
                stats = _allocate(info, num_samples)
            positions[draw] = state.position
            for name, value in zip(info._fields, info):
                stats[name][draw] = value
            stats["log_density"][draw] = -state.potential_energy
            if checkpoint is not None and checkpoint.due(draw + 1, num_samples):
                save(draw + 1)
        progress.update(iteration, info, step_size)
    return {
        "positions": positions,
        "stats": stats,
        "position": state.position,
        "step_size": step_size,
        "inverse_mass": None if metric is None else metric.inverse_mass,
        "mismatch": mismatch,
    }


def _restore(saved: dict[str, torch.Tensor], num_samples: int) -> dict[str, np.ndarray]:
    """Statistics arrays for ``num_samples`` draws, the first ones from a checkpoint."""
    stats = {}
    for name, value in saved.items():
        value = value.numpy()
        stats[name] = np.empty((num_samples, *value.shape[1:]), dtype=value.dtype)
        stats[name][: len(value)] = value
    return stats


def _compare(
    potential: Potential, reference: Potential, position: np.ndarray
) -> str | None:
    energy, grad = potential(position)
    expected_energy, expected_grad = reference(position)
    dtype = getattr(reference, "dtype", position.dtype)
    return disagreement(energy, grad, expected_energy, expected_grad, dtype)


def _restart(
    kernel: Kernel,
    state: Any,
    start: IntegratorState,
    potential: Potential,
    step_size: float | None,
    metric: Metric | None,
) -> Any:
    """The kernel's state on a new ``potential``: at the current position, or back
    at the start where the new potential is not finite at it."""
    energy, grad = potential(state.position)
    finite = math.isfinite(energy) and np.isfinite(grad).all()
    state = kernel.init(state.position if finite else start.position, potential)
    if kernel.adaptive:
        state = kernel.tune(state, step_size, metric)
    return state


def _allocate(info: NamedTuple, num_samples: int) -> dict[str, np.ndarray]:
    """An array per field of ``info`` (typed and shaped as its value) and for the log
    density."""
    if not (isinstance(info, tuple) and hasattr(info, "_fields")):
        raise TypeError(
            f"a kernel's step must return (state, info) with info a NamedTuple, got "
            f"{type(info).__name__}"
        )
    if "log_density" in info._fields:
        raise ValueError(
            f"{type(info).__name__} has a field 'log_density': the runner records "
            "that itself (from the state's potential_energy); rename the field"
        )
    stats = {}
    for name, value in zip(info._fields, info):
        value = np.asarray(value)
        stats[name] = np.empty((num_samples, *value.shape), dtype=value.dtype)
    stats["log_density"] = np.empty(num_samples, dtype=np.float64)
    return stats


class _Progress:
    """The progress bar's text: phase, step size, mean acceptance, divergences."""

    def __init__(self, report: Callable[[int, str], None] | None, warmup: int):
        self.report, self.warmup = report, warmup
        self.accept, self.divergent, self.phase_start = 0.0, 0, 0

    def update(self, iteration: int, info: NamedTuple, step_size: float | None):
        if iteration == self.warmup:
            self.accept, self.divergent, self.phase_start = 0.0, 0, iteration
        accept = getattr(info, "accept_prob", None)
        diverging = getattr(info, "diverging", None)
        self.accept += 0.0 if accept is None else accept
        self.divergent += bool(diverging)
        if self.report is None:
            return
        parts = ["warmup" if iteration < self.warmup else "sampling"]
        if step_size is not None:
            parts.append(f"step {step_size:.2g}")
        if accept is not None:
            parts.append(
                f"accept {self.accept / (iteration + 1 - self.phase_start):.2f}"
            )
        if diverging is not None:
            parts.append(f"divergent {self.divergent}")
        self.report(iteration + 1, " ".join(parts))


def _assemble(
    potential: ModelPotential,
    results: list[dict[str, Any]],
    seed: int,
    dense_mass: bool | Sequence[Sequence[str]] = False,
) -> MCMCResult:
    positions = np.stack([r["positions"] for r in results])
    samples = potential.constrained(potential.tensor(positions))
    stats = {
        key: torch.from_numpy(np.stack([r["stats"][key] for r in results]))
        for key in results[0]["stats"]
    }
    adaptive = results[0]["step_size"] is not None
    result = MCMCResult(
        samples,
        stats,
        step_size=torch.tensor([r["step_size"] for r in results], dtype=torch.float64)
        if adaptive
        else None,
        inverse_mass_matrix=torch.from_numpy(
            np.stack([r["inverse_mass"] for r in results])
        )
        if adaptive
        else None,
        seed=seed,
        traced=[r["traced"] for r in results],
        final_positions=torch.from_numpy(np.stack([r["position"] for r in results])),
        dense_mass=dense_mass,
        model=potential,
        positions=torch.from_numpy(positions),
    )
    for chain, r in enumerate(results):
        if r["mismatch"] is not None:
            warnings.warn(
                f"chain {chain}: the traced potential differs from the model at a "
                f"warm-up point ({r['mismatch']}), so the chain switched to evaluating "
                "the model eagerly from there on: its draws are from the model "
                "itself. Tracing this model is not reliable; pass trace=False.",
                RuntimeWarning,
                stacklevel=3,
            )
    message = result.divergence_warning()
    if message is not None:
        warnings.warn(message, RuntimeWarning, stacklevel=3)
    return result


__all__ = [
    "CHAIN_METHODS",
    "MCMCResult",
    "Settings",
    "check_iterations",
    "mass_layout",
    "mcmc",
    "sample_chain",
]
