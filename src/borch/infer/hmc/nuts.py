"""The No-U-Turn Sampler: multinomial trajectory sampling, generalised U-turn criterion.

A transition draws a momentum, then doubles a trajectory forwards or backwards in
time until it makes a U-turn, diverges, or reaches ``2**max_tree_depth`` steps. The
next state is drawn from the whole trajectory with probabilities proportional to
``exp(-H)``: uniformly-progressively inside each new subtree, and biased towards the
newest subtree at the top level. The U-turn criterion compares the summed momentum
``rho`` of a (sub)trajectory with the velocities ``M^-1 p`` at its two ends (from the
:class:`~borch.infer.hmc.metric.Metric`), and, as in Stan since 2.23, also across the
two halves of every merged tree.

References:
    M. D. Hoffman and A. Gelman, "The No-U-Turn Sampler", JMLR 15, 2014.
    M. Betancourt, "A Conceptual Introduction to Hamiltonian Monte Carlo",
    arXiv:1701.02434, 2017 (multinomial sampling, the generalised criterion).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import NamedTuple

import numpy as np
from torch import Tensor

from borch.infer.hmc.hamiltonian import (
    MAX_ENERGY_ERROR,
    IntegratorState,
    check_step_size,
    closure_start,
    leapfrog,
)
from borch.infer.hmc.metric import DiagonalMetric, Metric
from borch.infer.hmc.potential import ClosurePotential, Potential, as_rng, non_finite_ok
from borch.validation import check_count


class NUTSInfo(NamedTuple):
    """What one NUTS transition did.

    ``accept_prob`` is the mean of ``min(1, exp(-dH))`` over every state the
    trajectory visited (the statistic step size adaptation targets), ``tree_depth``
    the number of doublings kept, ``num_steps`` the leapfrog steps taken,
    ``diverging`` whether the energy error passed the divergence threshold and
    ``energy`` the Hamiltonian at the chosen state.
    """

    accept_prob: float
    tree_depth: int
    num_steps: int
    diverging: bool
    energy: float


class _Tree:
    """A (sub)trajectory, its ends in the order they were built, and its proposal."""

    __slots__ = (
        "begin",
        "diverging",
        "end",
        "log_weight",
        "num_steps",
        "proposal",
        "proposal_energy",
        "rho",
        "sharp_begin",
        "sharp_end",
        "sum_accept",
        "turning",
    )

    def __init__(
        self, state: IntegratorState, sharp: np.ndarray, energy: float, h0: float
    ):
        self.begin = self.end = self.proposal = state
        self.sharp_begin = self.sharp_end = sharp
        self.rho = state.momentum
        self.proposal_energy = energy
        self.log_weight = h0 - energy
        self.sum_accept = math.exp(min(0.0, h0 - energy))
        self.num_steps = 1
        self.diverging = energy - h0 > MAX_ENERGY_ERROR
        self.turning = False


def _no_u_turn(
    sharp_minus: np.ndarray, sharp_plus: np.ndarray, rho: np.ndarray
) -> bool:
    """The generalised criterion: both end velocities still point along ``rho``."""
    return sharp_plus.dot(rho) > 0 and sharp_minus.dot(rho) > 0


def _merged_no_u_turn(first: _Tree, second: _Tree, rho: np.ndarray) -> bool:
    """The criterion over the union of two adjacent trees, and across their seam."""
    return (
        _no_u_turn(first.sharp_begin, second.sharp_end, rho)
        and _no_u_turn(
            first.sharp_begin, second.sharp_begin, first.rho + second.begin.momentum
        )
        and _no_u_turn(
            first.sharp_end, second.sharp_end, second.rho + first.end.momentum
        )
    )


class _TreeBuilder:
    """Builds subtrees for one transition (shared settings live here, not in calls)."""

    def __init__(
        self,
        potential: Potential,
        metric: Metric,
        h0: float,
        rng: np.random.Generator,
    ):
        self.potential = potential
        self.metric = metric
        self.velocity = metric.velocity
        self.h0 = h0
        self.rng = rng

    def leaf(self, state: IntegratorState, step_size: float) -> _Tree:
        new = leapfrog(state, step_size, self.metric, self.potential)
        sharp = self.velocity(new.momentum)
        # K(p) = p @ M^-1 p / 2 for every Euclidean metric: reuse the velocity.
        energy = new.potential_energy + 0.5 * float(new.momentum.dot(sharp))
        if not math.isfinite(energy):
            energy = math.inf
        return _Tree(new, sharp, energy, self.h0)

    def build(self, state: IntegratorState, step_size: float, depth: int) -> _Tree:
        """A subtree of ``2**depth`` steps from ``state`` (``step_size`` signed)."""
        if depth == 0:
            return self.leaf(state, step_size)
        first = self.build(state, step_size, depth - 1)
        if first.diverging or first.turning:
            return first
        second = self.build(first.end, step_size, depth - 1)
        first.num_steps += second.num_steps
        first.sum_accept += second.sum_accept
        if second.diverging or second.turning:
            first.diverging, first.turning = second.diverging, second.turning
            return first
        log_weight = _logaddexp(first.log_weight, second.log_weight)
        if self.rng.random() < math.exp(second.log_weight - log_weight):
            first.proposal = second.proposal
            first.proposal_energy = second.proposal_energy
        rho = first.rho + second.rho
        first.turning = not _merged_no_u_turn(first, second, rho)
        first.log_weight = log_weight
        first.rho = rho
        first.end, first.sharp_end = second.end, second.sharp_end
        return first


def _logaddexp(a: float, b: float) -> float:
    if a < b:
        a, b = b, a
    if b == -math.inf:
        return a
    return a + math.log1p(math.exp(b - a))


@non_finite_ok
def nuts_transition(
    state: IntegratorState,
    potential: Potential,
    step_size: float,
    metric: Metric,
    rng: np.random.Generator,
    max_tree_depth: int = 10,
) -> tuple[IntegratorState, NUTSInfo]:
    """One NUTS transition from ``state`` (its momentum is ignored and redrawn).

    Args:
        state: the current position, its potential energy and gradient.
        potential: ``potential(position) -> (energy, gradient)``.
        step_size: the leapfrog step size.
        metric: the mass matrix (kinetic energy).
        rng: the source of every random number.
        max_tree_depth: at most ``2**max_tree_depth`` leapfrog steps.

    Returns:
        The next state and a :class:`NUTSInfo`.
    """
    momentum = metric.sample_momentum(rng)
    start = state._replace(momentum=momentum)
    sharp = metric.velocity(momentum)
    h0 = start.potential_energy + 0.5 * float(momentum.dot(sharp))
    builder = _TreeBuilder(potential, metric, h0, rng)
    # The whole trajectory in time order (`begin` is the earliest state); subtrees
    # grow it at either end.
    tree = _Tree(start, sharp, h0, h0)
    tree.num_steps, tree.sum_accept = 0, 0.0
    depth = 0
    diverging = False
    while depth < max_tree_depth:
        go_forward = rng.random() < 0.5
        if go_forward:
            subtree = builder.build(tree.end, step_size, depth)
        else:
            subtree = builder.build(tree.begin, -step_size, depth)
        tree.num_steps += subtree.num_steps
        tree.sum_accept += subtree.sum_accept
        if subtree.diverging:
            diverging = True
            break
        if subtree.turning:
            break
        depth += 1
        # Biased progressive sampling: prefer the new subtree by its whole weight.
        if rng.random() < math.exp(min(0.0, subtree.log_weight - tree.log_weight)):
            tree.proposal, tree.proposal_energy = (
                subtree.proposal,
                subtree.proposal_energy,
            )
        tree.log_weight = _logaddexp(tree.log_weight, subtree.log_weight)
        rho = tree.rho + subtree.rho
        if go_forward:
            turning = not _merged_no_u_turn(tree, subtree, rho)
            tree.end, tree.sharp_end = subtree.end, subtree.sharp_end
        else:
            turning = not _merged_no_u_turn(_TimeOrdered(subtree), tree, rho)
            tree.begin, tree.sharp_begin = subtree.end, subtree.sharp_end
        tree.rho = rho
        if turning:
            break
    info = NUTSInfo(
        accept_prob=tree.sum_accept / max(tree.num_steps, 1),
        tree_depth=depth,
        num_steps=tree.num_steps,
        diverging=diverging,
        energy=tree.proposal_energy,
    )
    return tree.proposal, info


class _TimeOrdered:
    """The ends of a subtree built backwards in time, swapped into time order."""

    __slots__ = ("begin", "end", "rho", "sharp_begin", "sharp_end")

    def __init__(self, subtree: _Tree):
        self.begin, self.end = subtree.end, subtree.begin
        self.sharp_begin, self.sharp_end = subtree.sharp_end, subtree.sharp_begin
        self.rho = subtree.rho


def nuts_step(
    epsilon: float,
    parameters: Iterable[Tensor],
    closure: Callable[[], Tensor],
    max_tree_depth: int = 10,
) -> float:
    """One NUTS transition that moves ``parameters`` in place.

    Args:
        epsilon: the leapfrog step size.
        parameters: leaf tensors with ``requires_grad=True``, the coordinates.
        closure: returns the *negative* log density of the current ``parameters`` (a
            loss, as for a ``torch.optim`` closure).
        max_tree_depth: at most ``2**max_tree_depth`` leapfrog steps.

    Returns:
        The acceptance statistic (mean Metropolis acceptance over the trajectory),
        what :func:`dual_averaging` adapts the step size on. The mass matrix is the
        identity; random numbers are seeded from torch's global generator. For a tuned
        sampler with several chains use :func:`borch.infer.mcmc`.

    Reference: Hoffman and Gelman, "The No-U-Turn Sampler", 2014; Betancourt,
    "A Conceptual Introduction to Hamiltonian Monte Carlo", 2017.

    Example:
        >>> import torch
        >>> from borch.infer import dual_averaging, find_reasonable_epsilon
        >>> torch.manual_seed(0)
        <torch._C.Generator object at ...>
        >>> x = torch.zeros(2, requires_grad=True)
        >>> def closure():  # negative log density of Normal(3, 1)
        ...     return 0.5 * ((x - 3.0) ** 2).sum()
        >>> eps0, eps_bar, h_bar = find_reasonable_epsilon([x], closure)
        >>> eps, warmup, draws = eps0, 100, []
        >>> for i in range(1, 400):
        ...     accept = nuts_step(eps, [x], closure)
        ...     if i < warmup:
        ...         eps, eps_bar, h_bar = dual_averaging(accept, i, eps0, eps_bar, h_bar)
        ...     else:
        ...         eps = eps_bar
        ...         draws.append(x.detach().clone())
        >>> round(torch.stack(draws).mean().item())
        3
    """
    epsilon = check_step_size(epsilon)
    max_tree_depth = check_tree_depth(max_tree_depth)
    potential = ClosurePotential(parameters, closure)
    start = closure_start(potential)
    metric = DiagonalMetric(np.ones_like(start.position))
    state, info = nuts_transition(
        start, potential, epsilon, metric, as_rng(None), max_tree_depth
    )
    potential.set_position(state.position)
    return info.accept_prob


def check_tree_depth(max_tree_depth: int) -> int:
    """Validate ``max_tree_depth`` (a positive int)."""
    return check_count("max_tree_depth", max_tree_depth, minimum=1)


__all__ = ["NUTSInfo", "check_tree_depth", "nuts_step", "nuts_transition"]
