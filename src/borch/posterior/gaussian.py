"""Gaussian joint families: ``MultivariateNormal`` (full rank) and
``LowRankMultivariateNormal`` over all latent variables, in unconstrained space."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.distributions import LowRankMultivariateNormal as TorchLowRank
from torch.distributions import MultivariateNormal as TorchMultivariateNormal

from borch.compiling import compiling
from borch.fastpath.memo import remembered
from borch.posterior.joint import Block, JointPosterior, JointRun, spread_evenly
from borch.posterior.laplace_start import LaplaceFit, await_start, laplace_fit
from borch.validation import check_count

__all__ = ["LowRankMultivariateNormal", "MultivariateNormal"]

_HALF_LOG_TWO_PI = 0.5 * math.log(2 * math.pi)


class _LaplaceStarted(JointPosterior):
    """What the Gaussian families share: their ``init`` (a Laplace start or the
    prior's centre), the path-derivative ``log_prob`` and the start itself."""

    def __init__(
        self,
        init_scale: float,
        init: str,
        path_derivative: bool,
        laplace_dimension: int,
    ) -> None:
        super().__init__(init_scale=init_scale)
        if init not in ("laplace", "prior"):
            raise ValueError(f"init must be 'laplace' or 'prior', got {init!r}")
        self._init = init
        self._path_derivative = _check_path_derivative(path_derivative)
        self._laplace_dimension = check_count(
            "laplace_dimension", laplace_dimension, minimum=1
        )
        if init == "laplace":
            # Whether the Laplace start has been made (or skipped): in the state
            # dict, so a loaded posterior does not start again.
            self.register_buffer("_started", torch.tensor(False))

    def register_random_variable(self, name, prior):
        approximation = super().register_random_variable(name, prior)
        if self._init == "laplace" and not bool(self._started):
            await_start(self)
        return approximation

    def start(self, model: nn.Module, run) -> None:
        """Start at the Laplace approximation of the posterior of the variables
        so far (see the class docstring); ``run()`` re-runs ``model``'s call."""
        if bool(self._started):
            return
        slices = self.blocks()
        fit = None
        if slices and self.dimension() <= self._laplace_dimension:
            loc = self.assemble(slices)[0]
            fit = laplace_fit(self, model, run, loc.detach())
        with torch.no_grad():
            self._started.fill_(True)
            if fit is not None:
                self.start_at(slices, fit)
        self.forget_run()

    def start_at(self, slices: list, fit: LaplaceFit) -> None:
        """Set the blocks' parameters to ``fit`` (under ``torch.no_grad()``)."""
        raise NotImplementedError

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state.pop("_frame", None)  # see _rebuilt_on_change
        return state


class MultivariateNormal(_LaplaceStarted):
    """Approximate all latent variables together by one full-rank Gaussian in
    unconstrained space.

    The joint ``u = loc + L @ noise`` has a lower-triangular ``L`` with a positive
    diagonal, built from blocks: variable ``k`` owns its rows of ``L`` and of
    ``loc``. Constrained variables are pushed through ``biject_to(support)``; the
    log-density includes the log-det-Jacobian. Each variable's log-density term is
    its exact conditional given the variables before it (see
    :mod:`borch.posterior.joint`). A variable's parameters are one vector,
    ``posterior.<name>.numbers`` (its ``loc``, log-diagonal, and entries of ``L``
    within and under the earlier blocks; :meth:`block_view` names them), so an
    optimiser updates one tensor per variable.

    Initialisation (``init="laplace"``, the default): when the first call of the
    model that created the variables returns, the call is re-run to find the mode
    of the posterior density in unconstrained space (L-BFGS from the prior's
    centre) and its Hessian there (:mod:`borch.posterior.laplace_start`); the joint
    starts at that Laplace approximation, and the parameters are relative to it:
    ``u = m + B (loc + L' noise)`` with the mode ``m`` and the Laplace factor ``B``
    kept as buffers (``posterior.<name>.origin``, ``.basis``), ``loc`` at zero and
    ``L'`` the identity. An optimiser's steps are then in units of the posterior's
    own scales and along its own correlations, so that Adam's per-coordinate step
    (about ``lr``) is a fraction of a posterior sd in every direction. Without it,
    on posteriordb's kidiq (``kid_score ~ Normal(b1 + b2 mom_iq, sigma)``, the
    intercept's sd 6, the slope's 0.06, correlation -0.989) the intercept moves
    from 0 by about 0.1 per 300 Adam steps and ends several sds away; from the
    Laplace start, the means, sds and correlation are Stan's within 0.3 sd, 10%
    and 0.01 at Adam lr 0.01-0.1 and 2,000-10,000 steps (benchmarks/README.md).
    The first call then runs the model a few hundred times (more for a slow
    model; it must have no side effects that matter). The start is skipped (the
    prior start below kept) when the model uses latent variables this posterior
    does not approximate, when the call observes nothing (a ``borch.nn`` layer
    whose likelihood is outside it), when the joint has more than ``laplace_dimension``
    coordinates, or when the search ends where the density is not finite or not
    curved upwards; a state dict loaded before the first call keeps its values.
    A call that simulates its observed variables (:func:`borch.simulate_observed`,
    as predictive runs do) has no data to fit and leaves the start to the next call.
    Variables that first appear later start as with ``init="prior"``. Under
    :func:`borch.distributed.data_parallel` (which needs the model run once
    before it wraps it) the first call fits the start on its rank's batch, and
    the wrapper hands rank 0's start to every rank.

    ``init="prior"``: ``loc`` at the prior's mean (its median where the mean is
    infinite, a HalfCauchy's for instance) mapped to unconstrained space, no
    correlation, and every coordinate's scale ``init_scale``.

    With ``path_derivative=True`` (the default) a variable's ``log_prob`` of a
    value that carries a gradient (a reparameterised draw) holds the family's
    parameters fixed, so the ELBO's gradient reaches them only through the draw
    (Roeder et al.'s "sticking the landing" estimator, as
    :func:`borch.infer.elbo_path_derivative_loss`): unbiased, and its variance
    vanishes as the joint approaches a Gaussian posterior, so a plain Adam loop
    ends near the optimum rather than jittering around it (on kidiq at lr 0.05 the
    sds' error falls from up to 20% to 5%). ``entropy()`` keeps its gradient.

    Args:
        init_scale: the initial scale of every unconstrained coordinate (before
            the Laplace start, and for variables it does not cover).
        init: ``"laplace"`` or ``"prior"`` (see above).
        path_derivative: hold the parameters fixed in ``log_prob`` (see above).
        laplace_dimension: the largest joint the Laplace start fits.

    Example:
        >>> import torch
        >>> import borch
        >>> from borch import distributions as dist
        >>> model = borch.Module(posterior=MultivariateNormal())
        >>> model.w = dist.Normal(torch.zeros(2), 1.0)
        >>> model.sigma = dist.HalfCauchy(2.5)
        >>> model.posterior.dimension()
        3
        >>> sorted(name for name, _ in model.named_parameters())  # see block_view
        ['posterior.sigma.numbers', 'posterior.w.numbers']
        >>> joint = model.posterior.unconstrained_distribution()
        >>> joint.loc.detach()  # w at its prior mean, sigma at log(2.5)
        tensor([0.0000, 0.0000, 0.9163])
        >>> bool(model.sigma > 0)
        True

        Fitted from the first call of a model:

        >>> class Mean(borch.Module):
        ...     def forward(self):
        ...         self.mu = dist.Normal(0.0, 10.0)
        ...         self.y = dist.Normal(self.mu, 1.0)
        >>> model = Mean(posterior=MultivariateNormal())
        >>> model.observe(y=torch.tensor([3.0, 5.0]))
        >>> model()
        >>> joint = model.posterior.unconstrained_distribution()
        >>> round(joint.mean.item(), 2), round(joint.stddev.item(), 3)  # exact: 8 / 2.01, 2.01 ** -0.5
        (3.98, 0.705)
    """

    def __init__(
        self,
        init_scale: float = 0.1,
        init: str = "laplace",
        path_derivative: bool = True,
        laplace_dimension: int = 1000,
    ) -> None:
        super().__init__(init_scale, init, path_derivative, laplace_dimension)

    def block_parameters(self, position: int, block: Block, start: Tensor) -> dict:
        size = block.size
        laplace = self._init == "laplace"
        # One vector per block (see block_view): an optimiser's cost is per
        # tensor, and four tensors per block made Adam a fifth of a step.
        _, _, tril, cross = _block_parts(size, block.offset)
        numbers = [
            torch.zeros_like(start) if laplace else start,
            start.new_full((size,), 0.0 if laplace else math.log(self._init_scale)),
            start.new_zeros(tril + cross),
        ]
        parameters = {"numbers": nn.Parameter(torch.cat(numbers))}
        if laplace:
            basis = start.new_zeros((size, block.offset + size))
            basis[:, block.offset :].fill_diagonal_(self._init_scale)
            parameters["origin"] = start.clone()
            parameters["basis"] = basis
        return parameters

    def start_at(self, slices, fit) -> None:
        for rv in slices:
            block = rv.block
            rows = slice(block.offset, block.offset + block.size)
            rv.state("origin").copy_(fit.mode[rows])
            rv.state("basis").copy_(fit.scale_tril[rows, : block.offset + block.size])
            rv.state("numbers").zero_()  # loc 0, log_diag 0 (L' the identity)

    def block_view(self, name: str) -> dict[str, Tensor]:
        """Variable ``name``'s parameters by role, as views of its one parameter
        vector ``posterior.<name>.numbers``: ``loc`` (its rows of ``loc``),
        ``log_diag`` (the log of its diagonal of ``L``), ``tril`` (its strictly
        lower entries within the block, row by row) and ``cross`` (its rows of
        ``L`` under the earlier blocks, ``(size, offset)``).

        Example:
            >>> import torch
            >>> import borch
            >>> from borch import distributions as dist
            >>> model = borch.Module(posterior=MultivariateNormal(init="prior"))
            >>> model.a = dist.Normal(torch.zeros(2), 1.0)
            >>> model.b = dist.Normal(model.a.sum(), 1.0)
            >>> {role: tuple(part.shape) for role, part in model.posterior.block_view("b").items()}
            {'loc': (1,), 'log_diag': (1,), 'tril': (0,), 'cross': (1, 2)}
        """
        rv = self.approximation(name)
        if rv is None:
            raise KeyError(
                f"block_view: no variable {name!r} in this posterior (it has "
                f"{self.joint_names()})"
            )
        size, offset = rv.block.size, rv.block.offset
        loc, log_diag, tril, cross = rv.state("numbers").split(
            _block_parts(size, offset)
        )
        return {
            "loc": loc,
            "log_diag": log_diag,
            "tril": tril,
            "cross": cross.view(size, offset),
        }

    def assemble(self, slices) -> tuple[Tensor, Tensor]:
        # Every block's vector in one, then loc and the factor placed by gathers:
        # fewer operations than building and padding each block's rows, and each
        # parameter's gradient is one contiguous slice of one gradient (column
        # slices of a row block would not be, which DDP warns about).
        numbers = [rv.state("numbers") for rv in slices]
        flat = numbers[0] if len(numbers) == 1 else torch.cat(numbers)
        loc_index, diagonal_index, placement = _factor_layout(
            tuple((rv.block.offset, rv.block.size) for rv in slices), flat.device
        )
        loc = torch.take(flat, loc_index)
        entries = [flat, torch.take(flat, diagonal_index).exp(), flat.new_zeros(1)]
        scale_tril = torch.take(torch.cat(entries), placement)
        if self._init != "laplace":
            return loc, scale_tril
        origin, basis = self._laplace_frame(slices, loc.shape[-1])
        return torch.addmv(origin, basis, loc), basis @ scale_tril

    def _laplace_frame(self, slices, dimension: int) -> tuple[Tensor, Tensor]:
        """The mode and the Laplace factor of all blocks (``B`` and ``m`` of the
        class docstring)."""
        buffers = [(rv.state("origin"), rv.state("basis")) for rv in slices]
        return _rebuilt_on_change(
            self,
            [b for pair in buffers for b in pair],
            lambda: (
                torch.cat([origin for origin, _ in buffers]),
                torch.cat([_pad_columns([b], dimension) for _, b in buffers]),
            ),
        )

    def draw_block(self, run: JointRun, position: int) -> Tensor:
        loc, scale_tril = run.parts
        block = run.slices[position].block
        end = block.offset + block.size
        noise = torch.cat([run.standard_noise(j) for j in range(position + 1)], -1)
        rows = scale_tril[block.offset : end, :end]
        return loc[block.offset : end] + noise @ rows.T

    def draw_joint(self, run: JointRun) -> Tensor:
        loc, scale_tril = run.parts
        return _affine(loc, scale_tril, _joint_noise(run, loc))

    def block_parts(self, run, position):
        block = run.slices[position].block
        return (*run.parts, block.offset, block.offset + block.size)

    def block_log_density(self, parts, prefix, value):
        loc, scale_tril, offset, end = parts
        loc, scale_tril = _held(
            self._path_derivative, value, loc[:end], scale_tril[:end, :end]
        )
        values = torch.cat([prefix, value], dim=-1)
        return _triangular_terms(loc, scale_tril, values)[..., offset:]

    def joint_log_density(self, parts, values, blocks):
        loc, scale_tril = _leading(values.shape[-1], parts[0], parts[1])
        loc, scale_tril = _held(self._path_derivative, values, loc, scale_tril)
        return _triangular_terms(loc, scale_tril, values)

    def block_entropy(self, parts):
        _, scale_tril, offset, end = parts
        diagonal = torch.diagonal(scale_tril)[offset:end]
        return 0.5 + _HALF_LOG_TWO_PI + diagonal.log()

    def unconstrained_distribution(self) -> TorchMultivariateNormal:
        """The joint over all unconstrained coordinates (blocks in
        :meth:`joint_names` order), for inspection."""
        loc, scale_tril = self.assemble(self.blocks_so_far())
        return TorchMultivariateNormal(loc, scale_tril=scale_tril, validate_args=False)

    def _load_from_state_dict(self, state_dict, prefix, *args) -> None:
        _numbers_from_separate_parameters(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args)

    def extra_repr(self) -> str:
        return (
            f"init_scale={self._init_scale}, init={self._init!r}, "
            f"path_derivative={self._path_derivative}"
        )


def _check_path_derivative(value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"path_derivative must be True or False, got {value!r}")
    return value


def _triangular_terms(loc: Tensor, scale_tril: Tensor, values: Tensor) -> Tensor:
    """Elementwise ``log N(values; loc, L L')``: coordinate ``i``'s term is its
    conditional density given the coordinates before it."""
    centred = values - loc
    # Recomputing the noise from the values (not reusing the draw's) keeps log q a
    # function of the values, as the path-derivative estimator needs.
    noise = torch.linalg.solve_triangular(
        scale_tril, centred.unsqueeze(-1), upper=False
    ).squeeze(-1)
    constant = -_HALF_LOG_TWO_PI - torch.diagonal(scale_tril).log()
    return torch.addcmul(constant, noise, noise, value=-0.5)


def _dense_factor(factor: Tensor, scale: Tensor) -> Tensor:
    """The Cholesky factor of ``factor @ factor.T + diag(scale**2)``."""
    covariance = factor @ factor.T + torch.diag_embed(scale.square())
    return torch.linalg.cholesky(covariance)


def _leading(end: int, *tensors: Tensor) -> tuple:
    """The first ``end`` rows (and columns, of a square matrix) of each tensor,
    the tensor itself where that is all of it."""
    if all(tensor.shape[0] == end for tensor in tensors):
        return tensors
    return tuple(
        tensor[:end, :end]
        if tensor.dim() == 2 and tensor.shape[0] == tensor.shape[1]
        else tensor[:end]
        for tensor in tensors
    )


def _held(path_derivative: bool, value: Tensor, *tensors: Tensor) -> tuple:
    """``tensors``, detached for the path-derivative ``log_prob``. Only a value that
    carries a gradient (a reparameterised draw) gets that form; a fixed value (a
    score-function estimator's, data) needs the gradient through the parameters."""
    if path_derivative and value.requires_grad:
        return tuple(tensor.detach() for tensor in tensors)
    return tensors


def _affine(shift: Tensor, matrix: Tensor, vectors: Tensor) -> Tensor:
    """``shift + vectors @ matrix.T`` for one vector or a batch of rows, in one
    operation."""
    if vectors.dim() == 1:
        return torch.addmv(shift, matrix, vectors)
    return torch.addmm(shift, vectors, matrix.T)


def _joint_noise(run: JointRun, reference: Tensor) -> Tensor:
    """Standard Normal noise for all of ``run``'s blocks, each block's columns kept
    as its noise (for a block that joins the run later)."""
    noise = torch.randn(
        (*run.leading(), reference.shape[-1]),
        dtype=reference.dtype,
        device=reference.device,
    )
    for position, rv in enumerate(run.slices):
        block = rv.block
        run.noise[position] = noise[..., block.offset : block.offset + block.size]
    return noise


def _origin_and_unit(buffers: list) -> tuple[Tensor, Tensor, Tensor]:
    origin = torch.cat([origin for origin, _ in buffers])
    unit = torch.cat([unit for _, unit in buffers])
    return origin, unit, unit.log()


def _rebuilt_on_change(family, tensors: list[Tensor], build) -> tuple:
    """``build()``, remembered on ``family`` while ``tensors`` (buffers) are the
    same objects, unmodified: it runs once, not on every step."""
    if compiling():
        return build()
    key = [tensor._version for tensor in tensors]
    cached = family.__dict__.get("_frame")
    if (
        cached is not None
        and len(cached[0]) == len(tensors)
        and all(a is b for a, b in zip(cached[0], tensors))
        and cached[1] == key
    ):
        return cached[2]
    built = build()
    family.__dict__["_frame"] = (tensors, key, built)
    return built


def _numbers_from_separate_parameters(state_dict: dict, prefix: str) -> None:
    """Rewrite, in place, a variable's ``loc``, ``log_diag``, ``tril`` and ``cross``
    (the layout of state dicts saved before one vector per variable) as its
    ``numbers``, so that those state dicts still load."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        name, _, role = key[len(prefix) :].partition(".")
        stem = f"{prefix}{name}."
        if role != "log_diag" or stem + "loc" not in state_dict:
            continue
        log_diag = state_dict.pop(key)
        size, empty = log_diag.shape[0], log_diag.new_zeros(0)
        tril, cross = (
            state_dict.pop(stem + "tril", None),
            state_dict.pop(stem + "cross", None),
        )
        below = torch.tril_indices(size, size, -1)
        state_dict[stem + "numbers"] = torch.cat(
            [
                state_dict.pop(stem + "loc"),
                log_diag,
                empty if tril is None else tril[below[0], below[1]],
                empty if cross is None else cross.reshape(-1),
            ]
        )


def _block_parts(size: int, offset: int) -> tuple[int, int, int, int]:
    """How many numbers of a block's vector are its ``loc``, ``log_diag``,
    ``tril`` (strictly lower, within the block) and ``cross`` (under the
    ``offset`` earlier coordinates), in that order."""
    return size, size, size * (size - 1) // 2, size * offset


@remembered(64)  # a layout per set of blocks
def _factor_layout(spans: tuple, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """For blocks at ``spans`` ``((offset, size), ...)``, each a vector ``(loc,
    log_diag, tril, cross)`` (see ``MultivariateNormal.block_view``), all
    concatenated: where ``loc`` and the log-diagonal are in that vector, and where
    each entry of the block-triangular factor comes from in the vector followed
    by the exponentiated diagonal and one zero (the upper triangle's)."""
    dimension = sum(size for _, size in spans)
    count = sum(sum(_block_parts(size, offset)) for offset, size in spans)
    placement = torch.full((dimension, dimension), count + dimension, dtype=torch.long)
    loc, log_diag = [], []
    start = 0
    for offset, size in spans:
        loc.append(torch.arange(start, start + size))
        log_diag.append(torch.arange(start + size, start + 2 * size))
        start += 2 * size
        block = placement[offset : offset + size]
        diagonal = torch.arange(size)
        block[diagonal, offset + diagonal] = count + offset + diagonal
        rows, columns = torch.tril_indices(size, size, -1)
        block[rows, offset + columns] = start + torch.arange(rows.numel())
        start += rows.numel()
        if offset:
            block[:, :offset] = start + torch.arange(size * offset).view(size, offset)
            start += size * offset
    return tuple(t.to(device) for t in (torch.cat(loc), torch.cat(log_diag), placement))


def _pad_columns(parts: list[Tensor], dimension: int) -> Tensor:
    """Rows of a ``dimension``-column matrix from their first columns."""
    width = sum(part.shape[1] for part in parts)
    if width < dimension:
        parts = [*parts, parts[0].new_zeros((parts[0].shape[0], dimension - width))]
    return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]


class LowRankMultivariateNormal(_LaplaceStarted):
    """Approximate all latent variables together by a Gaussian whose covariance is
    ``factor @ factor.T + diag(scale**2)``, ``factor`` of ``rank`` columns.

    ``u = loc + factor @ z + scale * noise`` with ``z`` of ``rank`` standard Normal
    numbers shared by all variables: each variable owns its rows of ``factor``, its
    ``loc`` and ``log_scale``. It costs ``O(dimension * rank)`` per step where the
    full-rank family costs ``O(dimension**2)``. A variable's log-density term is
    its block's conditional given the blocks before it (see
    :mod:`borch.posterior.joint`): up to ``dense_limit`` coordinates in all it is
    computed through the Cholesky factor of the covariance, each element its own
    conditional, and beyond through the low-rank identities, spread evenly over
    the block's elements (their sum is exact either way).

    Initialisation (``init="laplace"``, the default): the Laplace fit of the
    first call, as for :class:`MultivariateNormal`, made low rank: ``loc`` at the
    mode, ``factor`` the covariance's ``rank`` leading principal axes, each
    scaled by the sd along it, and ``scale`` what the axes leave of every
    coordinate's variance (at least 1% of its sd), so that the start has the
    fit's marginal variances and its strongest correlations. ``init="prior"``
    (and variables that appear after the start): ``loc`` at the prior's centre
    as for :class:`MultivariateNormal`, ``scale`` at ``init_scale`` and
    ``factor`` small and random (seeded per block, the user's random stream
    untouched) so the correlations can grow from the first step: a factor of
    zeros is a stationary point of the ELBO.

    ``path_derivative=True`` (the default) holds the parameters fixed in the
    ``log_prob`` of a reparameterised draw, as for :class:`MultivariateNormal`.

    Args:
        rank: the number of columns of ``factor``.
        init_scale: the initial scale of every unconstrained coordinate.
        init: ``"laplace"`` or ``"prior"`` (see above).
        path_derivative: hold the parameters fixed in ``log_prob`` (see above).
        laplace_dimension: the largest joint the Laplace start fits.

    Example:
        >>> import torch
        >>> import borch
        >>> from borch import distributions as dist
        >>> model = borch.Module(posterior=LowRankMultivariateNormal(rank=2))
        >>> model.w = dist.Normal(torch.zeros(5), 1.0)
        >>> model.posterior.w.factor.shape
        torch.Size([5, 2])
        >>> model.w.shape
        torch.Size([5])
    """

    #: Up to this many coordinates a log-density goes through the Cholesky factor
    #: of the covariance (fewer, cheaper operations than the low-rank identities).
    dense_limit = 128

    def __init__(
        self,
        rank: int = 2,
        init_scale: float = 0.1,
        init: str = "laplace",
        path_derivative: bool = True,
        laplace_dimension: int = 1000,
    ) -> None:
        super().__init__(init_scale, init, path_derivative, laplace_dimension)
        self._rank = check_count("rank", rank, minimum=1)

    def block_parameters(self, position: int, block: Block, start: Tensor) -> dict:
        size = block.size
        generator = torch.Generator().manual_seed(position)
        factor = torch.randn(size, self._rank, generator=generator).to(start)
        laplace = self._init == "laplace"
        parameters = {
            "loc": nn.Parameter(torch.zeros_like(start) if laplace else start.clone()),
            "factor": nn.Parameter(factor * (0.1 * self._init_scale)),
            "log_scale": nn.Parameter(
                start.new_full((size,), math.log(self._init_scale))
            ),
        }
        if laplace:
            # The frame: u = origin + unit * (loc + factor z + scale noise); the
            # identity until the start.
            parameters["origin"] = start.clone()
            parameters["unit"] = torch.ones_like(start)
        return parameters

    def start_at(self, slices, fit) -> None:
        covariance = fit.scale_tril @ fit.scale_tril.T
        variances, axes = torch.linalg.eigh(covariance)  # ascending
        leading = variances.flip(0)[: self._rank].clamp(min=0.0)
        factor = axes.flip(1)[:, : self._rank] * leading.sqrt()
        if factor.shape[1] < self._rank:  # fewer coordinates than the rank
            factor = torch.cat(
                [
                    factor,
                    factor.new_zeros(factor.shape[0], self._rank - factor.shape[1]),
                ],
                dim=1,
            )
        marginal = torch.diagonal(covariance)
        left = (marginal - factor.square().sum(1)).clamp(min=1e-4 * marginal)
        unit = marginal.sqrt()  # Adam's steps in units of each coordinate's sd
        for rv in slices:
            block = rv.block
            rows = slice(block.offset, block.offset + block.size)
            rv.state("origin").copy_(fit.mode[rows])
            rv.state("unit").copy_(unit[rows])
            rv.state("loc").zero_()
            rv.state("factor").copy_(factor[rows] / unit[rows, None])
            rv.state("log_scale").copy_(0.5 * left[rows].log() - unit[rows].log())

    def assemble(self, slices) -> tuple[Tensor, Tensor, Tensor]:
        loc = torch.cat([rv.state("loc") for rv in slices])
        factor = torch.cat([rv.state("factor") for rv in slices])
        log_scale = torch.cat([rv.state("log_scale") for rv in slices])
        if self._init != "laplace":
            return loc, factor, log_scale.exp()
        buffers = [(rv.state("origin"), rv.state("unit")) for rv in slices]
        origin, unit, log_unit = _rebuilt_on_change(
            self,
            [b for pair in buffers for b in pair],
            lambda: _origin_and_unit(buffers),
        )
        return (
            torch.addcmul(origin, unit, loc),
            unit.unsqueeze(-1) * factor,
            (log_scale + log_unit).exp(),
        )

    def draw_block(self, run: JointRun, position: int) -> Tensor:
        loc, factor, scale = run.parts
        block = run.slices[position].block
        rows = slice(block.offset, block.offset + block.size)
        noise = run.standard_noise(position)
        return loc[rows] + self._shared(run) @ factor[rows].T + scale[rows] * noise

    def draw_joint(self, run: JointRun) -> Tensor:
        loc, factor, scale = run.parts
        noise = _joint_noise(run, loc)
        return torch.addcmul(_affine(loc, factor, self._shared(run)), scale, noise)

    def _shared(self, run: JointRun) -> Tensor:
        """The ``rank`` standard Normal numbers all blocks of the run share."""
        shared = run.shared.get("z")
        if shared is None:
            loc = run.parts[0]
            shared = torch.randn(
                (*run.leading(), self._rank), dtype=loc.dtype, device=loc.device
            )
            run.shared["z"] = shared
        return shared

    def block_parts(self, run, position):
        block = run.slices[position].block
        return (*run.parts, block.offset, block.offset + block.size)

    def block_log_density(self, parts, prefix, value):
        loc, factor, scale, offset, end = parts
        loc, factor, scale = _held(
            self._path_derivative, value, loc[:end], factor[:end], scale[:end]
        )
        values = torch.cat([prefix, value], -1)
        if end <= self.dense_limit:
            return _triangular_terms(loc, _dense_factor(factor, scale), values)[
                ..., offset:
            ]
        joint = _low_rank(loc, factor, scale).log_prob(values)
        if offset:
            joint = joint - _low_rank(
                loc[:offset], factor[:offset], scale[:offset]
            ).log_prob(prefix)
        return spread_evenly(joint, value.shape[-1])

    def joint_log_density(self, parts, values, blocks):
        end = values.shape[-1]
        loc, factor, scale = _leading(end, *parts[:3])
        loc, factor, scale = _held(self._path_derivative, values, loc, factor, scale)
        if end <= self.dense_limit:
            return _triangular_terms(loc, _dense_factor(factor, scale), values)
        return self._prefix_terms(loc, factor, scale, values, blocks)

    def _prefix_terms(self, loc, factor, scale, values, blocks):
        """Each block's conditional as the difference of the log-densities of the
        prefixes ending with it and before it, all prefixes at once (the
        capacitance ``I + W' D^-1 W`` and ``W' D^-1 (u - loc)`` of a prefix are
        sums over its rows), spread evenly over the block."""
        layout = _BlockLayout.of(blocks, loc)
        centred = values - loc
        weighted = factor / scale.square().unsqueeze(-1)  # D^-1 W, (n, rank)
        # The diagonal part of a block's term is its own; the low-rank correction
        # of each prefix (through the block) is differenced.
        diagonal = -0.5 * (centred / scale).square() - scale.log() - _HALF_LOG_TWO_PI
        capacitance = torch.cumsum(weighted.unsqueeze(-1) * factor.unsqueeze(-2), 0)
        capacitance = capacitance[layout.last_rows] + layout.identity(self._rank)
        projected = layout.prefixes @ (centred.unsqueeze(-1) * weighted)
        cholesky = torch.linalg.cholesky(capacitance)
        solved = torch.linalg.solve_triangular(
            cholesky, projected.unsqueeze(-1), upper=False
        )
        log_det = torch.diagonal(cholesky, dim1=-2, dim2=-1).log().sum(-1)
        correction = 0.5 * solved.square().sum((-2, -1)) - log_det  # per prefix
        totals = diagonal @ layout.members + correction @ layout.differences
        return (totals / layout.sizes) @ layout.members.T

    def block_entropy(self, parts):
        loc, factor, scale, offset, end = parts
        loc, factor, scale = loc[:end], factor[:end], scale[:end]
        entropy = _low_rank(loc, factor, scale).entropy()
        if offset:
            entropy = (
                entropy
                - _low_rank(loc[:offset], factor[:offset], scale[:offset]).entropy()
            )
        return spread_evenly(entropy, end - offset)

    def unconstrained_distribution(self) -> TorchLowRank:
        """The joint over all unconstrained coordinates (blocks in
        :meth:`joint_names` order), for inspection."""
        return _low_rank(*self.assemble(self.blocks_so_far()))

    def extra_repr(self) -> str:
        return (
            f"rank={self._rank}, init_scale={self._init_scale}, init={self._init!r}, "
            f"path_derivative={self._path_derivative}"
        )


class _BlockLayout(NamedTuple):
    """Constant matrices over the blocks of a joint: ``members`` (n, K) marks each
    coordinate's block, ``prefixes`` (K, n) the coordinates up to each block's end,
    ``differences`` (K, K) turns running totals into per-block ones; ``sizes``
    (K,) and ``last_rows`` (K,) each block's size and last coordinate."""

    members: Tensor
    prefixes: Tensor
    differences: Tensor
    sizes: Tensor
    last_rows: Tensor

    @staticmethod
    @remembered(64)
    def build(spans: tuple, dtype: torch.dtype, device: torch.device) -> _BlockLayout:
        ends = torch.tensor([offset + size for offset, size in spans], device=device)
        coordinates = torch.arange(int(ends[-1]), device=device)
        starts = ends - torch.tensor([size for _, size in spans], device=device)
        members = (coordinates.unsqueeze(-1) >= starts) & (
            coordinates.unsqueeze(-1) < ends
        )
        prefixes = coordinates.unsqueeze(0) < ends.unsqueeze(-1)
        differences = torch.eye(len(spans), dtype=dtype, device=device)
        differences = differences - torch.diag(
            torch.ones(len(spans) - 1, dtype=dtype, device=device), 1
        )
        return _BlockLayout(
            members.to(dtype),
            prefixes.to(dtype),
            differences,
            (ends - starts).to(dtype),
            ends - 1,
        )

    @classmethod
    def of(cls, blocks: list[Block], reference: Tensor) -> _BlockLayout:
        spans = tuple((block.offset, block.size) for block in blocks)
        return cls.build(spans, reference.dtype, reference.device)

    def identity(self, rank: int) -> Tensor:
        return torch.eye(rank, dtype=self.sizes.dtype, device=self.sizes.device)


def _low_rank(loc: Tensor, factor: Tensor, scale: Tensor) -> TorchLowRank:
    return TorchLowRank(loc, factor, scale.square(), validate_args=False)
