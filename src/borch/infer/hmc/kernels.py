"""MCMC kernels: ``init(position, potential) -> state`` and ``step(state, rng) ->
(state, info)``, in the style of BlackJAX and NumPyro.

A kernel is a small configuration object (picklable, so chains can run in worker
processes); everything that changes along a chain lives in its *state*, a NamedTuple
with at least ``position`` (a flat numpy vector) and ``potential_energy`` (the
negative log density there), and usually the potential it moves on. ``info`` is a
NamedTuple of what one step did; :func:`borch.infer.mcmc` stores every field of it
after warm-up, named as the field and typed as its first value.

Step size and metric: a kernel whose ``adaptive`` is true is tuned during warm-up by
the runner (Stan's windows: dual averaging of the step size on ``info.accept_prob``,
a diagonal mass matrix from the draws). The runner hands the values to the kernel
through :meth:`Kernel.tune`, which returns a state holding them, so ``step`` stays a
function of the state alone. Kernels with ``adaptive = False`` (the default) are run
as they are, warm-up then only burns in.
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import numpy as np

from borch.infer.hmc.adaptation import initial_step_size
from borch.infer.hmc.hamiltonian import (
    IntegratorState,
    check_num_steps,
    hmc_transition,
)
from borch.infer.hmc.metric import DiagonalMetric, Metric
from borch.infer.hmc.nuts import check_tree_depth, nuts_transition
from borch.infer.hmc.potential import Potential


class Kernel:
    """The interface of an MCMC kernel for :func:`borch.infer.mcmc`.

    Subclasses implement :meth:`init` and :meth:`step`. Kernels that take a step size
    and a metric set ``adaptive = True``, implement :meth:`tune` and
    :meth:`find_step_size`, and report ``accept_prob`` in their ``info`` (see
    :class:`HamiltonianKernel`).

    Example:
        A complete random-walk Metropolis kernel (no gradients, no step size
        adaptation), run through :func:`borch.infer.mcmc`:

        >>> import math
        >>> from typing import NamedTuple
        >>> import numpy as np
        >>> import torch
        >>> import borch
        >>> from borch import distributions as dist
        >>> from borch.infer import Kernel
        >>> class RandomWalkState(NamedTuple):
        ...     position: np.ndarray
        ...     potential_energy: float
        ...     potential: object
        >>> class RandomWalkInfo(NamedTuple):
        ...     accept_prob: float
        ...     accepted: bool
        >>> class RandomWalk(Kernel):
        ...     '''Metropolis with Normal(0, scale**2) proposals.'''
        ...
        ...     def __init__(self, scale=1.0):
        ...         self.scale = scale
        ...
        ...     def init(self, position, potential):
        ...         energy, _ = potential(position)
        ...         return RandomWalkState(position, energy, potential)
        ...
        ...     def step(self, state, rng):
        ...         noise = rng.standard_normal(state.position.shape)
        ...         proposal = state.position + self.scale * noise.astype(
        ...             state.position.dtype
        ...         )
        ...         energy, _ = state.potential(proposal)  # inf outside the support
        ...         accept_prob = math.exp(min(0.0, state.potential_energy - energy))
        ...         accepted = bool(rng.random() < accept_prob)
        ...         if accepted:
        ...             state = state._replace(position=proposal, potential_energy=energy)
        ...         return state, RandomWalkInfo(accept_prob, accepted)
        >>> class Mean(borch.Module):
        ...     def forward(self, y):
        ...         self.mu = dist.Normal(0.0, 10.0)
        ...         self.y = dist.Normal(self.mu.expand(y.shape), 1.0)
        >>> model = Mean()
        >>> y = torch.tensor([4.8, 5.2, 5.3, 4.7])
        >>> model.observe(y=y)
        >>> result = borch.infer.mcmc(
        ...     model, y, kernel=RandomWalk(1.0), num_samples=2000, warmup=200,
        ...     chains=1, seed=0, progress=False,
        ... )
        >>> exact_mean = y.sum().item() / (4 + 1 / 100)  # the conjugate posterior
        >>> abs(result.samples["mu"].mean().item() - exact_mean) < 0.1
        True
        >>> sorted(result.stats)  # the info's fields and the log density
        ['accept_prob', 'accepted', 'log_density']
        >>> result.stats["accepted"].dtype, result.step_size
        (torch.bool, None)
    """

    #: whether the runner adapts a step size and a metric for this kernel
    adaptive: ClassVar[bool] = False

    def init(self, position: np.ndarray, potential: Potential) -> Any:
        """The state at ``position`` (a flat numpy vector) on ``potential``."""
        raise NotImplementedError(f"{type(self).__name__} does not implement init")

    def step(self, state: Any, rng: np.random.Generator) -> tuple[Any, NamedTuple]:
        """One transition from ``state``: the next state and an info NamedTuple.

        Every random number comes from ``rng``, so a seed gives the same chain
        wherever it runs.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement step")

    def tune(self, state: Any, step_size: float, metric: Metric) -> Any:
        """``state`` with the step size and metric the next steps use (adaptive
        kernels only)."""
        raise TypeError(f"{type(self).__name__} takes no step size or metric")

    def find_step_size(self, state: Any, rng: np.random.Generator) -> float:
        """A starting step size for the state's metric, searched from its current
        step size (adaptive kernels only; run after the metric changes)."""
        raise TypeError(f"{type(self).__name__} takes no step size")

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({settings})"


