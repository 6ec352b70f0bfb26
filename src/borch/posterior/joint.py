"""Joint posteriors: every latent variable a posterior serves, in one distribution.

A joint family approximates the variables it is given by one distribution over
their unconstrained values ``u = (u_1, ..., u_K)`` (constrained priors through
``biject_to(support)``), in the order the variables are first assigned. It is
written as a chain of conditionals,

    q(u) = q(u_1) q(u_2 | u_1) ... q(u_K | u_1, ..., u_{K-1}),

so that:

* **Variables appear one at a time.** A model assigns its variables one by one in
  ``forward`` and may read one before the next is assigned. The first assignment of
  a variable appends a block to the chain: its own parameters, and (for the
  families that correlate blocks) parameters linking it to the blocks before it,
  which start at zero. Nothing learned so far changes, so a variable that appears
  later in training extends the joint cleanly; an optimiser must then be given the
  new parameters, as for every family (or use :class:`borch.OptimizersCollection`).
* **Parameters live with their block.** Block ``w``'s parameters are those of the
  approximating variable ``posterior.w`` (``state_dict`` keys ``posterior.w.*``), so
  a fresh module that assigns the same variables in the same order loads them
  exactly, before or after its first run.
* **Every variable's log-density term is its conditional.** The approximating
  variable of ``u_k`` is :class:`JointSlice`: its draw is its block of the joint
  draw of this run, and its ``log_prob(x)`` is ``log q(u_k | u_<k)`` at the
  current draw of the earlier blocks (plus the log-det-Jacobian of the transform),
  laid out elementwise over the variable's shape. The terms of all variables add up
  to ``log q`` of the joint draw, so :func:`borch.infer.vi_loss` and
  :func:`borch.infer.particle_vi_loss` compute the joint's ELBO with no special
  case (and the same holds for ``entropy()``).

A block that is removed from the middle of the chain cannot be rebuilt in place;
:meth:`JointPosterior.blocks` says so with the names involved.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, TransformedDistribution, constraints
from torch.distributions import transforms as torch_transforms

from borch.compiling import compiling, note_step_state
from borch.posterior.approximations import (
    float_dtype,
    is_identity,
    prior_location,
    require_density,
    to_unconstrained,
    unconstraining_transform,
)
from borch.posterior.base import Posterior
from borch.random_variable import RandomVariable

__all__ = ["Block", "BlockDistribution", "JointPosterior", "JointRun", "JointSlice"]


class Block(NamedTuple):
    """Where a variable sits in the joint: its unconstrained ``shape`` (``size``
    numbers from ``offset``), the transform onto its support, the names of the
    blocks before it when it was created (``context``) and the variable's shape."""

    shape: torch.Size
    size: int
    offset: int
    transform: torch_transforms.Transform
    context: tuple[str, ...]
    value_shape: torch.Size


class JointSlice(RandomVariable):
    """A variable's part of a joint approximation (made by a :class:`JointPosterior`).

    Its arguments are the block's parameters; its value is its block of the joint
    draw of this run; its ``log_prob`` is the conditional density of the block given
    the earlier blocks' current draw (see :mod:`borch.posterior.joint`).
    """

    distribution_cls = Distribution  # built by _distribution from the joint

    def __init__(
        self, joint: JointPosterior, parameters: dict[str, Any], block: Block
    ) -> None:
        # Plain tensors are the block's state (buffers), not distribution arguments.
        buffers = {
            name: value
            for name, value in parameters.items()
            if isinstance(value, Tensor) and not isinstance(value, nn.Parameter)
        }
        arguments = {k: v for k, v in parameters.items() if k not in buffers}
        super().__init__(arguments, validate_args=False)
        for name, value in buffers.items():
            self.register_buffer(name, value)
        self.__dict__["_joint"] = joint
        self.__dict__["_block"] = block

    @property
    def block(self) -> Block:
        """Where this variable sits in the joint."""
        return self.__dict__["_block"]

    def state(self, name: str) -> Tensor:
        """The block's parameter or buffer ``name`` (``get_parameter`` or
        ``get_buffer``, without their path lookup: a family reads these on every
        run)."""
        tensor = self._parameters.get(name)
        return self._buffers[name] if tensor is None else tensor

    def _distribution(self) -> Distribution:
        return self._joint.slice_distribution(self)

    def _refresh_watch(self) -> None:
        super()._refresh_watch()
        # Its distribution is its joint's in this run, whatever its own arguments
        # (a flow's block may have none): never one shared by every variable with
        # the same arguments, and rebuilt, with its graph, for every draw.
        self.__dict__["_static_key"] = None
        self.__dict__["_needs_grad"] = True

    def discard_value(self) -> None:
        # The joint draw is shared by all slices: every block is drawn anew.
        self._joint.forget_run()
        self.forget_value()

    def forget_value(self) -> None:
        """Drop this slice's value and distribution (the joint's draw is gone)."""
        RandomVariable.discard_value(self)
        self.__dict__["_dist"] = None

    def forward(self) -> Tensor:
        """Draw the joint anew and return this variable's part."""
        self.discard_value()
        return self.tensor

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self.discard_value()  # the other blocks' draws did not move with this one
        return self


