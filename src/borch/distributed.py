r"""Data-parallel training of borch models with ``torch.distributed``.

A borch model trains under :class:`torch.nn.parallel.DistributedDataParallel` (DDP)
like any module, launched by ``torchrun`` with the ``gloo`` (CPU) or ``nccl`` (GPU)
backend. Three things need care, and this module handles them:

**The loss on a shard.** Each rank sees a shard of the data; DDP averages the
gradients of the per-rank losses. With :math:`N` data points in all, :math:`W` ranks,
rank :math:`r` holding a batch :math:`b_r` of :math:`B` points and the draw :math:`z`
of the latent variables, the per-rank loss

.. math::

    L_r = \frac{N}{B}\,\mathrm{nll}(b_r; z) + \big(\log q(z) - \log p(z)\big)

averages to :math:`\frac{1}{W}\sum_r \nabla L_r = \nabla\big[\frac{N}{WB}\sum_r
\mathrm{nll}(b_r; z) + \log q(z) - \log p(z)\big]`, the gradient of the
single-process negative ELBO on the union of the batches, scaled up to the whole data
set. When the shards cover the data once (:math:`N = WB`) it is exactly the
single-process gradient on the whole data: each rank weighs its likelihood by
:math:`W` and counts the divergence term once. :func:`sharded_vi_loss` computes
:math:`L_r`; :func:`kl_scaling` gives the equivalent ``kl_scaling`` for
:func:`borch.infer.vi_loss` when a per-data-point loss is preferred (it divides
:math:`L_r` by :math:`N`, which only rescales the gradient).

**The draws.** The equality above needs the same :math:`z` on every rank: seed every
rank alike (:func:`seed` with ``same_draws=True``). Each step then has exactly the
single-process estimator, whatever the number of ranks. With independent draws per
rank (``same_draws=False``) every rank's :math:`L_r` is still an unbiased estimate of
the whole objective and the average has lower variance (the :math:`W` draws act as
:math:`W` particles), but the result depends on the number of ranks and cannot be
compared step by step with a single-process run. Data are sharded by
:class:`torch.utils.data.distributed.DistributedSampler` (its own seed, the same on
every rank, plus ``set_epoch`` per epoch), which does not touch the global generator.

**Observed values are buffers.** DDP broadcasts a module's buffers from rank 0 when it
is built and, by default, at the start of every forward pass (as long as the module
had any buffer when it was wrapped). Observed values live in ``module.observed`` as
buffers, and the broadcast writes rank 0's values *in place* into every other rank's
data tensor: each rank then silently trains on rank 0's shard. :func:`data_parallel`
wraps a model so that observed values are never broadcast (other buffers still are),
and refuses models whose approximating variables are not created yet: DDP fixes its
list of parameters when it is built, so parameters created later are never averaged.

**borch.sample and DDP's hooks.** Call ``borch.sample(model)`` once per step before
the wrapped forward (``borch.sample`` and :func:`borch.pq_to_infer` see through the
wrapper). Draws are lazy: they happen when the wrapped forward first reads each
variable, so the autograd graph of the draws links the posterior parameters to the
loss, and DDP's hooks, which fire as each parameter's gradient is accumulated in
``backward``, average them. One wrapped forward per ``backward``, as DDP requires
(``particle_vi_loss`` through DDP needs ``vectorize=True``). The loss is computed
after the forward from :func:`borch.pq_to_infer`; that is fine with the default
``find_unused_parameters=False``. With ``find_unused_parameters=True`` DDP looks for
parameters only in the forward's output: a variable read only by the loss would be
taken for unused.

**Faults.** :class:`Checkpointer` (from :mod:`borch.checkpointing`) saves a run every
so many steps or epochs and resumes it bit for bit after ``torchrun --max-restarts``
restarts the ranks; join the group with :func:`init_process_group`, which gives each
restart attempt keys of its own in torchrun's store.

Example (one process; under ``torchrun`` every rank runs the same code):
    >>> import torch
    >>> import borch
    >>> from borch import distributions as dist
    >>> from borch.distributed import sharded_vi_loss
    >>> model = borch.Module(posterior=borch.posterior.Normal())
    >>> x = torch.randn(6)
    >>> borch.sample(model)
    >>> model.observe(y=x[:3])  # this rank's shard: 3 of 6 data points
    >>> model.mu = dist.Normal(0.0, 1.0)
    >>> model.y = dist.Normal(model.mu, 1.0)
    >>> loss = sharded_vi_loss(**borch.pq_to_infer(model), dataset_size=6, batch_size=3)
    >>> full = borch.infer.vi_loss(**borch.pq_to_infer(model), kl_scaling=0.5) * 2
    >>> bool(torch.isclose(loss, full))
    True
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from borch.checkpointing import Checkpointer, CheckpointError
from borch.infer.variational.losses import DivergenceFn, elbo_loss, vi_loss
from borch.module import Module, borch_modules
from borch.posterior import Posterior
from borch.traversal import named_random_variables
from borch.validation import check_count

try:
    import torch.distributed as _dist
    from torch.nn.parallel import DistributedDataParallel
except ImportError:  # pragma: no cover - torch built without distributed support
    _dist = None
    DistributedDataParallel = None


# ------------------------------------------------------------------ the loss
def kl_scaling(dataset_size: int, batch_size: int) -> float:
    """The ``kl_scaling`` of :func:`borch.infer.vi_loss` for a batch of a larger data set.

    ``vi_loss(..., kl_scaling=batch_size / dataset_size)`` on a batch is the
    single-process negative ELBO of the whole data set times ``batch_size /
    dataset_size``: an unbiased, per-batch-scaled estimate. Under DDP pass this rank's
    own batch size; the number of ranks does not enter, because DDP averages the
    ranks' gradients (see the module docstring).

    Args:
        dataset_size: number of data points in the whole data set (all ranks).
        batch_size: number of data points in this rank's batch.

    Returns:
        ``batch_size / dataset_size``.

    Example:
        >>> kl_scaling(dataset_size=1000, batch_size=50)
        0.05
    """
    dataset_size, batch_size = _check_sizes(dataset_size, batch_size)
    return batch_size / dataset_size


def sharded_vi_loss(
    p_dists: Sequence[Distribution],
    q_dists: Sequence[Distribution | None],
    values: Sequence[Tensor],
    observed: Sequence[bool],
    *,
    dataset_size: int,
    batch_size: int,
    div_fn: DivergenceFn = elbo_loss,
    scales: Sequence | None = None,
    masks: Sequence | None = None,
) -> Tensor:
    r"""The negative ELBO of the whole data set, estimated from this rank's batch.

    :math:`\frac{N}{B}\,\mathrm{nll}(\text{batch}) + \text{divergence}`, with
    :math:`N` = ``dataset_size`` and :math:`B` = ``batch_size``. Averaged over ranks
    by DDP, its gradient is that of the single-process loss on the union of the
    ranks' batches (exactly, when every rank draws the same latent values); see the
    module docstring for the derivation.

    Args:
        p_dists, q_dists, values, observed: as returned by :func:`borch.pq_to_infer`.
        dataset_size: number of data points in the whole data set.
        batch_size: number of data points in this rank's batch (the last batch of
            an epoch may be smaller: pass its size).
        div_fn: the divergence estimator, as for :func:`borch.infer.vi_loss`.
        scales, masks: as returned by :func:`borch.pq_to_infer` when handlers set
            them; they weight each variable's terms as in ``vi_loss``.

    Returns:
        A scalar loss to call ``backward`` on.
    """
    scaling = kl_scaling(dataset_size, batch_size)
    loss = vi_loss(
        p_dists,
        q_dists,
        values,
        observed,
        kl_scaling=scaling,
        div_fn=div_fn,
        scales=scales,
        masks=masks,
    )
    return loss * (dataset_size / batch_size)


def _check_sizes(dataset_size: Any, batch_size: Any) -> tuple[int, int]:
    dataset_size = check_count("dataset_size", dataset_size)
    batch_size = check_count("batch_size", batch_size)
    if batch_size > dataset_size:
        raise ValueError(
            f"batch_size={batch_size} exceeds dataset_size={dataset_size}: pass the "
            "number of data points in the whole data set as dataset_size"
        )
    return dataset_size, batch_size


# ------------------------------------------------------------ ranks and seeds
def rank() -> int:
    """This process's rank, or 0 outside an initialised process group."""
    if _dist is not None and _dist.is_available() and _dist.is_initialized():
        return _dist.get_rank()
    return 0


