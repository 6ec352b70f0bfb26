"""Degenerate distributions: ``Delta`` (a fixed value) and ``PointMass`` (a learnable one).

``PointMass`` is the approximating distribution of MAP estimation and the state MCMC
moves: it holds a value in unconstrained space and maps it onto the prior's support.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import Distribution, constraints

from borch.distributions.transforms import unconstraining_transform


class Delta(Distribution):
    """All mass at ``value``.

    Args:
        value: where the mass is; the last ``event_dim`` dimensions are the event.
        log_density: log density assigned to ``value`` (default 0).
        event_dim: number of trailing dimensions of ``value`` that form one event.

    Draws are ``value`` itself, so gradients flow through them.

    Example:
        >>> import torch
        >>> d = Delta(torch.tensor([1.0, 2.0]))
        >>> d.rsample((2,))
        tensor([[1., 2.],
                [1., 2.]])
        >>> d.log_prob(torch.tensor([1.0, 3.0]))
        tensor([0., -inf])
    """

    arg_constraints = {"value": constraints.real, "log_density": constraints.real}
    support = constraints.real
    has_rsample = True

    def __init__(
        self,
        value: Tensor,
        log_density: Tensor | float = 0.0,
        event_dim: int = 0,
        validate_args: bool | None = None,
    ) -> None:
        value = torch.as_tensor(value)
        if event_dim > value.dim():
            raise ValueError(
                f"Delta: event_dim={event_dim} exceeds the value's {value.dim()} dims"
            )
        split = value.dim() - event_dim
        self.value = value
        self.log_density = torch.as_tensor(
            log_density, dtype=value.dtype, device=value.device
        ).expand(value.shape[:split])
        self.event_dim = event_dim
        super().__init__(value.shape[:split], value.shape[split:], validate_args)

    @property
    def mean(self) -> Tensor:
        return self.value

    @property
    def mode(self) -> Tensor:
        return self.value

    @property
    def variance(self) -> Tensor:
        return torch.zeros_like(self.value)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        value = self.value.expand(batch_shape + self.event_shape)
        log_density = self.log_density.expand(batch_shape)
        return Delta(value, log_density, self.event_dim, validate_args=False)

    def rsample(self, sample_shape=()) -> Tensor:
        return self.value.expand(self._extended_shape(torch.Size(sample_shape)))

    def log_prob(self, value: Tensor) -> Tensor:
        matches = (value == self.value).reshape(
            (*value.shape[: value.dim() - self.event_dim], -1)
        )
        hit = matches.all(-1)
        return torch.where(
            hit, self.log_density, torch.full_like(self.log_density, -torch.inf)
        )

    def entropy(self) -> Tensor:
        return torch.zeros_like(self.log_density)


class PointMass(Distribution):
    """A point estimate kept in unconstrained space.

    Args:
        unconstrained_value: the estimate mapped to unconstrained space.
        support: the constraint the estimate lives on; ``biject_to(support)`` (or
            ``transform_to`` where no bijection is registered) maps
            ``unconstrained_value`` onto it.

    ``log_prob`` is zero everywhere: a point estimate contributes no density of its
    own, so the negative ELBO with a ``PointMass`` approximation is the negative log
    joint (MAP). Draws are the constrained value and carry gradients.

    Example:
        >>> import torch
        >>> from torch.distributions import constraints
        >>> d = PointMass(torch.tensor(0.0), constraints.positive)
        >>> d.rsample()
        tensor(1.)
        >>> d.log_prob(torch.tensor(5.0))
        tensor(0.)
    """

    arg_constraints = {"unconstrained_value": constraints.real}
    has_rsample = True

    def __init__(
        self,
        unconstrained_value: Tensor,
        support: constraints.Constraint = constraints.real,
        validate_args: bool | None = None,
    ) -> None:
        self.unconstrained_value = torch.as_tensor(unconstrained_value)
        self._support = support
        self.transform = unconstraining_transform(support)
        self.value = self.transform(self.unconstrained_value)
        event_dim = self.transform.codomain.event_dim
        split = self.value.dim() - event_dim
        super().__init__(
            self.value.shape[:split], self.value.shape[split:], validate_args
        )

    @constraints.dependent_property(is_discrete=False, event_dim=0)
    def support(self):
        return self._support

    @property
    def mean(self) -> Tensor:
        return self.value

    @property
    def mode(self) -> Tensor:
        return self.value

    @property
    def variance(self) -> Tensor:
        return torch.zeros_like(self.value)

    def rsample(self, sample_shape=()) -> Tensor:
        return self.value.expand(self._extended_shape(torch.Size(sample_shape)))

    def log_prob(self, value: Tensor) -> Tensor:
        shape = value.shape[: value.dim() - len(self.event_shape)]
        return torch.zeros(shape, dtype=self.value.dtype, device=self.value.device)

    def entropy(self) -> Tensor:
        return torch.zeros(
            self.batch_shape, dtype=self.value.dtype, device=self.value.device
        )

    def log_abs_det_jacobian(self) -> Tensor:
        """``log|d value / d unconstrained_value|``, summed over each event."""
        jacobian = self.transform.log_abs_det_jacobian(
            self.unconstrained_value, self.value
        )
        extra = jacobian.dim() - len(self.batch_shape)
        return jacobian.sum(tuple(range(-extra, 0))) if extra > 0 else jacobian


__all__ = ["Delta", "PointMass"]