class JointRun:
    """The draws of one run: the noise and unconstrained value of each block drawn
    so far (``(count, size)`` with ``count`` particles, else ``(size,)``), and what
    the family assembled from the parameters for this run."""

    def __init__(self, family: JointPosterior, slices: list[JointSlice]) -> None:
        self.family = family
        self.extend(slices)
        self.count: int | None = None
        self.started = False
        self.noise: dict[int, Tensor] = {}
        self.values: dict[int, Tensor] = {}
        self.shared: dict[str, Tensor] = {}
        # What each block handed out, in unconstrained space and on its support:
        # a log-density at these very values takes the block's columns of the
        # whole joint's terms, computed once (joint_terms).
        self.drawn: dict[int, Tensor] = {}
        self.constrained: dict[int, Tensor] = {}
        self.terms: tuple | None = None
        # The family's draw of all blocks at once, whose columns the values are.
        self.joint: Tensor | None = None

    def extend(self, slices: list[JointSlice]) -> None:
        """Take in blocks created during this run; the draws made so far stay."""
        self.slices = slices
        self.index = {id(rv): position for position, rv in enumerate(slices)}
        self.parts = self.family.assemble(slices)

    def leading(self) -> tuple[int, ...]:
        return () if self.count is None else (self.count,)

    def use_count(self, count: int | None, who: str) -> None:
        if not self.started:
            self.count, self.started = count, True
        elif count != self.count:
            raise RuntimeError(
                f"{who}: the joint approximation was drawn with "
                f"{self.count or 'no'} particles in this run and is now asked for "
                f"{count or 'none'}; call borch.sample(model) before drawing again"
            )

    def standard_noise(self, position: int) -> Tensor:
        noise = self.noise.get(position)
        if noise is None:
            reference = self.parts[0]
            size = self.slices[position].block.size
            noise = torch.randn(
                (*self.leading(), size), dtype=reference.dtype, device=reference.device
            )
            self.noise[position] = noise
        return noise

    def value(self, position: int) -> Tensor:
        value = self.values.get(position)
        if value is None:
            point = self.family.__dict__.get("_point")
            if point is not None:  # every block at a given point (see at_point)
                block = self.slices[position].block
                value = point[block.offset : block.offset + block.size]
            elif (
                not self.values and (joint := self.family.draw_joint(self)) is not None
            ):
                self.joint = joint
                self._split(joint)
                return self.values[position]
            else:
                value = self.family.draw_block(self, position)
            self.values[position] = value
        return value

    def _split(self, joint: Tensor) -> None:
        """Hand each block its columns of a joint draw ``(..., dimension)``."""
        for position, rv in enumerate(self.slices):
            block = rv.block
            self.values[position] = joint[..., block.offset : block.offset + block.size]

    def prefix(self, position: int) -> Tensor:
        """The unconstrained values of the blocks before ``position``, concatenated."""
        if position == 0:
            reference = self.parts[0]
            return reference.new_zeros((*self.leading(), 0))
        for j in range(position):
            self.value(j)
        return self._joined(position)

    def _joined(self, count: int) -> Tensor:
        """The values of the first ``count`` blocks in one tensor: the joint draw,
        or its first columns, where it holds them (a concatenation of its own
        columns would be another operation, in the graph)."""
        joint = self.joint
        if joint is not None:
            block = self.slices[count - 1].block
            end = block.offset + block.size
            if end == joint.shape[-1]:
                return joint
            if end < joint.shape[-1]:
                return joint[..., :end]
        return torch.cat([self.values[j] for j in range(count)], dim=-1)

    def joint_terms(self, parts: tuple, position: int) -> Tensor | None:
        """The family's elementwise log-density terms (``joint_log_density``) of
        the blocks drawn so far, from the first, for ``parts``: computed once per
        run and set of parts; ``None`` if they do not reach block ``position`` or
        the family has no joint form."""
        if type(self.family).joint_log_density is JointPosterior.joint_log_density:
            return None  # the family scores block by block: nothing to gather
        count = 0
        while count in self.values:
            count += 1
        cached = self.terms
        if cached is not None and cached[0] is parts[0] and cached[1] == count:
            return cached[2]
        if count <= position:
            return None
        values = self._joined(count)
        blocks = [self.slices[j].block for j in range(count)]
        terms = self.family.joint_log_density(parts, values, blocks)
        if terms is not None:
            self.terms = (parts[0], count, terms)
        return terms


