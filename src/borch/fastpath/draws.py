"""Draws that remember how they were made, so their log-density costs less.

A reparameterised Normal draw is ``loc + scale * noise``. Its log-density under the
distribution that drew it standardises the draw again, ``(value - loc) / scale``,
which is ``noise`` exactly, as a function of ``loc`` and ``scale`` too: the
ELBO's ``log q`` is ``-noise^2 / 2 - log(scale) - log(2 pi) / 2``, the same value
and the same gradient with respect to every parameter, in one operation on the
autograd graph instead of five. A LogNormal draw is ``exp`` of such a draw, whose
log is then known too.

:func:`draw` makes the draw and remembers; :func:`standard_noise` and
:func:`log_of` only for the very tensor that was drawn and only while it is
unmodified (its version counter unchanged), and ``None`` otherwise.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import Distribution, LogNormal, Normal

from borch.compiling import compiling
from borch.fastpath.memo import MEMO_KEY, keep, kept, memo, recall_log, remember_log

__all__ = ["draw", "log_of", "standard_noise"]


def draw(distribution: Distribution) -> Tensor:
    """``rsample()`` where the distribution has it, else ``sample()``; the same
    values from the same random numbers as torch's.

    Example:
        >>> import torch
        >>> normal = Normal(torch.tensor(1.0), torch.tensor(2.0))
        >>> value = draw(normal)
        >>> bool(standard_noise(normal, value) == (value - 1.0) / 2.0)
        True
    """
    kind = type(distribution)
    if kind is Normal:
        value, noise = _normal_draw(distribution)
    elif kind is LogNormal:
        log_value, noise = _normal_draw(distribution.base_dist)
        value = log_value.exp()
        remember_log(value, log_value)
    elif distribution.has_rsample:
        return distribution.rsample()
    else:
        return distribution.sample()
    if not compiling():
        memo(distribution).draw = keep(noise, value)
    return value


def _normal_draw(normal: Normal) -> tuple[Tensor, Tensor]:
    # torch's rsample fills torch.empty(...) with normal_(). randn_like runs the same
    # kernel on the same generator in one call (about a third of the time), and
    # gives the same numbers where loc is laid out as a new tensor would be. A
    # Normal holds loc at its batch shape.
    loc = normal.loc
    if loc.is_contiguous():
        noise = torch.randn_like(loc)
    else:
        noise = torch.randn(loc.shape, dtype=loc.dtype, device=loc.device)
    return loc + noise * normal.scale, noise


def standard_noise(distribution: Distribution, value: Tensor) -> Tensor | None:
    """The standard Normal noise ``value`` was drawn with by ``distribution`` (for a
    LogNormal, the noise of ``log(value)``), or ``None`` if it was not its draw."""
    if compiling():
        return None
    record = distribution.__dict__.get(MEMO_KEY)
    return None if record is None else kept(record.draw, value)


def log_of(value: Tensor) -> Tensor | None:
    """``log(value)`` of a LogNormal draw (the Normal draw it exponentiates), else
    ``None``."""
    return recall_log(value)
