"""``NormalizingFlow``: all latent variables as one normalizing flow, through zuko
(the optional extra ``borch[flows]``)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from borch.posterior.joint import Block, JointPosterior, JointRun, spread_evenly

__all__ = ["NormalizingFlow"]


class NormalizingFlow(JointPosterior):
    """Approximate all latent variables together by a normalizing flow in
    unconstrained space.

    The joint is a chain of conditional flows (see :mod:`borch.posterior.joint`):
    variable ``k`` gets its own zuko flow over its unconstrained values whose
    context is the unconstrained values of the variables before it, so
    ``q(u) = prod_k q(u_k | u_<k)`` is itself a (block-autoregressive) flow and a
    variable that appears later extends it without touching what was learned. A
    variable's log-density term is its block's conditional, spread evenly over its
    elements. Constrained variables go through ``biject_to(support)``, with the
    log-det-Jacobian.

    Initialisation: each block is ``start + init_scale * f`` with ``f`` the flow's
    draw, ``start`` the prior's mean (median where the mean is infinite) in
    unconstrained space; the output layers of the flow's networks start at zero, so
    ``f`` starts as a standard Normal and the joint at the prior's centre.

    Args:
        flow: a zuko flow class (or any callable ``flow(features=, context=,
            **options)`` returning a zuko ``LazyDistribution``); default
            ``zuko.flows.NSF`` (neural spline flow).
        init_scale: the scale of every unconstrained coordinate at the start.
        **options: passed to ``flow`` (``transforms``, ``hidden_features``, ...).

    Example:
        >>> import torch
        >>> import borch
        >>> from borch import distributions as dist
        >>> model = borch.Module(posterior=NormalizingFlow(transforms=2))
        >>> model.x = dist.Normal(0.0, 1.0)
        >>> model.y = dist.Normal(model.x**2, 0.5)
        >>> type(model.posterior.y.flow).__name__
        'NSF'
        >>> loss = borch.infer.vi_loss(**borch.pq_to_infer(model))
        >>> loss.backward()
    """

    def __init__(
        self,
        flow: Callable[..., nn.Module] | None = None,
        init_scale: float = 1.0,
        **options: Any,
    ) -> None:
        super().__init__(init_scale=init_scale)
        if flow is None:
            flow = _zuko().flows.NSF
        if not callable(flow):
            raise TypeError(f"flow must be a zuko flow class, got {flow!r}")
        self._flow = flow
        self._options = options

    def block_parameters(self, position: int, block: Block, start: Tensor) -> dict:
        flow = self._flow(features=block.size, context=block.offset, **self._options)
        if not isinstance(flow, nn.Module):
            raise TypeError(
                f"flow(features={block.size}, context={block.offset}) must return "
                f"a torch module, got {type(flow).__name__}"
            )
        _start_as_identity(flow)
        return {"flow": flow.to(start), "start": nn.Parameter(start.clone())}

    def assemble(self, slices) -> tuple:
        first = slices[0].arguments["start"]
        flows = [rv.arguments["flow"] for rv in slices]
        return (first, flows)

    def draw_block(self, run: JointRun, position: int) -> Tensor:
        rv = run.slices[position]
        arguments = rv.arguments
        distribution = _conditional(arguments["flow"], run.prefix(position))
        shape = () if rv.block.offset else run.leading()
        draw = distribution.rsample(shape)
        return arguments["start"] + self._init_scale * draw

    def block_parts(self, run: JointRun, position: int) -> tuple:
        rv = run.slices[position]
        flow = rv.arguments["flow"]
        names = tuple(name for name, _ in flow.named_parameters())
        return (flow, names, tuple(flow.parameters()), rv.arguments["start"])

    def block_log_density(self, parts, prefix, value):
        flow, names, tensors, start = parts
        standard = (value - start) / self._init_scale
        # The flow's parameters as given (detached by the path-derivative loss).
        conditional = functional_call(flow, dict(zip(names, tensors)), _context(prefix))
        log_density = conditional.log_prob(standard)
        log_density = log_density - value.shape[-1] * torch.log(
            torch.as_tensor(self._init_scale, dtype=value.dtype)
        )
        return spread_evenly(log_density, value.shape[-1])

    def block_entropy(self, parts):
        raise NotImplementedError(
            "a normalizing flow has no closed-form entropy; use a divergence that "
            "estimates it from draws (borch.infer.elbo_loss)"
        )

    def extra_repr(self) -> str:
        name = getattr(self._flow, "__name__", repr(self._flow))
        options = "".join(f", {key}={value!r}" for key, value in self._options.items())
        return f"flow={name}, init_scale={self._init_scale}{options}"


def _start_as_identity(flow: nn.Module) -> None:
    """Zero the output layer of every transform's hyper-network (zuko's ``hyper``),
    so the flow starts as its standard Normal base whatever its context: a randomly
    initialised one starts far from the prior's centre and learns slowly from there."""
    with torch.no_grad():
        for module in flow.modules():
            hyper = getattr(module, "hyper", None)
            if not isinstance(hyper, nn.Sequential):
                continue
            linear = [layer for layer in hyper if isinstance(layer, nn.Linear)]
            if linear:
                linear[-1].weight.zero_()
                if linear[-1].bias is not None:
                    linear[-1].bias.zero_()


def _context(prefix: Tensor) -> tuple:
    return (prefix,) if prefix.shape[-1] else ()


def _conditional(flow: nn.Module, prefix: Tensor):
    return flow(*_context(prefix))


def _zuko():
    try:
        return importlib.import_module("zuko")
    except ImportError:
        raise ImportError(
            "posterior.NormalizingFlow needs zuko: pip install 'borch[flows]'"
        ) from None
