"""Closed-form KL divergences with fewer full-size operations than torch's.

The KL of every weight of a Bayesian network against its prior is taken on each
training step; torch's elementwise Normal formula costs several full-size operations
and their backward passes. :func:`normal_kl_sum` gives the same sum with fewer.
"""

from __future__ import annotations

import math

from torch import Tensor
from torch.distributions import Normal, kl_divergence

from borch.compiling import compiling
from borch.fastpath.construction import log_scale_of
from borch.fastpath.memo import MEMO_KEY, keep_pair, kept_pair, memo
from borch.fastpath.shapes import broadcast_shapes

__all__ = ["normal_kl_sum"]


def normal_kl_sum(q: Normal, p: Normal) -> Tensor:
    """Summed ``KL(q || p)`` of two Normals.

    A prior with one loc and scale (the usual case) is summed in closed form:
    ``n log sp - sum log sq + (sum sq^2 + sum (mq - mp)^2) / 2sp^2 - n/2``.

    Example:
        >>> import torch
        >>> q = Normal(torch.tensor([0.5, -1.0]), torch.tensor([0.3, 2.0]))
        >>> p = Normal(0.0, 1.5)
        >>> torch.allclose(normal_kl_sum(q, p), kl_divergence(q, p).sum())
        True
    """
    if p.loc.numel() != 1 or p.scale.numel() != 1:
        return kl_divergence(q, p).sum()
    if p.loc.dim() == 0:
        shape = q.batch_shape  # torch's Normal holds loc and scale at this shape
    else:
        shape = broadcast_shapes(q.batch_shape, p.batch_shape)
    count = shape.numel()
    q_scale, q_loc = q.scale, q.loc
    if q_scale.shape != shape:
        q_scale, q_loc = q_scale.expand(shape), q_loc.expand(shape)
        log_q_scale = q_scale.log()
    else:
        log_q_scale = log_scale_of(q)
    log_p_scale, half_precision, p_loc = _scalar_normal_constants(p)
    difference = q_loc if p_loc is None else q_loc - p_loc
    squares = q_scale.square().sum() + difference.square().sum()
    return squares * half_precision - log_q_scale.sum() + count * (log_p_scale - 0.5)


def _scalar_normal_constants(p: Normal) -> tuple:
    """``(log sp, 1 / 2sp^2, loc or None when it is 0)`` of a one-element Normal:
    numbers remembered for constant priors (shared between steps), tensors recomputed
    for learnable ones and inside a compiled step."""
    loc, scale = p.loc, p.scale
    if loc.requires_grad or scale.requires_grad or compiling():
        return scale.reshape(()).log(), 0.5 / scale.reshape(()).square(), loc
    record = p.__dict__.get(MEMO_KEY)
    if record is not None:
        constants = kept_pair(record.kl_constants, loc, scale)
        if constants is not None:
            return constants
    # Plain numbers: tensor-with-number arithmetic skips Python-level operator
    # wrappers, and these are computed once per prior.
    sp = float(scale.reshape(()))
    constants = (
        math.log(sp),
        0.5 / sp**2,
        None if bool(loc.reshape(()) == 0) else loc,
    )
    memo(p).kl_constants = keep_pair(constants, loc, scale)
    return constants
