"""``borch.infer.mcmc``: NUTS with Stan-style warm-up on several chains.

The runner works on a copy of the model whose latent variables are point masses in
unconstrained space; their flat vector of unconstrained values is the position the
sampler moves. The model's log density and gradient are traced once and replayed (see
:mod:`borch.infer.tracing`), or evaluated by running the model where tracing is not
possible.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from borch.infer.adaptation import WindowedAdaptation, initial_step_size
from borch.infer.chains import Report, available_cores, run_chains
from borch.infer.hamiltonian import IntegratorState
from borch.infer.mcmc_result import MCMCResult
from borch.infer.model_conversion import ModelPotential, sampling_copy
from borch.infer.nuts import check_tree_depth, nuts_transition
from borch.infer.potential import Potential
from borch.infer.tracing import TraceError, traced_potential

logger = logging.getLogger(__name__)

#: Initial points tried per chain before giving up on a non-finite log density.
INITIAL_POINT_TRIES = 100
#: Initial points are drawn uniformly in (-RADIUS, RADIUS) in unconstrained space.
INITIAL_RADIUS = 2.0


class Settings(NamedTuple):
    """What every chain does."""

    num_samples: int
    warmup: int
    target_accept: float
    max_tree_depth: int


def mcmc(
    model: nn.Module,
    *args: Any,
    num_samples: int = 1000,
    warmup: int = 1000,
    chains: int = 4,
    seed: int | None = None,
    progress: bool = True,
    target_accept: float = 0.8,
    max_tree_depth: int = 10,
    parallel: bool | None = None,
    trace: bool = True,
    **kwargs: Any,
) -> MCMCResult:
    """Sample the latent variables of a model with NUTS.

    Args:
        model: a :class:`borch.Module` (or a network containing them); calling
            ``model(*args, **kwargs)`` runs the model. Observed variables stay fixed;
            every other continuous random variable it uses is sampled, in
            unconstrained space. The model itself is not changed.
        num_samples: draws per chain after warm-up.
        warmup: warm-up iterations per chain (Stan's windows: step size by dual
            averaging throughout, the diagonal mass matrix in doubling windows).
        chains: the number of independent chains.
        seed: seed of every random number; ``None`` draws one from torch's global
            generator (so ``torch.manual_seed`` makes runs repeatable).
        progress: show a progress bar per chain (step size, acceptance, divergences).
        target_accept: the mean acceptance statistic warm-up aims for; raise it (e.g.
            0.95) to take smaller steps where the posterior is hard.
        max_tree_depth: at most ``2**max_tree_depth`` leapfrog steps per draw.
        parallel: run chains in worker processes (one torch thread each); ``None``
            does so when there is more than one chain and core. Models on an
            accelerator run their chains one after the other in this process. The
            same ``seed`` gives the same draws either way.
        trace: replay a trace of the model's log density and gradient (much faster);
            models that cannot be traced (value-dependent control flow) are run
            instead either way.
        kwargs: passed to the model, apart from the keywords above.

    Returns:
        An :class:`MCMCResult`: ``samples`` by variable name (``(chains, draws,
        *shape)``), divergences, sampler statistics, ``to_arviz()`` and ``summary()``.

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
    settings = Settings(
        num_samples=_count("num_samples", num_samples, minimum=1),
        warmup=_count("warmup", warmup, minimum=0),
        target_accept=_fraction("target_accept", target_accept),
        max_tree_depth=check_tree_depth(max_tree_depth),
    )
    chains = _count("chains", chains, minimum=1)
    if seed is None:
        seed = int(torch.randint(0, 2**62, ()).item())
    elif isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise TypeError(f"seed must be a non-negative integer or None, got {seed!r}")
    seed = int(seed)

    eager = ModelPotential(sampling_copy(model), args, kwargs)
    init_seeds, chain_seeds = _chain_seeds(seed, chains)
    starts = [_initial_state(eager, s) for s in init_seeds]
    _check_deterministic(eager, starts[0])
    potential = _fast_potential(eager, starts[:2]) if trace else eager
    traced = potential is not eager

    if eager.device.type != "cpu":
        parallel = False  # worker processes cannot share an accelerator safely
    elif parallel is None:
        parallel = chains > 1 and available_cores() > 1
    job = ChainJob(eager, potential, traced, starts, chain_seeds, settings)
    results = run_chains(
        job,
        chains,
        settings.warmup + settings.num_samples,
        parallel=bool(parallel),
        progress=progress,
    )
    return _assemble(eager, results, seed, traced)