class HMCState(NamedTuple):
    """The state of a Hamiltonian kernel: a point, its potential energy and gradient,
    the potential, and the step size and metric the next transition uses."""

    position: np.ndarray
    potential_energy: float
    grad: np.ndarray
    potential: Potential
    step_size: float
    metric: Metric


class HamiltonianKernel(Kernel):
    """A kernel that moves by Hamiltonian dynamics with a step size and a metric.

    :meth:`init` starts with step size 1 and the identity metric; the runner tunes
    both (:meth:`tune`). Subclasses implement :meth:`transition`.
    """

    adaptive: ClassVar[bool] = True

    def init(self, position: np.ndarray, potential: Potential) -> HMCState:
        energy, grad = potential(position)
        if not (np.isfinite(energy) and np.isfinite(grad).all()):
            raise ValueError(
                f"the potential or its gradient is not finite at the initial position "
                f"(energy {energy}); start inside the support"
            )
        metric = DiagonalMetric(np.ones_like(position))
        return HMCState(position, energy, grad, potential, 1.0, metric)

    def tune(self, state: HMCState, step_size: float, metric: Metric) -> HMCState:
        return state._replace(step_size=float(step_size), metric=metric)

    def find_step_size(self, state: HMCState, rng: np.random.Generator) -> float:
        point = IntegratorState(
            state.position, None, state.potential_energy, state.grad
        )
        return initial_step_size(
            point, state.potential, state.metric, rng, state.step_size
        )

    def step(
        self, state: HMCState, rng: np.random.Generator
    ) -> tuple[HMCState, NamedTuple]:
        point = IntegratorState(
            state.position, None, state.potential_energy, state.grad
        )
        new, info = self.transition(
            point, state.potential, state.step_size, state.metric, rng
        )
        return state._replace(
            position=new.position, potential_energy=new.potential_energy, grad=new.grad
        ), info

    def transition(
        self,
        point: IntegratorState,
        potential: Potential,
        step_size: float,
        metric: Metric,
        rng: np.random.Generator,
    ) -> tuple[IntegratorState, NamedTuple]:
        """One transition from ``point`` (its momentum is redrawn)."""
        raise NotImplementedError(
            f"{type(self).__name__} does not implement transition"
        )


