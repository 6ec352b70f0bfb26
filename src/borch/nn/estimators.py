"""Lower-variance gradient estimators for Bayesian Linear and Conv layers.

By default a Bayesian layer draws one weight matrix per step and every example in
the batch sees it, so the noise of that one draw is shared by the whole batch and
does not average out over examples. Two opt-in estimators decorrelate it, for
layers whose weight posterior is a mean-field Normal (the :mod:`borch.nn` default):

* ``"local_reparameterization"`` (Kingma, Salimans & Welling, 2015, "Variational
  Dropout and the Local Reparameterization Trick"), Linear layers only: for a Normal
  weight posterior the pre-activations of one example are Normal with mean ``x @
  loc.T + bias_loc`` and variance ``x**2 @ scale.T**2 + bias_scale**2``, independent
  across examples; they are drawn directly, one independent draw per example. Exact
  when each row of the input is its own example (the input is ``(batch, features)``),
  so inputs with more dimensions are refused. Convolutions are refused too: the
  positions of one image share the weights, so drawing their pre-activations
  independently would change the distribution of the output (a biased loss).
* ``"flipout"`` (Wen et al., 2018, "Flipout: Efficient Pseudo-Independent Weight
  Perturbations on Mini-Batches"), Linear and Conv1d/2d/3d: one weight draw ``W = loc
  + dW``; example ``n`` uses ``loc + dW * (s_n r_n^T)`` with random signs ``r_n``
  (inputs) and ``s_n`` (outputs), which has the posterior's distribution for every
  example, through ``out = f(x, loc) + f(x * r, dW) * s``. The first dimension of the
  input is the batch.

Both keep the loss and its gradient unbiased: each example's output has exactly the
distribution it has under the default estimator, and the expected loss is a sum over
examples. The divergence term is unaffected: what :func:`borch.pq_to_infer` reports
for the weights is still a draw from their posterior: with flipout the draw ``W``
used above; with local reparameterisation, which needs no weight draw, an
independent draw made when ``pq_to_infer`` asks for it. With
``div_fn=analytical_kl_divergence_loss`` the value is not used at all; with the
default sampled divergence ``log q(W) - log p(W)`` it is an unbiased estimate of the
KL divergence whatever draw it is evaluated at (tested in
``tests/nn/test_estimators.py``).

Example:
    >>> import torch
    >>> import borch
    >>> from borch import nn
    >>> torch.manual_seed(0)
    <torch._C.Generator object at ...>
    >>> layer = nn.Linear(3, 2, estimator="local_reparameterization")
    >>> layer(torch.ones(5, 3)).shape
    torch.Size([5, 2])
    >>> set_estimator(nn.Sequential(nn.Linear(3, 2), nn.ReLU()), "flipout")
    ['0']
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from borch import distributions as dist

LOCAL_REPARAMETERIZATION = "local_reparameterization"
FLIPOUT = "flipout"
#: The estimator names a layer accepts (``None``: one weight draw per step).
ESTIMATORS = (None, LOCAL_REPARAMETERIZATION, FLIPOUT)


class EstimatorMixin:
    """Adds ``estimator=`` to a Bayesian Linear or Conv layer."""

    def __init__(self, *args: Any, estimator: str | None = None, **kwargs: Any):
        check_estimator_name(estimator)
        super().__init__(*args, **kwargs)
        self.estimator = estimator

    @property
    def estimator(self) -> str | None:
        """The gradient estimator of this layer: ``None`` (one weight draw per step),
        ``"local_reparameterization"`` or ``"flipout"``."""
        return self.__dict__.get("_estimator")

    @estimator.setter
    def estimator(self, estimator: str | None) -> None:
        check_estimator_name(estimator)
        if estimator is not None:
            _check_layer(self, estimator)
        self.__dict__["_estimator"] = estimator

    def forward(self, input: Tensor) -> Tensor:
        estimator = self.__dict__.get("_estimator")
        if estimator is None or _has_fixed_weights(self):
            return super().forward(input)
        if estimator == FLIPOUT:
            return _flipout(self, input)
        return _local_reparameterization(self, input)


def check_estimator_name(estimator: object) -> None:
    """A ``ValueError`` unless ``estimator`` is one of :data:`ESTIMATORS`."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")


def supports(layer: nn.Module, estimator: str | None) -> bool:
    """Whether ``layer`` can use ``estimator``.

    Example:
        >>> from borch import nn
        >>> supports(nn.Conv2d(1, 2, 3), "flipout"), supports(nn.Conv2d(1, 2, 3), "local_reparameterization")
        (True, False)
    """
    if not isinstance(layer, EstimatorMixin):
        return estimator is None
    return estimator != LOCAL_REPARAMETERIZATION or isinstance(layer, nn.Linear)