def init_process_group(backend: str | None = None, **kwargs: Any) -> None:
    """``torch.distributed.init_process_group`` that also works after a restart.

    ``torchrun --max-restarts`` keeps one key-value store for all attempts, and the
    keys a new process group writes there (each rank's address) are those the
    previous attempt wrote: a restarted rank can read a dead rank's address and fail
    to connect (measured with torch 2.13: 1 restart in 3 of a two-rank gloo job). On
    a rank started by torchrun (``TORCHELASTIC_RESTART_COUNT`` set) this joins the
    group through a store prefixed by the attempt, so every attempt has keys of its
    own; otherwise, or with an explicit ``init_method`` or ``store``, it is
    ``torch.distributed.init_process_group`` itself.

    Args:
        backend: ``"gloo"``, ``"nccl"``, ... (``None``: torch's default).
        **kwargs: passed to ``torch.distributed.init_process_group`` (``timeout``, ...).
    """
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    if attempt is None or "init_method" in kwargs or "store" in kwargs:
        _dist.init_process_group(backend, **kwargs)
        return
    options = {"timeout": kwargs["timeout"]} if "timeout" in kwargs else {}
    store, rank_, world = next(_dist.rendezvous("env://", **options))
    store = _dist.PrefixStore(f"borch/attempt{attempt}/", store)
    _dist.init_process_group(
        backend, store=store, rank=rank_, world_size=world, **kwargs
    )