class BlockDistribution(Distribution):
    """The conditional distribution of one block given the blocks before it, in
    unconstrained space, elementwise over the block's shape.

    ``parts`` are the family's tensors this block's density needs (copied and
    detached by ``elbo_path_derivative_loss`` like any distribution's tensors);
    the earlier blocks' values come from the run (without their gradient when the
    value has none).
    """

    arg_constraints: dict = {}
    support = constraints.real
    has_rsample = True

    def __init__(self, run: JointRun, position: int, parts: tuple) -> None:
        self.run = run
        self.position = position
        self.parts = parts
        super().__init__(run.slices[position].block.shape, validate_args=False)

    def rsample(self, sample_shape=()) -> Tensor:
        sample_shape = torch.Size(sample_shape)
        if any(size != 1 for size in sample_shape[1:]):
            # (count, 1, ...): particles laid out left of batch dimensions
            raise ValueError(
                "a joint approximation draws one value or one set of particles at a "
                f"time, not sample_shape {tuple(sample_shape)}"
            )
        slice_rv = self._whole_block()
        count = sample_shape[0] if sample_shape else None
        self.run.use_count(count, slice_rv._describe())
        drawn = _shaped(self.run.value(self.position), sample_shape + self.batch_shape)
        self.run.drawn[self.position] = drawn
        return drawn

    def sample(self, sample_shape=()) -> Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def _whole_block(self) -> JointSlice:
        slice_rv = self.run.slices[self.position]
        if self.batch_shape != slice_rv.block.shape:  # rows taken by a plate
            raise ValueError(
                f"{slice_rv._describe()} is used {tuple(self.batch_shape)} rows at a "
                f"time (a subsampled plate?) but its joint block has shape "
                f"{tuple(slice_rv.block.shape)}: joint families approximate global "
                "variables; give the module with local variables a mean-field "
                "posterior (posterior.Normal())"
            )
        return slice_rv

    def _flat(self, value: Tensor) -> tuple[Tensor, torch.Size]:
        self._whole_block()
        shape = self.batch_shape
        leading = value.shape[: value.dim() - len(shape)]
        if value.shape[value.dim() - len(shape) :] != shape:
            raise ValueError(
                f"{self.run.slices[self.position]._describe()}: value of shape "
                f"{tuple(value.shape)} does not end in its shape {tuple(shape)}"
            )
        size = self.run.slices[self.position].block.size
        if leading:
            return value.reshape(-1, size), leading
        return value.reshape(size), leading

    def log_prob(self, value: Tensor) -> Tensor:
        if same_draw(value, self.run.drawn.get(self.position)):
            # The run's own draw: the block's columns of the whole joint's terms.
            terms = self.run.joint_terms(self.parts, self.position)
            if terms is not None:
                block = self.run.slices[self.position].block
                columns = terms[..., block.offset : block.offset + block.size]
                return _shaped(columns, value.shape)
        flat, leading = self._flat(value)
        prefix = self.run.prefix(self.position)
        if not flat.requires_grad:
            # A fixed value (a score-function estimator's draw, data): its density
            # is a function of the parameters alone, not of the run's draws.
            prefix = prefix.detach()
        if flat.dim() != prefix.dim():
            if flat.dim() > prefix.dim():
                prefix = prefix.expand(flat.shape[0], prefix.shape[-1])
            else:
                flat = flat.expand(prefix.shape[0], flat.shape[-1])
                leading = torch.Size(prefix.shape[:1])
        terms = self.run.family.block_log_density(self.parts, prefix, flat)
        return terms.reshape(torch.Size(leading) + self.batch_shape)

    def entropy(self) -> Tensor:
        return self.run.family.block_entropy(self.parts).reshape(self.batch_shape)


