"""Gaussian joint families: ``MultivariateNormal`` (full rank) and
``LowRankMultivariateNormal`` over all latent variables, in unconstrained space."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.distributions import LowRankMultivariateNormal as TorchLowRank
from torch.distributions import MultivariateNormal as TorchMultivariateNormal

from borch.posterior.joint import Block, JointPosterior, JointRun, spread_evenly
from borch.validation import check_count

__all__ = ["LowRankMultivariateNormal", "MultivariateNormal"]

_HALF_LOG_TWO_PI = 0.5 * math.log(2 * math.pi)


class MultivariateNormal(JointPosterior):
    """Approximate all latent variables together by one full-rank Gaussian in
    unconstrained space.

    The joint ``u = loc + L @ noise`` has a lower-triangular ``L`` with a positive
    diagonal, built from blocks: variable ``k`` owns its rows of ``L`` (``cross``,
    the coefficients on the noise of the variables before it, and ``tril``/
    ``log_diag``, its own triangle) and its ``loc``. Constrained variables are
    pushed through ``biject_to(support)``; the log-density includes the
    log-det-Jacobian. Each variable's log-density term is its exact conditional
    given the variables before it (see :mod:`borch.posterior.joint`).

    Initialisation: ``loc`` at the prior's mean (its median where the mean is
    infinite, a HalfCauchy's for instance) mapped to unconstrained space, no
    correlation, and every coordinate's scale ``init_scale``. A narrow start keeps
    the first gradients from being dominated by noise; starting at the prior's
    centre rather than at a draw makes runs reproducible and avoids the far tails
    of wide priors.

    Args:
        init_scale: the initial scale of every unconstrained coordinate.

    Example:
        >>> import torch
        >>> import borch
        >>> from borch import distributions as dist
        >>> model = borch.Module(posterior=MultivariateNormal())
        >>> model.w = dist.Normal(torch.zeros(2), 1.0)
        >>> model.sigma = dist.HalfCauchy(2.5)
        >>> model.posterior.dimension()
        3
        >>> sorted(name for name, _ in model.named_parameters())
        ['posterior.sigma.cross', 'posterior.sigma.loc', 'posterior.sigma.log_diag', 'posterior.w.loc', 'posterior.w.log_diag', 'posterior.w.tril']
        >>> joint = model.posterior.unconstrained_distribution()
        >>> joint.loc.detach()  # w at its prior mean, sigma at log(2.5)
        tensor([0.0000, 0.0000, 0.9163])
        >>> bool(model.sigma > 0)
        True
    """

    def block_parameters(self, position: int, block: Block, start: Tensor) -> dict:
        size = block.size
        parameters = {
            "loc": nn.Parameter(start.clone()),
            "log_diag": nn.Parameter(
                start.new_full((size,), math.log(self._init_scale))
            ),
        }
        if size > 1:
            parameters["tril"] = nn.Parameter(start.new_zeros((size, size)))
        if block.offset:
            parameters["cross"] = nn.Parameter(start.new_zeros((size, block.offset)))
        return parameters

    def assemble(self, slices) -> tuple[Tensor, Tensor]:
        dimension = sum(rv.block.size for rv in slices)
        rows = []
        for rv in slices:
            block = rv.block
            arguments = rv.arguments
            triangle = torch.diag(arguments["log_diag"].exp())
            if block.size > 1:
                triangle = triangle + torch.tril(arguments["tril"], -1)
            parts = [triangle]
            if block.offset:
                parts.insert(0, arguments["cross"])
            remaining = dimension - block.offset - block.size
            if remaining:
                parts.append(triangle.new_zeros((block.size, remaining)))
            rows.append(torch.cat(parts, dim=1) if len(parts) > 1 else triangle)
        loc = torch.cat([rv.arguments["loc"] for rv in slices])
        return loc, torch.cat(rows, dim=0)

    def draw_block(self, run: JointRun, position: int) -> Tensor:
        loc, scale_tril = run.parts
        block = run.slices[position].block
        end = block.offset + block.size
        noise = torch.cat([run.standard_noise(j) for j in range(position + 1)], -1)
        rows = scale_tril[block.offset : end, :end]
        return loc[block.offset : end] + noise @ rows.T

    def block_parts(self, run, position):
        loc, scale_tril = run.parts
        block = run.slices[position].block
        end = block.offset + block.size
        return loc[:end], scale_tril[:end, :end], block.offset

    def block_log_density(self, parts, prefix, value):
        loc, scale_tril, offset = parts
        centred = torch.cat([prefix, value], dim=-1) - loc
        # Recomputing the noise from the values (not reusing the draw's) keeps
        # log q a function of the values, as the path-derivative estimator needs.
        noise = torch.linalg.solve_triangular(
            scale_tril, centred.unsqueeze(-1), upper=False
        ).squeeze(-1)[..., offset:]
        log_diag = torch.diagonal(scale_tril)[offset:].log()
        return -0.5 * noise.square() - _HALF_LOG_TWO_PI - log_diag

    def block_entropy(self, parts):
        _, scale_tril, offset = parts
        return 0.5 + _HALF_LOG_TWO_PI + torch.diagonal(scale_tril)[offset:].log()

    def unconstrained_distribution(self) -> TorchMultivariateNormal:
        """The joint over all unconstrained coordinates (blocks in
        :meth:`joint_names` order), for inspection."""
        loc, scale_tril = self.assemble(self.blocks())
        return TorchMultivariateNormal(loc, scale_tril=scale_tril, validate_args=False)


class LowRankMultivariateNormal(JointPosterior):
    """Approximate all latent variables together by a Gaussian whose covariance is
    ``factor @ factor.T + diag(scale**2)``, ``factor`` of ``rank`` columns.

    ``u = loc + factor @ z + scale * noise`` with ``z`` of ``rank`` standard Normal
    numbers shared by all variables: each variable owns its rows of ``factor``, its
    ``loc`` and ``log_scale``. It costs ``O(dimension * rank)`` per step where the
    full-rank family costs ``O(dimension**2)``. A variable's log-density term is
    its block's conditional given the blocks before it, spread evenly over its
    elements (their sum is exact; see :mod:`borch.posterior.joint`).

    Initialisation: ``loc`` as for :class:`MultivariateNormal`, ``scale`` at
    ``init_scale`` and ``factor`` small and random (seeded per block, the user's
    random stream untouched) so the correlations can grow from the first step: a
    factor of zeros is a stationary point of the ELBO.

    Args:
        rank: the number of columns of ``factor``.
        init_scale: the initial scale of every unconstrained coordinate.

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

    def __init__(self, rank: int = 2, init_scale: float = 0.1) -> None:
        super().__init__(init_scale=init_scale)
        self._rank = check_count("rank", rank, minimum=1)

    def block_parameters(self, position: int, block: Block, start: Tensor) -> dict:
        size = block.size
        generator = torch.Generator().manual_seed(position)
        factor = torch.randn(size, self._rank, generator=generator).to(start)
        return {
            "loc": nn.Parameter(start.clone()),
            "factor": nn.Parameter(factor * (0.1 * self._init_scale)),
            "log_scale": nn.Parameter(
                start.new_full((size,), math.log(self._init_scale))
            ),
        }

    def assemble(self, slices) -> tuple[Tensor, Tensor, Tensor]:
        loc = torch.cat([rv.arguments["loc"] for rv in slices])
        factor = torch.cat([rv.arguments["factor"] for rv in slices])
        scale = torch.cat([rv.arguments["log_scale"] for rv in slices]).exp()
        return loc, factor, scale

    def draw_block(self, run: JointRun, position: int) -> Tensor:
        loc, factor, scale = run.parts
        block = run.slices[position].block
        rows = slice(block.offset, block.offset + block.size)
        shared = run.shared.get("z")
        if shared is None:
            shared = torch.randn(
                (*run.leading(), self._rank), dtype=loc.dtype, device=loc.device
            )
            run.shared["z"] = shared
        noise = run.standard_noise(position)
        return loc[rows] + shared @ factor[rows].T + scale[rows] * noise

    def block_parts(self, run, position):
        block = run.slices[position].block
        end = block.offset + block.size
        loc, factor, scale = run.parts
        return loc[:end], factor[:end], scale[:end], block.offset

    def block_log_density(self, parts, prefix, value):
        loc, factor, scale, offset = parts
        joint = _low_rank(loc, factor, scale).log_prob(torch.cat([prefix, value], -1))
        if offset:
            joint = joint - _low_rank(
                loc[:offset], factor[:offset], scale[:offset]
            ).log_prob(prefix)
        return spread_evenly(joint, value.shape[-1])

    def block_entropy(self, parts):
        loc, factor, scale, offset = parts
        entropy = _low_rank(loc, factor, scale).entropy()
        if offset:
            entropy = (
                entropy
                - _low_rank(loc[:offset], factor[:offset], scale[:offset]).entropy()
            )
        return spread_evenly(entropy, loc.shape[0] - offset)

    def unconstrained_distribution(self) -> TorchLowRank:
        """The joint over all unconstrained coordinates (blocks in
        :meth:`joint_names` order), for inspection."""
        return _low_rank(*self.assemble(self.blocks()))

    def extra_repr(self) -> str:
        return f"rank={self._rank}, init_scale={self._init_scale}"


def _low_rank(loc: Tensor, factor: Tensor, scale: Tensor) -> TorchLowRank:
    return TorchLowRank(loc, factor, scale.square(), validate_args=False)