def world_size() -> int:
    """The number of processes, or 1 outside an initialised process group."""
    if _dist is not None and _dist.is_available() and _dist.is_initialized():
        return _dist.get_world_size()
    return 1


def seed(base_seed: int, *, same_draws: bool = True) -> int:
    """Seed torch's global generator on this rank, for the same or independent draws.

    With ``same_draws=True`` every rank gets ``base_seed``: the approximating
    variables draw the same values on every rank, and each step computes exactly the
    single-process estimator (as long as every rank consumes the same random numbers;
    re-seed with ``base_seed + step`` each step if, say, dropout on batches of
    different sizes makes them drift). With ``same_draws=False`` each rank gets its
    own stream (``numpy.random.SeedSequence(base_seed).spawn``): the ranks' draws act
    as extra particles, lowering the variance of the averaged gradient, at the price
    of results that depend on the number of ranks.

    Args:
        base_seed: the seed of the run.
        same_draws: whether all ranks draw the same values.

    Returns:
        The seed given to ``torch.manual_seed`` on this rank.

    Example:
        >>> seed(7)  # outside a process group: rank 0
        7
    """
    if isinstance(base_seed, bool) or not isinstance(base_seed, (int, np.integer)):
        raise TypeError(f"base_seed must be an int, got {type(base_seed).__name__}")
    if same_draws:
        value = int(base_seed)
    else:
        streams = np.random.SeedSequence(int(base_seed)).spawn(world_size())
        value = int(streams[rank()].generate_state(1, dtype=np.uint64)[0] >> 1)
    torch.manual_seed(value)
    return value


# ------------------------------------------------------------------ wrapping
def observed_buffer_names(model: nn.Module) -> list[str]:
    """Qualified names of the observed values of every borch module in ``model``.

    Example:
        >>> import torch
        >>> import borch
        >>> model = borch.Module()
        >>> model.observe(y=torch.zeros(2))
        >>> observed_buffer_names(model)
        ['observed.y']
    """
    names = []
    for path, module in model.named_modules():
        if isinstance(module, Module):
            prefix = f"{path}.observed." if path else "observed."
            # Every name, also of one tensor observed under two names.
            buffers = module.observed.named_buffers(remove_duplicate=False)
            names += [prefix + name for name, _ in buffers]
    return names


def _approximation_count(model: nn.Module) -> int:
    return sum(len(m.posterior.names()) for m in borch_modules(model))


def _check_created(model: nn.Module) -> None:
    """Refuse a model whose approximating variables DDP could not see yet."""
    pending = [
        f"{path}.{name}" if path else name
        for path, module in model.named_modules()
        if isinstance(module, Posterior)
        for name in module.pending_state()
    ]
    if pending:
        raise RuntimeError(
            "data_parallel: the loaded state of "
            f"{', '.join(repr(name) for name in pending)} waits for approximating "
            "variables the model creates in its first forward pass, and DDP only "
            "averages the gradients of parameters that exist when it wraps the "
            "model. Run one forward pass first (e.g. on a batch, then "
            "borch.sample(model)), and wrap after it."
        )
    modules = list(borch_modules(model))
    if modules and not any(next(m.prior.children(), None) is not None for m in modules):
        raise RuntimeError(
            "data_parallel: the model has no random variables yet; models that assign "
            "them in forward create their approximating variables (and parameters) in "
            "the first forward pass, after DDP has fixed its list of parameters. Run "
            "one forward pass first (e.g. on a batch, then borch.sample(model)), and "
            "wrap after it."
        )


