"""NUTS on many chains at once, in torch: every chain its own tree, step size and
mass matrix, all moved by one batched computation per leapfrog step.

The trajectory of each chain is built as in :mod:`borch.infer.hmc.nuts`
(multinomial sampling, the generalised U-turn criterion with the checks across the
seams of merged trees), but iteratively: the leaves of a subtree are computed one
after the other for every chain together, and the subtrees that a leaf completes are
merged (and checked for a U-turn) from the smallest up. A chain whose subtree turned
or diverged stops moving (a mask) while the others go on; the transition ends when
no chain is still doubling. Inside a subtree the proposal is drawn progressively in
proportion to the leaves' weights (the same distribution as the recursive
builder's); across subtrees the sampling is biased towards the newest, as in Stan.

States are tensors with a leading chain dimension on any device; random numbers come
from a ``torch.Generator`` on that device.

References:
    M. D. Hoffman and A. Gelman, "The No-U-Turn Sampler", JMLR 15, 2014.
    M. Betancourt, "A Conceptual Introduction to Hamiltonian Monte Carlo",
    arXiv:1701.02434, 2017.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from borch.infer.hmc.batched_potential import BatchedPotential
from borch.infer.hmc.hamiltonian import MAX_ENERGY_ERROR

#: Doublings/halvings the step size heuristic tries before giving up.
_MAX_HEURISTIC_STEPS = 100


class BatchedMetric:
    """A mass matrix per chain, given by its inverse: ``(chains, dim)`` diagonals or
    ``(chains, dim, dim)`` symmetric positive definite matrices.

    Example:
        >>> import torch
        >>> metric = BatchedMetric(torch.tensor([[1.0, 4.0], [2.0, 2.0]]))
        >>> metric.velocity(torch.ones(2, 2))
        tensor([[1., 4.],
                [2., 2.]])
    """

    def __init__(self, inverse_mass: Tensor) -> None:
        self.inverse_mass = inverse_mass
        self.dense = inverse_mass.dim() == 3
        if self.dense:
            try:
                cholesky = torch.linalg.cholesky(inverse_mass.double())
            except RuntimeError:
                raise ValueError(
                    "every chain's inverse mass matrix must be positive definite"
                ) from None
            eye = torch.eye(inverse_mass.shape[-1], dtype=torch.float64).to(cholesky)
            scale = torch.linalg.solve_triangular(cholesky, eye, upper=False).mT
            self._momentum_scale = scale.to(inverse_mass.dtype)
        else:
            if not bool((inverse_mass > 0).all()):
                raise ValueError("every chain's inverse mass diagonal must be positive")
            self._momentum_scale = inverse_mass.rsqrt()

    def velocity(self, momentum: Tensor) -> Tensor:
        """``M^-1 p`` for each chain."""
        if self.dense:
            return (self.inverse_mass @ momentum.unsqueeze(-1)).squeeze(-1)
        return self.inverse_mass * momentum

    def sample_momentum(self, generator: torch.Generator) -> Tensor:
        """A momentum per chain, from ``Normal(0, M)``."""
        shape = self.inverse_mass.shape[:2]
        noise = torch.randn(
            shape,
            generator=generator,
            dtype=self.inverse_mass.dtype,
            device=self.inverse_mass.device,
        )
        if self.dense:
            return (self._momentum_scale @ noise.unsqueeze(-1)).squeeze(-1)
        return noise * self._momentum_scale


class BatchedState(NamedTuple):
    """A point of every chain: ``position`` and ``grad`` ``(chains, dim)``, and the
    ``potential_energy`` ``(chains,)``."""

    position: Tensor
    potential_energy: Tensor
    grad: Tensor


class BatchedNUTSInfo(NamedTuple):
    """What one transition did, per chain (the fields of
    :class:`~borch.infer.hmc.nuts.NUTSInfo`, as ``(chains,)`` tensors)."""

    accept_prob: Tensor
    tree_depth: Tensor
    num_steps: Tensor
    diverging: Tensor
    energy: Tensor


class _Point(NamedTuple):
    """A state on the trajectory with its momentum, velocity and Hamiltonian."""

    position: Tensor
    momentum: Tensor
    potential_energy: Tensor
    grad: Tensor
    sharp: Tensor
    energy: Tensor


class _Span(NamedTuple):
    """What the U-turn criterion needs of a (sub)trajectory in build order: the
    velocity and momentum at its first and last states and its summed momentum."""

    sharp_begin: Tensor
    momentum_begin: Tensor
    sharp_end: Tensor
    momentum_end: Tensor
    rho: Tensor


def _select(mask: Tensor, new: NamedTuple, old: NamedTuple) -> NamedTuple:
    """``new`` for the chains where ``mask`` is true, ``old`` elsewhere."""
    fields = []
    for a, b in zip(new, old):
        m = mask if a.dim() == 1 else mask.unsqueeze(-1)
        fields.append(torch.where(m, a, b))
    return type(new)(*fields)


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).sum(-1)


def _merge(first: _Span, second: _Span) -> tuple[_Span, Tensor]:
    """The span of two adjacent spans (``first`` built first) and whether it turned:
    the criterion over the union and across the seam, as in
    :func:`borch.infer.hmc.nuts._merged_no_u_turn`."""
    rho = first.rho + second.rho
    seam_first = first.rho + second.momentum_begin
    seam_second = second.rho + first.momentum_end
    # Every velocity must point along its sum of momenta: six dot products at once.
    velocities = torch.stack(
        [
            first.sharp_begin,
            second.sharp_end,
            first.sharp_begin,
            second.sharp_begin,
            first.sharp_end,
            second.sharp_end,
        ]
    )
    sums = torch.stack([rho, rho, seam_first, seam_first, seam_second, seam_second])
    no_u_turn = ((velocities * sums).sum(-1) > 0).all(0)
    merged = _Span(
        first.sharp_begin,
        first.momentum_begin,
        second.sharp_end,
        second.momentum_end,
        rho,
    )
    return merged, ~no_u_turn


class _Integrator:
    """The leapfrog step of every chain with its own signed step size."""

    def __init__(self, potential: BatchedPotential, metric: BatchedMetric) -> None:
        self.potential, self.metric = potential, metric

    def step(self, point: _Point, step_size: Tensor) -> _Point:
        """One step of ``step_size`` ``(chains, 1)``; a non-finite Hamiltonian
        becomes ``inf``."""
        momentum = point.momentum - (0.5 * step_size) * point.grad
        position = point.position + step_size * self.metric.velocity(momentum)
        energy, grad = self.potential(position)
        momentum = momentum - (0.5 * step_size) * grad
        sharp = self.metric.velocity(momentum)
        hamiltonian = energy + 0.5 * _dot(momentum, sharp)
        hamiltonian = torch.nan_to_num(hamiltonian, nan=math.inf, neginf=math.inf)
        return _Point(position, momentum, energy, grad, sharp, hamiltonian)


class _Proposal(NamedTuple):
    """What a transition keeps of the state it draws."""

    position: Tensor
    potential_energy: Tensor
    grad: Tensor
    energy: Tensor

    @classmethod
    def of(cls, point: _Point) -> _Proposal:
        return cls(point.position, point.potential_energy, point.grad, point.energy)


class _Subtree(NamedTuple):
    span: _Span
    last: _Point
    proposal: _Proposal
    log_weight: Tensor
    sum_accept: Tensor
    num_steps: Tensor
    diverging: Tensor
    turning: Tensor


def _build(
    integrator: _Integrator,
    start: _Point,
    step_size: Tensor,
    depth: int,
    h0: Tensor,
    active: Tensor,
    generator: torch.Generator,
) -> _Subtree:
    """A subtree of ``2**depth`` leaves from ``start`` for the ``active`` chains
    (``step_size`` signed, ``(chains, 1)``).

    Chains that are not active still move (a batch has one shape) but nothing they
    do is counted: their leaves are masked out of every statistic and decision.
    """
    chains = h0.shape[0]
    zeros = torch.zeros(chains, dtype=h0.dtype, device=h0.device)
    log_weight = torch.full_like(h0, -math.inf)
    sum_accept, num_steps = zeros, torch.zeros_like(active, dtype=torch.int64)
    diverging = torch.zeros_like(active)
    turning = torch.zeros_like(active)
    pending: list[_Span | None] = [None] * depth
    point, proposal = start, _Proposal.of(start)
    span = None
    for leaf in range(2**depth):
        new = integrator.step(point, step_size)
        num_steps = num_steps + active
        leaf_weight = h0 - new.energy
        sum_accept = sum_accept + torch.where(
            active, leaf_weight.clamp(max=0.0).exp(), 0.0
        )
        diverged = active & (new.energy - h0 > MAX_ENERGY_ERROR)
        diverging = diverging | diverged
        # Progressive multinomial sampling: leaf i replaces the proposal with
        # probability w_i / (w_1 + ... + w_i), which draws leaves by their weights.
        total = torch.logaddexp(log_weight, leaf_weight)
        uniform = torch.rand(chains, generator=generator, device=h0.device)
        take = active & (uniform < (leaf_weight - total).exp())
        proposal = _select(take, _Proposal.of(new), proposal)
        log_weight = torch.where(active, total, log_weight)
        active = active & ~diverged
        point = new
        span = _Span(new.sharp, new.momentum, new.sharp, new.momentum, new.momentum)
        level = 0
        while level < depth and (leaf >> level) & 1:
            span, turned = _merge(pending[level], span)
            turning = turning | (active & turned)
            active = active & ~turned
            level += 1
        if level < depth:
            pending[level] = span
        if not bool(active.any()):
            break
    return _Subtree(
        span, point, proposal, log_weight, sum_accept, num_steps, diverging, turning
    )


def _start(
    state: BatchedState, metric: BatchedMetric, generator: torch.Generator
) -> _Point:
    """The chains' points with fresh momenta."""
    momentum = metric.sample_momentum(generator)
    sharp = metric.velocity(momentum)
    energy = state.potential_energy + 0.5 * _dot(momentum, sharp)
    return _Point(
        state.position, momentum, state.potential_energy, state.grad, sharp, energy
    )