def _count(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


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


def _initial_state(potential: ModelPotential, seed: int) -> IntegratorState:
    """A start drawn uniformly in (-2, 2) in unconstrained space with a finite log
    density and gradient; an error naming the culprits if none is found."""
    rng = np.random.default_rng(seed)
    for _ in range(INITIAL_POINT_TRIES):
        uniform = rng.uniform(-INITIAL_RADIUS, INITIAL_RADIUS, potential.dim)
        position = uniform.astype(potential.numpy_dtype)
        energy, grad = potential(position)
        if math.isfinite(energy) and np.isfinite(grad).all():
            return IntegratorState(position, np.zeros_like(position), energy, grad)
    raise ValueError(
        f"the model's log density is not finite at any of {INITIAL_POINT_TRIES} "
        f"initial points drawn uniformly in (-{INITIAL_RADIUS:g}, {INITIAL_RADIUS:g}) "
        f"in unconstrained space: {_explain(potential, position, grad)}"
    )


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


def _explain(potential: ModelPotential, position: np.ndarray, grad: np.ndarray) -> str:
    bad = [
        f"'{name}' ({value})"
        for name, value in potential.log_density_terms(position)
        if not math.isfinite(value)
    ]
    if bad:
        return (
            "at the last one, the log density of "
            + ", ".join(bad)
            + " is not finite. Check the priors' and likelihood's arguments and the "
            "observed values against their supports"
        )
    bad = [
        f"'{latent.name}'"
        for latent in potential.latents
        if not np.isfinite(grad[latent.offset : latent.offset + latent.size]).all()
    ]
    return (
        "at the last one, the gradient with respect to "
        + ", ".join(bad or ["some variables"])
        + " is not finite"
    )


def _fast_potential(
    eager: ModelPotential, starts: Sequence[IntegratorState]
) -> Potential:
    """The traced potential, checked at ``starts``; ``eager`` if tracing fails."""
    points = [start.position for start in starts]
    try:
        return traced_potential(
            eager.evaluate, eager, points, eager.device, eager.dtype
        )
    except TraceError as error:
        logger.info("evaluating the model eagerly: %s", error)
        return eager


class ChainJob:
    """One chain's work, picklable for worker processes started by ``spawn``.

    The potential is not pickled: a process that does not inherit it rebuilds it from
    the model (traced again if it was traced here).
    """

    def __init__(
        self,
        eager: ModelPotential,
        potential: Potential,
        traced: bool,
        starts: Sequence[IntegratorState],
        seeds: Sequence[int],
        settings: Settings,
    ) -> None:
        self.eager = eager
        self.trace = traced
        self.starts = list(starts)
        self.seeds = list(seeds)
        self.settings = settings
        self.potential: Potential | None = potential

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

    def __call__(self, chain: int, report: Report) -> dict[str, np.ndarray]:
        return sample_chain(
            self._potential(),
            self.starts[chain],
            self.settings,
            np.random.default_rng(self.seeds[chain]),
            lambda done, postfix: report(chain, done, postfix),
        )


def sample_chain(
    potential: Potential,
    start: IntegratorState,
    settings: Settings,
    rng: np.random.Generator,
    report: Callable[[int, str], None] | None = None,
) -> dict[str, np.ndarray]:
    """Warm up and sample one chain; return its draws and statistics.

    ``report(done, postfix)`` is called after every iteration.
    """
    num_samples, warmup = settings.num_samples, settings.warmup
    position = start.position
    inv_mass = np.ones_like(position)
    step_size = initial_step_size(start, potential, inv_mass, rng)
    adaptation = WindowedAdaptation(
        warmup, position.size, step_size, settings.target_accept, position.dtype
    )
    positions = np.empty((num_samples, position.size), dtype=position.dtype)
    stats = {key: np.empty(num_samples, dtype=dtype) for key, dtype in _STATS.items()}
    state = start
    phase_accept, phase_divergent, phase_start = 0.0, 0, 0
    for iteration in range(warmup + num_samples):
        if iteration == warmup:
            phase_accept, phase_divergent, phase_start = 0.0, 0, iteration
        state, info = nuts_transition(
            state, potential, step_size, inv_mass, rng, settings.max_tree_depth
        )
        if iteration < warmup:
            if adaptation.update(iteration, state.position, info.accept_prob):
                inv_mass = adaptation.inv_mass
                if iteration + 1 < warmup:
                    adaptation.restart(
                        initial_step_size(state, potential, inv_mass, rng, step_size)
                    )
            step_size = adaptation.step_size
        else:
            draw = iteration - warmup
            positions[draw] = state.position
            stats["diverging"][draw] = info.diverging
            stats["accept_prob"][draw] = info.accept_prob
            stats["tree_depth"][draw] = info.tree_depth
            stats["num_steps"][draw] = info.num_steps
            stats["energy"][draw] = info.energy
            stats["log_density"][draw] = -state.potential_energy
        phase_accept += info.accept_prob
        phase_divergent += info.diverging
        if report is not None:
            phase = "warmup" if iteration < warmup else "sampling"
            mean_accept = phase_accept / (iteration + 1 - phase_start)
            report(
                iteration + 1,
                f"{phase} step {step_size:.2g} accept {mean_accept:.2f} "
                f"divergent {phase_divergent}",
            )
    return {
        "positions": positions,
        "step_size": step_size,
        "inv_mass": inv_mass,
        **stats,
    }


_STATS = {
    "diverging": np.bool_,
    "accept_prob": np.float64,
    "tree_depth": np.int64,
    "num_steps": np.int64,
    "energy": np.float64,
    "log_density": np.float64,
}


def _assemble(
    potential: ModelPotential,
    results: list[dict[str, np.ndarray]],
    seed: int,
    traced: bool,
) -> MCMCResult:
    positions = np.stack([r["positions"] for r in results])
    samples = potential.constrained(potential.tensor(positions))
    stats = {
        key: torch.from_numpy(np.stack([r[key] for r in results])) for key in _STATS
    }
    result = MCMCResult(
        samples,
        stats,
        step_size=torch.tensor([r["step_size"] for r in results], dtype=torch.float64),
        inverse_mass_matrix=torch.from_numpy(
            np.stack([r["inv_mass"] for r in results])
        ),
        seed=seed,
        traced=traced,
    )
    message = result.divergence_warning()
    if message is not None:
        warnings.warn(message, RuntimeWarning, stacklevel=3)
    return result


__all__ = ["MCMCResult", "mcmc", "sample_chain"]