def _exclude_observed(wrapper: nn.Module, args: Any) -> None:
    """Forward pre-hook: keep observed values (possibly new ones) out of DDP's
    buffer broadcast."""
    names = observed_buffer_names(wrapper.module)
    ignored = wrapper.parameters_to_ignore
    if isinstance(ignored, set):
        ignored.update(names)
    else:  # a list in some torch releases
        ignored.extend(name for name in names if name not in ignored)


class _NoNewApproximations:
    """Forward hook: a forward pass must not create approximating variables DDP
    does not know about (those of ``model`` when the hook is made)."""

    def __init__(self, model: nn.Module) -> None:
        self.count = _approximation_count(model)
        self.known = frozenset(name for name, _ in named_random_variables(model))

    def __call__(self, wrapper: nn.Module, args: Any, output: Any) -> None:
        if _approximation_count(wrapper.module) == self.count:
            return
        new = [
            name
            for name, _ in named_random_variables(wrapper.module)
            if name not in self.known
        ]
        listed = ", ".join(repr(name) for name in new) or "(unnamed)"
        raise RuntimeError(
            f"data_parallel: this forward pass created approximating variables {listed} "
            "after the model was wrapped; DDP does not average the gradients of their "
            "parameters, so the ranks would drift apart. Run one forward pass before "
            "borch.distributed.data_parallel(model), so that every variable exists."
        )


def data_parallel(model: nn.Module, **kwargs: Any) -> nn.Module:
    """Wrap a borch model in ``DistributedDataParallel`` so that it trains correctly.

    Observed values are kept out of DDP's buffer broadcast, so every rank trains on
    its own data (plain DDP would overwrite them with rank 0's); other buffers are
    broadcast as usual. The model must have created its approximating variables
    (run one forward pass first if it assigns them in ``forward``): a model with
    none, or with loaded state still waiting for them, is refused, and a forward
    pass that creates new ones raises an error. ``borch.sample``,
    :func:`borch.pq_to_infer` and ``named_random_variables`` work on the wrapper.

    Args:
        model: the borch model (on this rank's device).
        **kwargs: passed to ``DistributedDataParallel`` (``device_ids=[local_rank]``
            on GPUs, ``find_unused_parameters``, ...).

    Returns:
        The ``DistributedDataParallel`` wrapper; ``wrapper.module`` is the model.

    Raises:
        RuntimeError: if no process group is initialised, or approximating variables
            are still to be created.
    """
    if _dist is None or not _dist.is_available() or not _dist.is_initialized():
        raise RuntimeError(
            "data_parallel needs an initialised process group: call "
            "torch.distributed.init_process_group (torchrun sets its environment) "
            "before wrapping the model"
        )
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    _check_created(model)
    ignored = set(getattr(model, "_ddp_params_and_buffers_to_ignore", ()))
    ignored.update(observed_buffer_names(model))
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
        model, sorted(ignored)
    )
    wrapper = DistributedDataParallel(model, **kwargs)
    wrapper.register_forward_pre_hook(_exclude_observed)
    wrapper.register_forward_hook(_NoNewApproximations(model))
    return wrapper


def check_draws_agree(model: nn.Module) -> None:
    """Raise if the current draws of the approximating variables differ across ranks.

    A debugging aid for runs that rely on the same draws on every rank (see
    :func:`seed`): call it after a forward pass. Variables not drawn yet are skipped.
    Every rank must call it (it is a collective operation).

    Raises:
        RuntimeError: naming the variables whose draws differ.
    """
    names, sums = [], []
    for name, rv in named_random_variables(model):
        value = rv.last_value  # reading .tensor would draw
        if value is None:
            continue
        value = value.detach().double()
        names.append(name)
        sums.append(torch.stack([value.sum(), value.square().sum()]))
    if world_size() == 1 or not sums:
        return
    local = torch.stack(sums)
    low, high = local.clone(), local.clone()
    _dist.all_reduce(low, op=_dist.ReduceOp.MIN)
    _dist.all_reduce(high, op=_dist.ReduceOp.MAX)
    differ = [name for name, row in zip(names, (low != high).any(dim=1)) if row]
    if differ:
        raise RuntimeError(
            f"rank {rank()}: the draws of {', '.join(repr(n) for n in differ)} differ "
            "across ranks; seed every rank alike (borch.distributed.seed) and keep "
            "their use of random numbers in step"
        )


__all__ = [
    "CheckpointError",
    "Checkpointer",
    "check_draws_agree",
    "data_parallel",
    "init_process_group",
    "kl_scaling",
    "observed_buffer_names",
    "rank",
    "seed",
    "sharded_vi_loss",
    "world_size",
]