def batched_nuts_transition(
    state: BatchedState,
    potential: BatchedPotential,
    step_size: Tensor,
    metric: BatchedMetric,
    generator: torch.Generator,
    max_tree_depth: int = 10,
) -> tuple[BatchedState, BatchedNUTSInfo]:
    """One NUTS transition of every chain (momenta are drawn afresh).

    Args:
        state: the chains' current points.
        potential: a batched potential (``(chains, dim)`` positions).
        step_size: ``(chains,)`` step sizes.
        metric: the chains' mass matrices.
        generator: the source of every random number (on the state's device).
        max_tree_depth: at most ``2**max_tree_depth`` leapfrog steps per chain.

    Returns:
        The chains' next points and a :class:`BatchedNUTSInfo`.

    Example:
        >>> import torch
        >>> potential = lambda q: (0.5 * (q**2).sum(-1), q.clone())
        >>> q = torch.zeros(3, 2)
        >>> state = BatchedState(q, *potential(q))
        >>> metric = BatchedMetric(torch.ones(3, 2))
        >>> new, info = batched_nuts_transition(
        ...     state, potential, torch.full((3,), 0.5), metric,
        ...     torch.Generator().manual_seed(0), max_tree_depth=5,
        ... )
        >>> new.position.shape, bool((info.tree_depth <= 5).all())
        (torch.Size([3, 2]), True)
    """
    start = _start(state, metric, generator)
    h0 = start.energy
    integrator = _Integrator(potential, metric)
    chains = h0.shape[0]
    device = h0.device
    # The trajectory's ends in time order, its summed momentum and its proposal.
    begin = end = start
    proposal = _Proposal.of(start)
    rho = start.momentum
    log_weight = torch.zeros_like(h0)
    sum_accept = torch.zeros_like(h0)
    num_steps = torch.zeros(chains, dtype=torch.int64, device=device)
    depth = torch.zeros(chains, dtype=torch.int64, device=device)
    diverging = torch.zeros(chains, dtype=torch.bool, device=device)
    running = torch.ones(chains, dtype=torch.bool, device=device)
    for level in range(max_tree_depth):
        forward = torch.rand(chains, generator=generator, device=device) < 0.5
        edge = _select(forward, end, begin)
        signed = torch.where(forward, step_size, -step_size).unsqueeze(-1)
        subtree = _build(integrator, edge, signed, level, h0, running, generator)
        num_steps = num_steps + subtree.num_steps
        sum_accept = sum_accept + subtree.sum_accept
        diverging = diverging | subtree.diverging
        keep = running & ~subtree.diverging & ~subtree.turning
        depth = depth + keep
        uniform = torch.rand(chains, generator=generator, device=device)
        bias = (subtree.log_weight - log_weight).clamp(max=0.0).exp()
        proposal = _select(keep & (uniform < bias), subtree.proposal, proposal)
        log_weight = torch.where(
            keep, torch.logaddexp(log_weight, subtree.log_weight), log_weight
        )
        tree = _Span(begin.sharp, begin.momentum, end.sharp, end.momentum, rho)
        sub = subtree.span
        reversed_sub = _Span(
            sub.sharp_end,
            sub.momentum_end,
            sub.sharp_begin,
            sub.momentum_begin,
            sub.rho,
        )
        earlier = _select(forward, tree, reversed_sub)
        later = _select(forward, sub, tree)
        merged, turned = _merge(earlier, later)
        rho = torch.where(keep.unsqueeze(-1), merged.rho, rho)
        end = _select(keep & forward, subtree.last, end)
        begin = _select(keep & ~forward, subtree.last, begin)
        running = keep & ~turned
        if not bool(running.any()):
            break
    info = BatchedNUTSInfo(
        accept_prob=sum_accept / num_steps.clamp(min=1),
        tree_depth=depth,
        num_steps=num_steps,
        diverging=diverging,
        energy=proposal.energy,
    )
    return BatchedState(
        proposal.position, proposal.potential_energy, proposal.grad
    ), info