class JointPosterior(Posterior):
    """Base class of the joint families (see :mod:`borch.posterior.joint`).

    A family defines, per block, its parameters (:meth:`block_parameters`), what it
    assembles from all blocks once per run (:meth:`assemble`), how a block is drawn
    given the run (:meth:`draw_block`), which assembled tensors a block's density
    needs (:meth:`block_parts`) and that density (:meth:`block_log_density`,
    :meth:`block_entropy`). It may also draw all blocks at once
    (:meth:`draw_joint`) and give all blocks' terms at the run's own draw at once
    (:meth:`joint_log_density`): a training step then costs one joint computation,
    not one per variable.

    Args:
        init_scale: the scale of every unconstrained coordinate at the start.
    """

    def __init__(self, init_scale: float = 0.1) -> None:
        super().__init__()
        init_scale = float(init_scale)
        if not (math.isfinite(init_scale) and init_scale > 0):
            raise ValueError(f"init_scale must be a positive number, got {init_scale}")
        self._init_scale = init_scale
        self.__dict__["_run"] = None
        self.__dict__["_point"] = None

    # ------------------------------------------------------------- the chain
    def register_random_variable(
        self, name: str, prior: RandomVariable
    ) -> RandomVariable:
        family = type(self).__name__
        prior_dist = prior.distribution
        require_density(name, prior_dist, family)
        transform = unconstraining_transform(name, prior_dist.support, family)
        location = _location(prior)
        start = to_unconstrained(transform, location.to(float_dtype(prior_dist)))
        if not start.is_floating_point():
            start = start.to(torch.get_default_dtype())
        blocks = self.blocks()
        offset = sum(rv.block.size for rv in blocks)
        block = Block(
            start.shape,
            start.numel(),
            offset,
            transform,
            tuple(self.joint_names()),
            location.shape,
        )
        parameters = self.block_parameters(len(blocks), block, start.reshape(-1))
        return JointSlice(self, parameters, block)

    def update_random_variable(self, name: str, prior: RandomVariable) -> None:
        approximation = self._modules.get(name)
        if not isinstance(approximation, JointSlice):
            return
        distribution = prior.distribution
        shape = distribution.batch_shape + distribution.event_shape
        expected = approximation.block.value_shape
        # Only the trailing dimensions are the variable's own: under vectorised
        # particles the prior has more on the left; a prior of plain numbers
        # (borch.nn) takes its shape from its value.
        if expected and shape and shape[len(shape) - len(expected) :] != expected:
            raise ValueError(
                f"random variable '{name}' changed shape from {tuple(expected)} to "
                f"{tuple(shape)}; {type(self).__name__} keeps one block per name. If "
                "two modules sharing this posterior both have a variable of this "
                "name, rename one (or give them separate posteriors)"
            )

    def joint_names(self) -> list[str]:
        """The names of the variables in the joint, in chain order."""
        return [
            name for name, rv in self._modules.items() if isinstance(rv, JointSlice)
        ]

    def blocks(self) -> list[JointSlice]:
        """The approximating variables in the joint, in chain order; an error naming
        the variables if a block before one of them was removed."""
        slices = []
        names: list[str] = []
        for name, rv in self._modules.items():
            if not isinstance(rv, JointSlice):
                continue
            if rv.block.context != tuple(names):
                missing = sorted(set(rv.block.context) - set(names))
                raise RuntimeError(
                    f"the joint approximation of '{name}' was built after "
                    f"{list(rv.block.context)}, but the chain now has {names} before "
                    f"it (missing: {missing}); a joint cannot drop a variable from "
                    "the middle: re-create the posterior, or assign the missing "
                    "variables again"
                )
            slices.append(rv)
            names.append(name)
        return slices

    def blocks_so_far(self) -> list[JointSlice]:
        """:meth:`blocks`, or an error saying what to do when there are none yet."""
        slices = self.blocks()
        if not slices:
            raise ValueError(
                f"{type(self).__name__} approximates no variables yet: run the model "
                "once (outside torch.no_grad(), where no posterior creates its "
                "parameters) first"
            )
        return slices

    def dimension(self) -> int:
        """The number of unconstrained coordinates of the joint."""
        return sum(rv.block.size for rv in self.blocks())

    # --------------------------------------------------------------- runs
    def forget_run(self) -> None:
        """Start a new joint draw: every variable is drawn anew when next read."""
        # (a compiled step does not branch on the run: the first, eager, call
        # leaves one, the compiled ones none, and a guard on it would recompile)
        if not compiling() and self.__dict__["_run"] is None:
            return
        self.__dict__["_run"] = None
        for rv in self._modules.values():
            if isinstance(rv, JointSlice):
                rv.forget_value()

    @contextlib.contextmanager
    def at_point(self, point: Tensor) -> Iterator[None]:
        """Inside the block, every variable's value is its slice of the flat
        unconstrained ``point`` (no noise), so that a model run is a function of it."""
        self.forget_run()
        self.__dict__["_point"] = point
        try:
            yield
        finally:
            self.__dict__["_point"] = None
            self.forget_run()

    def current_run(self) -> JointRun:
        """The draws of this run (started on first use)."""
        run = self.__dict__["_run"]
        if run is None:
            run = JointRun(self, self.blocks())
            self.__dict__["_run"] = run
            note_step_state(self)
        return run

    def release_step_state(self) -> None:
        """End of a compiled step (:func:`borch.compile_step`): the run's draws,
        tensors of its graph, do not outlive it; an eager use draws anew."""
        self.forget_run()

    def slice_distribution(self, slice_rv: JointSlice) -> Distribution:
        """The distribution of ``slice_rv``: its block's conditional in this run,
        pushed onto its support."""
        run = self.current_run()
        position = run.index.get(id(slice_rv))
        if position is None:  # created after this run began
            run.extend(self.blocks())
            position = run.index[id(slice_rv)]
        base = BlockDistribution(run, position, self.block_parts(run, position))
        if is_identity(slice_rv.block.transform):
            return base
        return Pushforward(base, slice_rv.block.transform, run, position)

    # ------------------------------------------------- what a family defines
    def block_parameters(
        self, position: int, block: Block, start: Tensor
    ) -> dict[str, Any]:
        """The parameters of a new block at ``position``, its flat unconstrained
        location starting at ``start``."""
        raise NotImplementedError

    def assemble(self, slices: list[JointSlice]) -> tuple[Tensor, ...]:
        """What the family computes from all blocks' parameters once per run; the
        first element is a tensor of the joint's dtype and device."""
        raise NotImplementedError

    def draw_block(self, run: JointRun, position: int) -> Tensor:
        """The flat unconstrained draw of block ``position`` in ``run``."""
        raise NotImplementedError

    def draw_joint(self, run: JointRun) -> Tensor | None:
        """The flat unconstrained draw of all of ``run``'s blocks at once
        ``(..., dimension)``, or ``None`` to draw them one by one (the default)."""
        return None

    def block_parts(self, run: JointRun, position: int) -> tuple:
        """What the density of block ``position`` needs from ``run.parts``: its
        tensors are copied and detached by ``elbo_path_derivative_loss``."""
        raise NotImplementedError

    def block_log_density(self, parts: tuple, prefix: Tensor, value: Tensor) -> Tensor:
        """Elementwise ``log q(value | prefix)``, shape of ``value``: flat block
        values ``(count, size)`` or ``(size,)`` and the earlier blocks' values."""
        raise NotImplementedError

    def joint_log_density(
        self, parts: tuple, values: Tensor, blocks: list[Block]
    ) -> Tensor | None:
        """The elementwise terms of the first ``blocks`` at once, ``(..., n)`` for
        their flat values ``(..., n)``, as :meth:`block_log_density` gives each
        (``parts`` those of any of them); ``None`` where the family has no such
        form (the default)."""
        return None

    def block_entropy(self, parts: tuple) -> Tensor:
        """Elementwise entropy of the block given the earlier ones (flat)."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"init_scale={self._init_scale}"

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_run"] = None
        state["_point"] = None
        return state


class Pushforward(TransformedDistribution):
    """A block's conditional pushed onto its variable's support. Its own draw
    remembers the unconstrained values it came from, so that its log-density
    there needs no inverse transform and takes the joint's terms (an elementwise
    transform only; any other goes through torch's computation)."""

    def __init__(self, base: BlockDistribution, transform, run, position) -> None:
        self.run, self.position = run, position
        self.elementwise = (
            transform.domain.event_dim == 0 == (transform.codomain.event_dim)
        )
        if self.elementwise:
            # Its shapes are the base's: torch's initialiser works them out through
            # the transform (about 10 us of Python per variable and run).
            self.base_dist = base
            self.transforms = [transform]
            Distribution.__init__(self, base.batch_shape, validate_args=False)
        else:
            super().__init__(base, [transform], validate_args=False)

    def rsample(self, sample_shape=()) -> Tensor:
        value = super().rsample(sample_shape)
        self.run.constrained[self.position] = value
        return value

    def log_prob(self, value: Tensor) -> Tensor:
        if self.elementwise and same_draw(
            value, self.run.constrained.get(self.position)
        ):
            unconstrained = _shaped(self.run.drawn[self.position], value.shape)
            (transform,) = self.transforms
            return self.base_dist.log_prob(
                unconstrained
            ) - transform.log_abs_det_jacobian(unconstrained, value)
        return super().log_prob(value)


