"""An optional guard that says *which* variables made a loss NaN or infinite.

A NaN loss usually has one culprit: a parameter that diverged, a draw that overflowed,
a data point outside the likelihood's support. :func:`nonfinite_guard` returns the
loss untouched while it is finite (one ``isfinite`` check, which synchronises with a
GPU), and otherwise raises :class:`NonFiniteError` listing every variable used since
the last :func:`borch.sample` whose value, prior log-density, approximation
log-density or observed likelihood is not finite, and every non-finite parameter.
:func:`check_finite_gradients` does the same for gradients after ``backward``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from borch.sites import sites

__all__ = [
    "NonFiniteError",
    "check_finite_gradients",
    "nonfinite_guard",
    "nonfinite_report",
]


class NonFiniteError(FloatingPointError):
    """A loss or gradient became NaN or infinite; the message names the culprits."""


def nonfinite_guard(model: nn.Module, loss: Tensor) -> Tensor:
    """Return ``loss`` if it is finite, else raise naming what is not finite.

    Args:
        model: the model whose random variables and parameters built ``loss``.
        loss: the loss of this step (before ``backward``).

    Returns:
        ``loss`` itself.

    Raises:
        NonFiniteError: the loss is NaN or infinite; the message lists each variable
            whose value or log-density (prior at the value, approximation at the
            value, observed likelihood) is not finite, and each non-finite parameter.

    Example:
        >>> import torch, borch
        >>> from borch import distributions as dist
        >>> model = borch.Module()
        >>> model.x = dist.Normal(0.0, 1.0)
        >>> first_draw = model.x  # arguments are validated here, once
        >>> with torch.no_grad():  # later, training diverges
        ...     _ = model.posterior.x.loc.fill_(float("nan"))
        >>> borch.sample(model)
        >>> model.x = dist.Normal(0.0, 1.0)
        >>> loss = borch.infer.vi_loss(**borch.pq_to_infer(model))
        >>> borch.infer.nonfinite_guard(model, loss)
        Traceback (most recent call last):
        ...
        borch.infer.guard.NonFiniteError: loss is nan; parameter 'posterior.x.loc' ...
    """
    if bool(torch.isfinite(loss).all()):
        return loss
    value = loss.item() if loss.numel() == 1 else "not finite"
    raise NonFiniteError(f"loss is {value}; {_explain(nonfinite_report(model))}")


def check_finite_gradients(model: nn.Module) -> None:
    """After ``backward``: raise if any parameter's gradient is NaN or infinite.

    Finite losses can still give non-finite gradients (a reparameterised draw that
    underflowed, ``sqrt`` at 0); the message names the parameters and, as
    :func:`nonfinite_guard` does, any variable whose log-density is not finite.

    Raises:
        NonFiniteError: naming each parameter with a non-finite gradient.
    """
    bad = [
        f"gradient of parameter '{name}' {_describe(param.grad)}"
        for name, param in model.named_parameters()
        if param.grad is not None and not bool(torch.isfinite(param.grad).all())
    ]
    if bad:
        raise NonFiniteError(_explain(bad + nonfinite_report(model)))


def nonfinite_report(model: nn.Module) -> list[str]:
    """One line per non-finite parameter, value or log-density of ``model``'s
    variables used since the last :func:`borch.sample` (empty if all are finite)."""
    lines = [
        f"parameter '{name}' {_describe(param)}"
        for name, param in model.named_parameters()
        if not bool(torch.isfinite(param.detach()).all())
    ]
    with torch.no_grad():
        for site in sites(model):
            name, value = site.name, site.value
            kind = "observed value" if site.observed else "value"
            if value.is_floating_point() and not bool(
                torch.isfinite(_kept(value, site.mask)).all()
            ):
                lines.append(f"{kind} of '{name}' {_describe(value)}")
            prior_term = "likelihood" if site.observed else "prior log-density"
            lines += _check_log_prob(name, prior_term, site.prior, value, site.mask)
            if site.approximation is not None:
                lines += _check_log_prob(
                    name,
                    "approximation log-density",
                    site.approximation,
                    value,
                    site.mask,
                )
    return lines


def _kept(tensor: Tensor, mask: Tensor | None) -> Tensor:
    """The elements a mask keeps (masked elements count for nothing in a loss);
    all of them when ``mask`` does not fit ``tensor``'s shape."""
    if mask is None:
        return tensor
    try:
        return tensor[mask.expand_as(tensor)]
    except RuntimeError:
        return tensor


def _check_log_prob(
    name: str, term: str, variable, value: Tensor, mask: Tensor | None = None
) -> list[str]:
    try:
        log_density = variable.distribution.log_prob(value)
    except (ValueError, RuntimeError) as error:
        return [f"{term} of '{name}' could not be evaluated ({error})"]
    if bool(torch.isfinite(_kept(log_density, mask)).all()):
        return []
    return [f"{term} of '{name}' at its value {_describe(log_density)}"]


def _describe(tensor: Tensor) -> str:
    tensor = tensor.detach()
    finite = torch.isfinite(tensor)
    bad = tensor[~finite].flatten()[:3].tolist()
    return f"has {int((~finite).sum())} non-finite of {tensor.numel()} entries (e.g. {bad})"


def _explain(lines: list[str]) -> str:
    if not lines:
        return (
            "every parameter, value and log-density of the model's variables is "
            "finite: the non-finite value came from outside them (the loss's own "
            "arithmetic, or variables not used since the last borch.sample)"
        )
    return "; ".join(lines)