def batched_initial_step_size(
    state: BatchedState,
    potential: BatchedPotential,
    metric: BatchedMetric,
    generator: torch.Generator,
    step_size: Tensor,
) -> Tensor:
    """Each chain's step size whose single leapfrog step has acceptance about 1/2
    (Hoffman and Gelman's Algorithm 4, as
    :func:`borch.infer.hmc.adaptation.initial_step_size`), searched from
    ``step_size`` ``(chains,)`` by doubling or halving.

    Example:
        >>> import torch
        >>> potential = lambda q: (0.5 * (q**2).sum(-1), q.clone())
        >>> q = torch.zeros(2, 3)
        >>> step = batched_initial_step_size(
        ...     BatchedState(q, *potential(q)), potential,
        ...     BatchedMetric(torch.tensor([[1.0] * 3, [0.01] * 3])),
        ...     torch.Generator().manual_seed(0), torch.ones(2),
        ... )
        >>> bool(step[1] > step[0])  # the smaller inverse mass takes longer steps
        True
    """
    start = _start(state, metric, generator)
    h0 = start.energy
    integrator = _Integrator(potential, metric)

    def log_ratio(eps: Tensor) -> Tensor:
        new = integrator.step(start, eps.unsqueeze(-1))
        finite = torch.isfinite(new.grad).all(-1)
        return torch.where(finite, h0 - new.energy, -math.inf)

    step_size = step_size.clone()
    current = log_ratio(step_size)
    direction = torch.where(current > math.log(0.5), 1.0, -1.0).to(step_size)
    done = torch.zeros_like(current, dtype=torch.bool)
    for _ in range(_MAX_HEURISTIC_STEPS):
        done = done | (direction * current <= -direction * math.log(2.0))
        if bool(done.all()):
            return step_size
        step_size = torch.where(done, step_size, step_size * 2.0**direction)
        current = torch.where(done, current, log_ratio(step_size))
    stuck = (~done) & (direction < 0) & ~torch.isfinite(current)
    if bool(stuck.any()):
        chains = stuck.nonzero().flatten().tolist()
        raise ValueError(
            f"no step size gives a finite energy after one leapfrog step from the "
            f"current position of chain(s) {chains}: the log density or its gradient "
            "is not finite near it"
        )
    return step_size


__all__ = [
    "BatchedMetric",
    "BatchedNUTSInfo",
    "BatchedState",
    "batched_initial_step_size",
    "batched_nuts_transition",
]
