"""Elementwise functions the numba program of a traced potential calls, in numba.

The operations torch has and numba's numpy does not (``sigmoid``, ``softplus``,
``binary_cross_entropy_with_logits``, ``lgamma``, ``digamma``, ``erf``) in their
numerically stable forms, for scalars and, as loops, for arrays of the float32 and
float64 the traces use. Only the programs of
:mod:`borch.infer.hmc.traced.numba_program` import it (without numba its functions
are plain Python, unused). Each is compiled once per dtype on first use and cached on disk (numba's ``cache=True``: next to this file,
or in numba's cache directory where that is not writable), so only the first
process to use it pays the compilation.
"""

from __future__ import annotations

import math

import numpy as np

try:
    from numba import njit
except ImportError:  # importable without numba (documentation, doctest collection)

    def njit(**options):
        return lambda function: function


# fastmath stays off everywhere: it lets LLVM reassociate sums and assume no NaN or
# infinity, and the programs must give the value of the model's own operations to
# rounding (a non-finite energy is how a sampler sees a divergence).


@njit(cache=True)
def sigmoid_scalar(x):
    if x >= 0:
        return 1 / (1 + math.exp(-x))
    z = math.exp(x)
    return z / (1 + z)


@njit(cache=True)
def log1pexp_scalar(x):
    """``log(1 + exp(x))`` without overflow."""
    return max(x, 0) + math.log1p(math.exp(-abs(x)))


@njit(cache=True)
def softplus_scalar(x, beta, threshold):
    # torch's softplus: linear above the threshold
    if x * beta > threshold:
        return x
    return log1pexp_scalar(x * beta) / beta


@njit(cache=True)
def bce_with_logits_scalar(x, target):
    return (1 - target) * x + log1pexp_scalar(-x)


# math's lgamma, erf and erfc (and digamma here) take float64 (numba has no float32 forms): the result
# is float64, cast back to the trace's dtype by the array loops and the program.
@njit(cache=True)
def lgamma_scalar(x):
    return math.lgamma(np.float64(x))


@njit(cache=True)
def digamma_scalar(x):
    """The digamma function (float64): torch's values at the poles (``-inf`` at 0,
    NaN at the negative integers), reflection below 0, the recurrence up to 6, then
    the asymptotic series (relative error below 1e-12)."""
    x = np.float64(x)
    if x == 0:
        return -np.inf
    result = 0.0
    if x < 0:
        if x == math.floor(x):
            return np.nan
        result = -math.pi / math.tan(math.pi * x)
        x = 1 - x
    while x < 6:
        result -= 1 / x
        x += 1
    f = 1 / (x * x)
    series = f * (1 / 12 - f * (1 / 120 - f * (1 / 252 - f * (1 / 240 - f / 132))))
    return result + math.log(x) - 0.5 / x - series


@njit(cache=True)
def erf_scalar(x):
    return math.erf(np.float64(x))


@njit(cache=True)
def erfc_scalar(x):
    return math.erfc(np.float64(x))


# One loop per function rather than one loop taking the function as an argument:
# numba cannot cache a function that takes another as an argument (nor any program
# calling it), and every process would compile it anew.
@njit(cache=True)
def sigmoid(x):
    flat = np.ascontiguousarray(x).reshape(-1)
    out = np.empty_like(flat)
    for i in range(flat.size):
        out[i] = sigmoid_scalar(flat[i])
    return out.reshape(x.shape)


@njit(cache=True)
def lgamma(x):
    flat = np.ascontiguousarray(x).reshape(-1)
    out = np.empty_like(flat)
    for i in range(flat.size):
        out[i] = lgamma_scalar(flat[i])
    return out.reshape(x.shape)


@njit(cache=True)
def digamma(x):
    flat = np.ascontiguousarray(x).reshape(-1)
    out = np.empty_like(flat)
    for i in range(flat.size):
        out[i] = digamma_scalar(flat[i])
    return out.reshape(x.shape)


@njit(cache=True)
def erf(x):
    flat = np.ascontiguousarray(x).reshape(-1)
    out = np.empty_like(flat)
    for i in range(flat.size):
        out[i] = erf_scalar(flat[i])
    return out.reshape(x.shape)


@njit(cache=True)
def erfc(x):
    flat = np.ascontiguousarray(x).reshape(-1)
    out = np.empty_like(flat)
    for i in range(flat.size):
        out[i] = erfc_scalar(flat[i])
    return out.reshape(x.shape)


@njit(cache=True)
def bce_with_logits(x, target):
    """The elementwise loss of two arrays of one shape (no reduction)."""
    flat = np.ascontiguousarray(x).reshape(-1)
    goal = np.ascontiguousarray(target).reshape(-1)
    out = np.empty_like(flat)
    for i in range(flat.size):
        out[i] = bce_with_logits_scalar(flat[i], goal[i])
    return out.reshape(x.shape)


@njit(cache=True)
def softplus(x, beta, threshold):
    flat = np.ascontiguousarray(x).reshape(-1)
    out = np.empty_like(flat)
    for i in range(flat.size):
        out[i] = softplus_scalar(flat[i], beta, threshold)
    return out.reshape(x.shape)