def same_draw(value: Tensor, drawn: Tensor | None) -> bool:
    """Whether ``value`` is ``drawn`` or a reshaped view of it (the particle
    layout reshapes draws), with its gradient."""
    if drawn is None:
        return False
    if value is drawn:
        return True
    if compiling():  # storage comparisons are not traceable; a view scores anew
        return False
    return (
        value.requires_grad == drawn.requires_grad
        and value.numel() == drawn.numel()
        and value.data_ptr() == drawn.data_ptr()
        and _root(value) is _root(drawn)
        and (
            (value.shape == drawn.shape and value.stride() == drawn.stride())
            or (value.is_contiguous() and drawn.is_contiguous())
        )
    )


def _root(tensor: Tensor) -> Tensor:
    base = tensor._base
    return tensor if base is None else base


def _shaped(tensor: Tensor, shape: torch.Size) -> Tensor:
    """``tensor`` reshaped to ``shape``; itself where it has that shape (a reshape
    would be a view, in the graph, and lose the draw's identity)."""
    return tensor if tensor.shape == shape else tensor.reshape(shape)


def spread_evenly(term: Tensor, size: int) -> Tensor:
    """A block's joint term ``(count,)`` or ``()`` laid out over its ``size``
    elements, so that they add up to it."""
    share = term / size
    if share.dim() == 0:
        return share.expand(size)
    return share.unsqueeze(-1).expand(*term.shape, size)


def _location(prior: RandomVariable) -> Tensor:
    location = prior_location(prior.distribution)
    value = prior.last_value
    if value is not None and location.shape != value.shape:
        # borch.nn priors of plain numbers hold their parameter's value: one
        # location per element of it.
        location = torch.broadcast_to(location, value.shape).clone()
    return location