def set_estimator(module: nn.Module, estimator: str | None) -> list[str]:
    """Use ``estimator`` in every layer of ``module`` that supports it.

    Local reparameterisation applies to Linear layers (convolutions keep their
    current estimator), flipout to Linear and Conv1d/2d/3d layers, ``None`` restores
    the default everywhere.

    Returns:
        The qualified names of the layers that were set.

    Raises:
        ValueError: for an unknown estimator name, a layer whose weight posterior is
            not a Normal, or a network with no layer that supports the estimator.
    """
    check_estimator_name(estimator)
    names = []
    for name, layer in module.named_modules():
        if isinstance(layer, EstimatorMixin) and supports(layer, estimator):
            layer.estimator = estimator
            names.append(name)
    if not names and estimator is not None:
        raise ValueError(
            f"no layer of {type(module).__name__} supports estimator {estimator!r} "
            "(local reparameterisation: borch.nn.Linear; flipout: borch.nn.Linear "
            "and Conv1d/2d/3d)"
        )
    return names


# ---------------------------------------------------------------- validation
def _check_layer(layer: nn.Module, estimator: str) -> None:
    kind = type(layer).__name__
    if not supports(layer, estimator):
        raise ValueError(
            f"{kind} does not support estimator {estimator!r}: local "
            "reparameterisation draws each output position independently, but the "
            "positions of one input share the convolution's weights, so the loss "
            "would be biased; use estimator='flipout' for convolutions"
        )
    names = ("weight", "bias") if estimator == LOCAL_REPARAMETERIZATION else ("weight",)
    for name in names:
        approximation = layer.posterior.approximation(name)
        if approximation is not None and not isinstance(approximation, dist.Normal):
            raise ValueError(
                f"estimator {estimator!r} needs a Normal posterior for {kind}.{name}, "
                f"got {type(approximation).__name__}; use "
                "posterior=borch.posterior.Normal(...) (the borch.nn default) with a "
                "prior on the real line"
            )


def _has_fixed_weights(layer: nn.Module) -> bool:
    """Whether a weight or bias is observed or conditioned (a given value)."""
    return layer.is_given("weight") or layer.is_given("bias")


def _normal_stats(layer: nn.Module, name: str) -> tuple[Tensor, Tensor] | None:
    """``(loc, scale)`` of the Normal posterior of ``name``, marked as used; ``None``
    when the layer has no random variable of that name."""
    approximation = layer.posterior.approximation(name)
    if approximation is None:
        return None
    try:
        layer.mark_used(name)
    except KeyError:  # the variable was deleted; its approximation stays
        return None
    if not isinstance(approximation, dist.Normal):
        _check_layer(layer, LOCAL_REPARAMETERIZATION)
    distribution = approximation.distribution
    return distribution.loc, distribution.scale


def _affine(layer: nn.Module, input: Tensor, weight: Tensor, bias: Tensor | None):
    if isinstance(layer, nn.Linear):
        return F.linear(input, weight, bias)
    return layer._conv_forward(input, weight, bias)


# ----------------------------------------------------------------- estimators
def _local_reparameterization(layer: nn.Module, input: Tensor) -> Tensor:
    if input.dim() > 2:
        raise ValueError(
            f"local reparameterisation in {type(layer).__name__} needs input of shape "
            f"(batch, features), got {tuple(input.shape)}: rows that are not "
            "separate examples share the weights, and drawing their outputs "
            "independently would bias the loss; use estimator='flipout' or reshape "
            "so each row is one example"
        )
    weight_loc, weight_scale = _normal_stats(layer, "weight")
    bias_stats = _normal_stats(layer, "bias")
    if bias_stats is None:
        bias_loc, bias_var = layer.bias, None
    else:
        bias_loc, bias_var = bias_stats[0], bias_stats[1].square()
    mean = _affine(layer, input, weight_loc, bias_loc)
    variance = _affine(layer, input.square(), weight_scale.square(), bias_var)
    # Exactly zero variance (an all-zero input row, no bias) must not give an
    # infinite gradient through the square root.
    std = variance.clamp_min(torch.finfo(variance.dtype).tiny).sqrt()
    return mean + std * torch.randn_like(mean)


def _flipout(layer: nn.Module, input: Tensor) -> Tensor:
    weight_loc, _ = _normal_stats(layer, "weight")
    weight = layer.weight  # the draw W = loc + dW, reported to pq_to_infer
    mean = _affine(layer, input, weight_loc, layer.bias)
    spatial = 0 if isinstance(layer, nn.Linear) else len(layer.kernel_size)
    input_signs = _signs(input, spatial)
    perturbation = _affine(layer, input * input_signs, weight - weight_loc, None)
    return mean + perturbation * _signs(perturbation, spatial)


def _signs(like: Tensor, spatial: int) -> Tensor:
    """Random +-1 per example (first dimension) and channel, shared over the other
    dimensions."""
    if like.dim() - spatial <= 1:  # one unbatched example
        shape = [like.shape[0]] + [1] * spatial if spatial else [like.shape[-1]]
    else:
        shape = [like.shape[0]] + [1] * (like.dim() - 2 - spatial)
        shape += [like.shape[-1 - spatial]] + [1] * spatial
    signs = torch.empty(shape, dtype=like.dtype, device=like.device).bernoulli_(0.5)
    return signs.mul_(2).sub_(1)


__all__ = [
    "ESTIMATORS",
    "FLIPOUT",
    "LOCAL_REPARAMETERIZATION",
    "EstimatorMixin",
    "check_estimator_name",
    "set_estimator",
    "supports",
]
