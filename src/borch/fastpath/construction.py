"""Build torch distributions from arguments that are already checked and aligned.

torch's ``Normal`` broadcasts its arguments on construction (Python checks and one
operation, with a view per argument in the backward pass). borch rebuilds a
posterior's ``Normal`` on every draw, from a location and a scale that usually have
the same shape already; then the broadcast has nothing to do and is skipped. A
prior or likelihood ``Normal`` of new tensors (``Normal(x @ w, sigma)``) is checked
on every step: here by a test of the scale (in Python for a number) and one of the
loc, where torch's initialiser broadcasts them first and checks each with more
operations. A ``Categorical`` likelihood is rebuilt
from new logits on every step; it is normalised with one fused kernel instead of
torch's several.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Categorical, Distribution, LogNormal, Normal
from torch.distributions.transforms import ExpTransform
from torch.nn import Parameter

from borch.fastpath.memo import MEMO_KEY, keep, memo

__all__ = ["construct", "log_scale_of", "remember_log_scale"]


def construct(cls: type[Distribution], kwargs: dict[str, Any], validate: bool):
    """``cls(**kwargs, validate_args=validate)``, without a no-op broadcast, a
    check per argument or a multi-kernel normalisation.

    Example:
        >>> import torch
        >>> normal = construct(Normal, {"loc": torch.zeros(2), "scale": torch.ones(2)}, False)
        >>> normal.batch_shape, normal.rsample().shape
        (torch.Size([2]), torch.Size([2]))
        >>> construct(LogNormal, {"loc": torch.zeros(2), "scale": torch.ones(2)}, False)
        LogNormal()
        >>> construct(Categorical, {"logits": torch.zeros(2)}, True).probs
        tensor([0.5000, 0.5000])
        >>> construct(Normal, {"loc": torch.zeros(2), "scale": 2.0}, True).scale
        tensor([2., 2.])
    """
    if (cls is Normal or cls is LogNormal) and len(kwargs) == 2:
        loc, scale = kwargs.get("loc"), kwargs.get("scale")
        normal = (
            _checked_normal(loc, scale) if validate else _aligned_normal(loc, scale)
        )
        if normal is not None:
            if cls is Normal:
                return normal
            if _LOGNORMAL_LAYOUT_KNOWN:
                return _lognormal(normal)
    elif cls is Categorical and _CATEGORICAL_LAYOUT_KNOWN and len(kwargs) == 1:
        categorical = _categorical(kwargs.get("logits"), validate)
        if categorical is not None:
            return categorical
    return cls(**kwargs, validate_args=validate)


def _aligned_normal(loc: Any, scale: Any) -> Normal | None:
    if type(scale) in (int, float) and scale > 0:
        return _number_scale_normal(_plain(loc), scale)
    loc, scale = _plain(loc), _plain(scale)
    if (
        loc is None
        or scale is None
        or loc.shape != scale.shape
        or loc.dtype != scale.dtype
        or loc.device != scale.device
    ):
        return None
    normal = Normal.__new__(Normal)
    normal.loc, normal.scale = loc, scale
    Distribution.__init__(normal, loc.shape, validate_args=False)
    return normal


def _number_scale_normal(loc: Tensor | None, scale: float) -> Normal | None:
    """A Normal of a tensor ``loc`` and the positive number ``scale``, which it
    remembers (its log-density's constants are then numbers, while the scale
    tensor it holds is unmodified)."""
    if loc is None or not loc.is_floating_point():
        return None
    normal = _aligned_normal(loc, torch.full_like(loc, scale))
    memo(normal).number_scale = keep(float(scale), normal.scale)
    return normal


def _checked_normal(loc: Any, scale: Any) -> Normal | None:
    """A Normal of a tensor ``loc`` and a scale of its shape, a one-element scale
    or a number, checked by a test of the scale (in Python for a number) and
    one of the loc, without broadcasting them (torch's initialiser broadcasts and
    checks each with more operations); ``None`` to leave it to torch, which also
    words any failure."""
    loc = _plain(loc)
    if loc is None or not loc.is_floating_point():
        return None
    if type(scale) in (int, float):
        if not scale > 0 or bool(loc.isnan().any()):
            return None
        return _number_scale_normal(loc, scale)
    scale = _plain(scale)
    if scale is None or (scale.shape != loc.shape and scale.dim() != 0):
        return None
    if scale.dtype != loc.dtype or scale.device != loc.device:
        return None
    # two tests and two synchronisations: fewer operations than one of both
    if not bool((scale > 0) if scale.dim() == 0 else (scale > 0).all()):
        return None
    if bool(loc.isnan().any()):
        return None
    return _aligned_normal(loc, scale.expand(loc.shape))


def _lognormal(normal: Normal) -> LogNormal:
    # TransformedDistribution.__init__ works out shapes through the transform (about
    # 10 us of Python); for exp of an unbatched-event Normal they are the Normal's.
    lognormal = LogNormal.__new__(LogNormal)
    lognormal.transforms = [ExpTransform()]
    lognormal.base_dist = normal
    Distribution.__init__(lognormal, normal.batch_shape, validate_args=False)
    return lognormal


# The shortcut above sets what torch's initialiser sets; if a torch release changes
# that, the initialiser is used.
_LOGNORMAL_LAYOUT_KNOWN = set(vars(LogNormal(0.0, 1.0, validate_args=False))) == set(
    vars(_lognormal(Normal(0.0, 1.0, validate_args=False)))
)


def _plain(value: Any) -> Tensor | None:
    """The tensor of a tensor argument (``None`` for anything else)."""
    if type(value) is Tensor or isinstance(value, Parameter):
        return value
    return None


def _categorical(logits: Any, validate: bool) -> Categorical | None:
    # torch normalises logits as ``logits - logsumexp(logits)``: a composite of
    # several kernels, then a subtraction; ``log_softmax`` is one fused kernel with
    # the same values. Validation of the logits (``real_vector``: no NaN after
    # normalising) is done here as one reduction; torch's initialiser reports any
    # failure, in its own words.
    logits = _plain(logits)
    if logits is None or logits.dim() < 1 or not logits.is_floating_point():
        return None
    normalised = F.log_softmax(logits, dim=-1)
    if validate and bool(normalised.isnan().any()):
        return None
    categorical = Categorical.__new__(Categorical)
    categorical.logits = categorical._param = normalised
    categorical._num_events = normalised.shape[-1]
    Distribution.__init__(categorical, normalised.shape[:-1], validate_args=False)
    categorical._validate_args = validate
    return categorical


_CATEGORICAL_LAYOUT_KNOWN = set(
    vars(Categorical(logits=torch.zeros(2), validate_args=False))
) == set(vars(_categorical(torch.zeros(2), False)))


def remember_log_scale(normal: Normal, scale_argument: Any) -> None:
    """Keep ``log_scale`` for a Normal whose scale argument is ``exp(log_scale)`` (a
    ``borch.Transform``), so that log-densities and KL divergences use it instead of
    taking the log of the exponential (an operation and its backward on every step)."""
    exp_argument = getattr(scale_argument, "exp_argument", None)
    if exp_argument is None:
        return
    log_scale = exp_argument()
    if log_scale is not None and log_scale.shape == normal.scale.shape:
        memo(normal).log_scale = log_scale


def log_scale_of(normal: Normal) -> Tensor:
    """``normal.scale.log()``, or the ``log_scale`` it was built from."""
    record = normal.__dict__.get(MEMO_KEY)
    if record is None or record.log_scale is None:
        return normal.scale.log()
    return record.log_scale
