"""Building a Laplace posterior over a model's point masses.

:func:`laplace_posterior` runs the model once with its linear layers watched, reads
the run's sites, groups the chosen latent variables into blocks of the requested
structure, and fills each block with the Gauss-Newton curvature of the model's own
likelihoods (:mod:`borch.infer.laplace.likelihood`): for every observed site and
every column of its Fisher factor, one backward pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from borch.infer.hmc.model_conversion import point_mass_of
from borch.infer.laplace.approximation import hessian
from borch.infer.laplace.curvature import (
    LinearRecord,
    check_rows,
    jacobian_pieces,
    watching,
)
from borch.infer.laplace.likelihood import fisher, fisher_root, output_parameters
from borch.infer.laplace.posterior import LaplacePosterior
from borch.infer.laplace.structures import (
    FULL_MEMORY_LIMIT,
    DenseBlock,
    DiagonalLinearBlock,
    KroneckerLinearBlock,
    LowRankBlock,
    dense_bytes,
)
from borch.sites import Site, sites

STRUCTURES = ("full", "diag", "kfac", "lowrank")

#: ``rank`` of ``structure="lowrank"`` when none is given (at most the size).
DEFAULT_RANK = 10


class Member(NamedTuple):
    """Variables that form one unit of curvature: a linear layer's weight and bias
    (``record`` its watched run), or one other variable (``record`` ``None``)."""

    names: list[str]
    record: LinearRecord | None


def laplace_posterior(
    model: nn.Module,
    loss_closure: Callable[[], Any],
    structure: str = "full",
    subset: str | Sequence[str] | None = None,
    prior_precision: float | str | Sequence[float] | None = None,
    min_eigenvalue: float | None = None,
    validation: tuple | None = None,
    rank: int | None = None,
) -> LaplacePosterior:
    """A Laplace approximation of a model fitted by MAP.

    The precision is the generalised Gauss-Newton matrix of the model's likelihoods,
    ``sum J^T F J`` over the observed sites (``F`` the Fisher information of each
    site's distribution with respect to its parameters, ``J`` their Jacobian), plus
    the prior's. It equals the Hessian of the negative log joint for Gaussian
    likelihoods linear in the latents, and is positive semi-definite for every
    likelihood.

    Args:
        model: a :class:`borch.Module` whose latent variables have
            :class:`borch.posterior.PointMass` approximations, at the mode (e.g. after
            LBFGS or Adam on ``vi_loss``, or ``borch.nn.borchify_network(net,
            posterior_creator=borch.posterior.PointMass)`` of a trained network).
        loss_closure: runs the model on the training data (returning the loss is
            fine; only the run's sites are used).
        structure: ``"full"`` (the dense matrix; refused at once when it would not
            fit), ``"diag"`` (its diagonal) or ``"kfac"`` (Kronecker factors per
            linear layer), or ``"lowrank"`` (the top ``rank`` eigenpairs of the
            full matrix over all chosen variables plus the diagonal prior, found by
            randomized subspace iteration from Gauss-Newton-vector products: memory
            ``O(P rank)``; see :class:`~borch.infer.laplace.structures.LowRankBlock`).
            With ``"diag"`` and ``"kfac"`` latent variables outside
            ``torch.nn.Linear`` layers get a dense block each.
        subset: the latent variables to approximate (the others stay at the mode):
            all by default, ``"last_layer"`` for the last linear layer the model ran,
            or names (a module's path stands for all its variables).
        prior_precision: ``None`` for the model's own priors (their curvature at the
            mode); a number, or one per block, for a zero-mean Gaussian prior; or
            ``"marginal_likelihood"`` / ``"validation"`` to tune one number by the
            log evidence or by the linearised predictive's log density of
            ``validation`` (by Monte Carlo; the widest prior within one standard
            error of the best, see
            :meth:`~borch.infer.laplace.posterior.LaplacePosterior.optimize_prior_precision`
            for the other rule and link).
        min_eigenvalue: see :class:`Laplace` (``structure="full"``'s ``laplace``).
        validation: ``(args, targets)`` for ``prior_precision="validation"``: the
            model's inputs (a tuple) and ``{observed site: values}``.
        rank: for ``structure="lowrank"``, the eigenpairs kept: an integer from 1
            to the number of parameters (default ``min(10, P)``).

    Example:
        >>> import torch
        >>> import borch
        >>> from borch import distributions as dist
        >>> torch.manual_seed(0)
        <torch._C.Generator object at ...>
        >>> class Mean(borch.Module):
        ...     def forward(self, y):
        ...         self.mu = dist.Normal(0.0, 10.0)
        ...         self.y = dist.Normal(self.mu.expand(y.shape), 1.0)
        >>> y = torch.tensor([1.0, 2.0, 3.0, 2.0])
        >>> model = Mean(posterior=borch.posterior.PointMass())
        >>> model.observe(y=y)
        >>> def loss_closure():
        ...     borch.sample(model)
        ...     model(y)
        ...     return borch.infer.vi_loss(**borch.pq_to_infer(model))
        >>> _ = loss_closure()
        >>> optimizer = torch.optim.LBFGS(model.parameters())
        >>> def step():
        ...     optimizer.zero_grad()
        ...     loss = loss_closure()
        ...     loss.backward()
        ...     return loss
        >>> _ = optimizer.step(step)
        >>> approx = borch.infer.laplace_posterior(model, loss_closure)
        >>> approx.laplace.covariance  # exact: 1 / (4 + 1/100)
        tensor([[0.2494]])
        >>> with approx.drawn():
        ...     prediction = model(y)  # uses one draw of mu
        >>> approx.samples(1000)["mu"].shape
        torch.Size([1000])
    """
    if structure not in STRUCTURES:
        raise ValueError(f"structure must be one of {STRUCTURES}, got {structure!r}")
    _check_rank(rank, structure)
    with watching(model) as records:
        with torch.enable_grad():
            loss_closure()
        run_sites = sites(model)
        order = sorted(
            (r for r in records.values() if r.calls), key=lambda r: r.first_call
        )
    latents = {s.name: s for s in run_sites if not s.observed}
    observed = [s for s in run_sites if s.observed]
    if not latents:
        raise ValueError(
            "the model used no latent random variables in loss_closure(): there is "
            "nothing to approximate"
        )
    for site in latents.values():
        point_mass_of(site)
    if not observed:
        raise ValueError(
            "the model observed nothing in loss_closure(): the Gauss-Newton matrix "
            "needs the likelihood of observed variables"
        )
    chosen = _chosen(latents, order, subset)
    members = _members(chosen, latents, order, structure)
    blocks = _blocks(members, latents, structure, rank)
    _fill(blocks, observed)
    transforms = {name: point_mass_of(latents[name]).transform for name in chosen}
    log_likelihood = sum(_site_log_likelihood(site) for site in observed)
    posterior = LaplacePosterior(
        model,
        blocks,
        transforms,
        structure,
        float(log_likelihood),
        lambda: _model_priors(blocks, latents),
        min_eigenvalue,
    )
    if isinstance(prior_precision, str):
        if prior_precision == "marginal_likelihood":
            posterior.optimize_prior_precision("marginal_likelihood")
        elif prior_precision == "validation":
            if validation is None:
                raise ValueError(
                    "prior_precision='validation' needs validation=(args, targets)"
                )
            posterior.optimize_prior_precision("validation", validation=validation)
        else:
            raise ValueError(
                "prior_precision must be None, a number, a sequence of numbers, "
                f"'marginal_likelihood' or 'validation', got {prior_precision!r}"
            )
    elif prior_precision is not None:
        posterior.prior_precision = prior_precision
    return posterior


def _chosen(latents: dict[str, Site], order: list, subset: Any) -> list[str]:
    names = list(latents)
    if subset is None:
        return names
    if subset == "last_layer":
        if not order:
            raise ValueError("subset='last_layer': the model ran no linear layer")
        path = order[-1].path
        chosen = [n for n in names if n.rpartition(".")[0] == path]
        if not chosen:
            raise ValueError(
                f"subset='last_layer': the last linear layer '{path}' has no latent "
                "variables"
            )
        return chosen
    if isinstance(subset, str) or not all(isinstance(n, str) for n in subset):
        raise TypeError(
            f"subset must be None, 'last_layer' or a sequence of names, got {subset!r}"
        )
    chosen = []
    for wanted in subset:
        matches = [n for n in names if n == wanted or n.startswith(wanted + ".")]
        if not matches:
            raise ValueError(
                f"subset: '{wanted}' is no latent variable nor module of the model; "
                f"the latent variables are {names}"
            )
        chosen += [n for n in matches if n not in chosen]
    return [n for n in names if n in chosen]


def _is_identity(site: Site) -> bool:
    transform = point_mass_of(site).transform
    return type(transform).__name__ == "ComposeTransform" and not transform.parts


def _members(chosen: list[str], latents: dict, order: list, structure: str) -> list:
    """Linear layers whose weight (and bias, if any) are chosen and real-valued,
    then every other chosen variable on its own."""
    members = []
    taken = set()
    for record in order:
        names = [f"{record.path}.weight"]
        if record.module.bias is not None:
            names.append(f"{record.path}.bias")
        if all(n in chosen and _is_identity(latents[n]) for n in names):
            members.append(Member(names, record))
            taken.update(names)
    members += [Member([n], None) for n in chosen if n not in taken]
    return members


def _refuse_dense(size: int, what: str) -> None:
    needed = dense_bytes(size)
    if needed > FULL_MEMORY_LIMIT:
        raise MemoryError(
            f"structure='full' over {what} of {size:,} parameters needs a {size:,} x "
            f"{size:,} float64 matrix and its eigendecomposition, about "
            f"{needed / 2**30:,.1f} GiB (limit {FULL_MEMORY_LIMIT / 2**30:.0f} GiB): "
            "use structure='diag', 'kfac' or 'lowrank', or subset='last_layer'"
        )


def _check_rank(rank: Any, structure: str) -> None:
    if rank is None:
        return
    if structure != "lowrank":
        raise ValueError(
            f"rank={rank!r} applies to structure='lowrank' only, got {structure!r}"
        )
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"rank must be a positive integer, got {rank!r}")


def _blocks(members: list, latents: dict, structure: str, rank: int | None) -> list:
    def params_of(names):
        return [latents[n].approximation.unconstrained_value for n in names]

    if structure == "lowrank":
        names = [n for m in members for n in m.names]
        size = sum(latents[n].value.numel() for n in names)
        if rank is not None and rank > size:
            raise ValueError(
                f"rank={rank} exceeds the {size} parameters of the chosen variables"
            )
        chosen_rank = min(DEFAULT_RANK, size) if rank is None else rank
        return [LowRankBlock(names, params_of(names), members, chosen_rank)]

    if structure == "full":
        names = [n for m in members for n in m.names]
        _refuse_dense(
            sum(latents[n].value.numel() for n in names), "the chosen variables"
        )
        return [DenseBlock(names, params_of(names), members)]
    blocks = []
    kind = DiagonalLinearBlock if structure == "diag" else KroneckerLinearBlock
    for member in members:
        if member.record is None:
            _refuse_dense(
                latents[member.names[0]].value.numel(), f"'{member.names[0]}'"
            )
            block = DenseBlock(member.names, params_of(member.names), [member])
        else:
            block = kind(member.names, params_of(member.names))
            block.record = member.record
        blocks.append(block)
    return blocks


def _fill(blocks: list, observed: list[Site]) -> None:
    records = []
    for block in blocks:
        for record in _records_of(block):
            if record not in records:
                records.append(record)
    others = [
        p
        for block in blocks
        if isinstance(block, DenseBlock)
        for p in block.other_params()
    ]
    for block in blocks:
        if isinstance(block, KroneckerLinearBlock):
            block.set_inputs(block.record.inputs)
    for site in observed:
        parameters = output_parameters(site)
        if not parameters.varying:
            continue
        check_rows(records, parameters)
        root = fisher_root(fisher(parameters, site.value))
        rows_like = parameters.flat()
        for column in range(root.shape[-1]):
            pieces, rows = jacobian_pieces(
                rows_like, root[..., column], records, others
            )
            by_path = {r.path: piece for r, piece in zip(records, pieces)}
            other_rows = dict(zip(map(id, others), rows))
            for block in blocks:
                if isinstance(block, DenseBlock):
                    block.add_pieces(by_path, other_rows, parameters.count, rows_like)
                else:
                    piece = by_path[block.record.path]
                    if piece is not None:
                        block.add(piece)
    for block in blocks:
        if isinstance(block, DenseBlock):
            block.finish()


def _records_of(block) -> list:
    if isinstance(block, DenseBlock):
        return [m.record for m in block.members if m.record is not None]
    return [block.record]


def _site_log_likelihood(site: Site) -> float:
    parameters = output_parameters(site)
    with torch.no_grad():
        log_density = site.prior.distribution.log_prob(site.value).reshape(-1)
        return float((log_density * parameters.weight).sum())


def _model_priors(blocks: list, latents: dict) -> list:
    """Per block: the curvature of the model's own prior at the mode (a vector, or a
    matrix for a dense block; a number for KFAC) and its log density there."""
    priors = []
    for block in blocks:
        sites_ = [latents[n] for n in block.names]

        def negative_log_prior(sites_=sites_, params=block.params):
            total = 0.0
            for site, u in zip(sites_, params):
                point_mass = point_mass_of(site)
                value = point_mass.transform(u)
                jacobian = point_mass.transform.log_abs_det_jacobian(u, value)
                total = total - site.prior.distribution.log_prob(value).sum()
                total = total - jacobian.sum()
            return total

        with torch.enable_grad():
            if isinstance(block, DenseBlock) and not isinstance(block, LowRankBlock):
                curvature = hessian(negative_log_prior, block.params).double()
            else:
                curvature = _separable_diagonal(negative_log_prior, block.params)
                if isinstance(block, KroneckerLinearBlock):
                    curvature = _one_value(curvature, block.names)
            log_density = -float(negative_log_prior().detach())
        priors.append((curvature, log_density))
    return priors


def _separable_diagonal(function: Callable[[], Tensor], params: list[Tensor]) -> Tensor:
    """The Hessian's diagonal of a sum of one-element terms (independent priors):
    the gradient of the summed gradient."""
    grads = torch.autograd.grad(function(), params, create_graph=True)
    total = sum(g.sum() for g in grads)
    if not total.requires_grad:
        return torch.zeros(sum(p.numel() for p in params), dtype=torch.float64)
    second = torch.autograd.grad(total, params, allow_unused=True)
    return torch.cat(
        [
            torch.zeros(p.numel()) if s is None else s.reshape(-1)
            for s, p in zip(second, params)
        ]
    ).double()


def _one_value(curvature: Tensor, names: list[str]) -> Tensor:
    if not bool(torch.allclose(curvature, curvature[0].expand_as(curvature))):
        raise ValueError(
            f"structure='kfac' needs one prior precision per layer, but the model's "
            f"priors of {names} have precisions from {curvature.min().item():.3g} to "
            f"{curvature.max().item():.3g}; pass prior_precision="
        )
    return curvature[0]


__all__ = ["laplace_posterior"]