class NUTS(HamiltonianKernel):
    """The No-U-Turn Sampler (multinomial, generalised U-turn criterion); the
    default kernel of :func:`borch.infer.mcmc`. ``info`` is a
    :class:`~borch.infer.hmc.nuts.NUTSInfo`.

    Args:
        max_tree_depth: at most ``2**max_tree_depth`` leapfrog steps per transition.

    Reference: Hoffman and Gelman, "The No-U-Turn Sampler", JMLR 2014.

    Example:
        >>> import numpy as np
        >>> potential = lambda q: (0.5 * float(q @ q), q.copy())  # a standard Normal
        >>> kernel = NUTS(max_tree_depth=5)
        >>> state = kernel.init(np.zeros(2), potential)
        >>> state = kernel.tune(state, 0.5, state.metric)
        >>> state, info = kernel.step(state, np.random.default_rng(0))
        >>> info.tree_depth <= 5, 0 < info.accept_prob <= 1
        (True, True)
    """

    def __init__(self, max_tree_depth: int = 10) -> None:
        self.max_tree_depth = check_tree_depth(max_tree_depth)

    def transition(self, point, potential, step_size, metric, rng):
        return nuts_transition(
            point, potential, step_size, metric, rng, self.max_tree_depth
        )


class HMC(HamiltonianKernel):
    """Hamiltonian Monte Carlo with a fixed number of leapfrog steps and a
    Metropolis test. ``info`` is a :class:`~borch.infer.hmc.hamiltonian.HMCInfo`.

    Args:
        num_steps: the leapfrog steps of every trajectory. The adapted step size
            times ``num_steps`` is the integration time; too short a time gives a
            random walk, so prefer :class:`NUTS` unless the posterior's scale is
            known.

    Reference: R. M. Neal, "MCMC using Hamiltonian dynamics", 2011.

    Example:
        >>> import numpy as np
        >>> potential = lambda q: (0.5 * float(q @ q), q.copy())
        >>> kernel = HMC(num_steps=5)
        >>> state = kernel.init(np.zeros(2), potential)
        >>> state, info = kernel.step(state, np.random.default_rng(0))
        >>> info.num_steps, info.diverging
        (5, False)
    """

    def __init__(self, num_steps: int = 10) -> None:
        self.num_steps = check_num_steps(num_steps)

    def transition(self, point, potential, step_size, metric, rng):
        return hmc_transition(point, potential, step_size, self.num_steps, metric, rng)


#: The kernels :func:`borch.infer.mcmc` accepts by name.
KERNELS = {"nuts": NUTS, "hmc": HMC}


def as_kernel(kernel: Kernel | str | None, max_tree_depth: int | None = None) -> Kernel:
    """The kernel ``mcmc(kernel=...)`` means: ``None`` or ``"nuts"`` for :class:`NUTS`
    (with ``max_tree_depth`` if given), ``"hmc"`` for :class:`HMC`, or a
    :class:`Kernel` instance as it is.

    Example:
        >>> as_kernel(None), as_kernel("hmc")
        (NUTS(max_tree_depth=10), HMC(num_steps=10))
        >>> as_kernel(3)
        Traceback (most recent call last):
        ...
        TypeError: kernel must be None, 'nuts', 'hmc' or a borch.infer.Kernel instance, got 3
    """
    accepted = "None, " + ", ".join(map(repr, KERNELS)) + " or a borch.infer.Kernel"
    if isinstance(kernel, type) and issubclass(kernel, Kernel):
        raise TypeError(
            f"kernel must be {accepted} instance, got the class {kernel.__name__}: "
            f"give an instance, e.g. kernel={kernel.__name__}()"
        )
    name = kernel.lower() if isinstance(kernel, str) else None
    if kernel is None or name == "nuts":
        return NUTS() if max_tree_depth is None else NUTS(max_tree_depth)
    if name in KERNELS:
        kernel = KERNELS[name]()
    elif not isinstance(kernel, Kernel):
        raise TypeError(f"kernel must be {accepted} instance, got {kernel!r}")
    if max_tree_depth is not None:
        raise ValueError(
            "max_tree_depth is a setting of the default NUTS kernel; give it to the "
            f"kernel instead (kernel=NUTS(max_tree_depth={max_tree_depth!r}))"
        )
    return kernel


__all__ = [
    "HMC",
    "KERNELS",
    "NUTS",
    "HMCState",
    "HamiltonianKernel",
    "Kernel",
    "as_kernel",
]
