"""The Laplace start of a joint posterior: the mode of the model's posterior density
in unconstrained space and the Gaussian fitted to its curvature there.

A joint family that starts this way asks for it when its first blocks are created
(:func:`await_start`). When the outermost :class:`borch.Module` call that created
them returns (:func:`model_call` tells which call is outermost),
:func:`start_awaiting` hands the family that call, which it re-runs with every variable at a
given unconstrained point (:meth:`~borch.posterior.joint.JointPosterior.at_point`),
finds the mode by L-BFGS on the negative log joint density and takes its Hessian
there (:func:`laplace_fit`); the family then starts at that Gaussian.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from borch.posterior.joint import JointPosterior

__all__ = [
    "LaplaceFit",
    "await_start",
    "in_model_call",
    "laplace_fit",
    "model_call",
    "start_awaiting",
]

#: How many borch.Module calls are running (the outermost one sees 0).
_CALL_DEPTH: ContextVar[int] = ContextVar("borch_call_depth", default=0)

#: Joint posteriors whose first blocks were created and that wait for the end of
#: the model call that created them.
_AWAITING: weakref.WeakSet = weakref.WeakSet()

#: L-BFGS rounds (of up to ``_ITERATIONS`` iterations each) in the search for the mode.
_ROUNDS = 10
_ITERATIONS = 100
#: Rounds undone (and retried with half the step) before the search gives up.
_BACKOFFS = 8


class LaplaceFit(NamedTuple):
    """The mode (flat, unconstrained) and the Cholesky factor of the inverse
    Hessian of the negative log joint density there."""

    mode: Tensor
    scale_tril: Tensor


@contextlib.contextmanager
def model_call() -> Iterator[bool]:
    """Mark a :class:`borch.Module` call as running; yields whether it is the
    outermost one (the one whose end starts the awaiting posteriors)."""
    depth = _CALL_DEPTH.get()
    token = _CALL_DEPTH.set(depth + 1)
    try:
        yield depth == 0
    finally:
        _CALL_DEPTH.reset(token)


def in_model_call() -> bool:
    """Whether a :class:`borch.Module` call is running (a variable created now is
    created by a model run, whose end :func:`start_awaiting` will see).

    Example:
        >>> in_model_call()
        False
    """
    return _CALL_DEPTH.get() > 0


def await_start(posterior: JointPosterior) -> None:
    """Start ``posterior`` at the end of the model call now running."""
    _AWAITING.add(posterior)


def start_awaiting(model: nn.Module, run: Callable[[], Any]) -> tuple[bool, Any]:
    """Start every awaiting posterior of ``model``'s tree, ``run()`` re-running the
    model call that created it; whether any was started and, if so, the result of
    a fresh run from the started posteriors. A call that simulates its observed
    variables (a predictive run) has no data to fit: the start waits for the next."""
    if not _AWAITING:
        return False, None
    from borch.module import borch_modules
    from borch.traversal import sample

    if any(module.simulates_observed() for module in borch_modules(model)):
        return False, None
    mine: list = []
    for module in borch_modules(model):
        posterior = module.posterior
        if posterior in _AWAITING and all(p is not posterior for p in mine):
            mine.append(posterior)
    if not mine:
        return False, None
    for posterior in mine:
        _AWAITING.discard(posterior)
        posterior.start(model, run)
    sample(model)
    return True, run()


def laplace_fit(
    joint: JointPosterior, model: nn.Module, run: Callable[[], Any], start: Tensor
) -> LaplaceFit | None:
    """The Laplace approximation of the posterior of ``joint``'s variables, from an
    L-BFGS search started at the flat unconstrained ``start``; ``None`` when the
    model uses latent variables ``joint`` does not approximate (the density would
    not be a function of the point), when it observes nothing in this call (a
    layer whose likelihood is outside it: the fit would only find the prior), or
    when the search ends where the density is not finite or not curved upwards in
    every direction."""
    from borch.infer.hmc.model_conversion import prior_log_density
    from borch.infer.laplace.approximation import hessian
    from borch.posterior.joint import JointSlice
    from borch.random_variable import single_draws
    from borch.sites import sites
    from borch.traversal import sample

    slices = joint.blocks()
    mine = {id(rv) for rv in slices}
    point = start.detach().clone().requires_grad_(True)

    def potential() -> Tensor:
        with joint.at_point(point):
            sample(model)
            run()
            total = point.new_zeros(())
            used = sites(model)
            if not any(site.observed for site in used):
                raise _OtherLatent  # only priors: nothing to fit
            for site in used:
                if not site.observed and not (
                    isinstance(site.approximation, JointSlice)
                    and id(site.approximation) in mine
                ):
                    raise _OtherLatent
                total = total - prior_log_density(site)
        for rv in slices:
            block = rv.block
            flat = point[block.offset : block.offset + block.size]
            unconstrained = flat.reshape(block.shape)
            value = block.transform(unconstrained)
            jacobian = block.transform.log_abs_det_jacobian(unconstrained, value)
            total = total - jacobian.sum()
        return total

    try:
        with torch.enable_grad(), single_draws():
            found = _minimise(potential, point)
            if not found:
                return None
            precision = hessian(potential, [point]).to(torch.float64)
    except _OtherLatent:
        return None
    finally:
        sample(model)
    precision = 0.5 * (precision + precision.T)
    if not bool(torch.isfinite(precision).all()):
        return None
    covariance_factor, info = torch.linalg.cholesky_ex(precision)
    if info.item() != 0:
        return None
    identity = torch.eye(precision.shape[0], dtype=precision.dtype)
    # L L^T = H  =>  inverse(H) = inverse(L)^T inverse(L); its Cholesky factor is
    # that of the flipped product, taken directly for accuracy.
    covariance = torch.cholesky_solve(identity, covariance_factor)
    scale_tril, info = torch.linalg.cholesky_ex(0.5 * (covariance + covariance.T))
    if info.item() != 0:
        return None
    return LaplaceFit(point.detach().clone(), scale_tril.to(start.dtype))


class _OtherLatent(Exception):
    """The model uses a latent variable outside the joint, or observes nothing."""


def _minimise(potential: Callable[[], Tensor], point: Tensor) -> bool:
    """Move ``point`` to a minimum of ``potential`` by L-BFGS rounds. A round whose
    line search reaches a point where the model is not defined (an argument out of
    its support, say a scale that underflowed to zero) or not finite is undone and
    tried again with half the step, at most ``_BACKOFFS`` times in all."""

    def closure() -> Tensor:
        point.grad = None
        value = potential()
        value.backward()
        return value

    rate, backoffs, previous = 1.0, 0, None
    rounds = 0
    while rounds < _ROUNDS:
        optimizer = _lbfgs(point, rate)
        good = point.detach().clone()
        try:
            value = optimizer.step(closure)
            defined = bool(torch.isfinite(value)) and bool(torch.isfinite(point).all())
        except ValueError:  # the model refused a trial point
            defined = False
        if not defined:
            backoffs += 1
            if backoffs > _BACKOFFS:
                return False
            with torch.no_grad():
                point.copy_(good)
            rate /= 2
            continue
        rounds += 1
        if previous is not None and abs(previous - value.item()) <= 1e-9 * (
            1 + abs(value.item())
        ):
            break
        previous = value.item()
    gradient = point.grad
    return gradient is not None and bool(torch.isfinite(gradient).all())


def _lbfgs(point: Tensor, rate: float) -> torch.optim.LBFGS:
    return torch.optim.LBFGS(
        [point],
        lr=rate,
        max_iter=_ITERATIONS,
        tolerance_grad=1e-7,
        tolerance_change=1e-12,
        line_search_fn="strong_wolfe",
    )
