"""The Laplace approximation: a Gaussian at a minimum of a loss, with the inverse
Hessian as covariance.

:class:`Laplace` works on any loss closure and list of tensors. For a model fitted by
MAP (a :class:`borch.posterior.PointMass` posterior and an optimiser),
:func:`laplace_posterior` builds the Gaussian over the point masses' unconstrained
values and lets the model's latent variables follow it.

Reference:
    D. J. C. MacKay, "Information Theory, Inference, and Learning Algorithms",
    Cambridge University Press, 2003, chapter 27.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from borch.infer.hmc.potential import check_parameters

#: Default floor of the Hessian's eigenvalues, relative to the largest one.
RELATIVE_EIGENVALUE_FLOOR = 1e-6


def hessian(loss_closure: Callable[[], Tensor], params: list[Tensor]) -> Tensor:
    """The Hessian of ``loss_closure()`` with respect to the flattened ``params``.

    One backward pass per row, batched with ``vmap`` where torch supports it.

    Example:
        >>> import torch
        >>> x = torch.tensor([1.0, 2.0], requires_grad=True)
        >>> hessian(lambda: x[0] ** 2 * x[1], [x])
        tensor([[4., 2.],
                [2., 0.]])
    """
    loss = loss_closure()
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        raise TypeError("loss_closure() must return a scalar tensor")
    if not loss.requires_grad:
        raise ValueError(
            "loss_closure() returned a tensor without gradient: compute it from params"
        )
    grads = torch.autograd.grad(
        loss.reshape(()), params, create_graph=True, allow_unused=True
    )
    flat = torch.cat(
        [
            torch.zeros(p.numel(), dtype=p.dtype, device=p.device)
            if g is None
            else g.reshape(-1)
            for p, g in zip(params, grads)
        ]
    )
    size = flat.numel()
    if not flat.requires_grad:  # a loss linear in params
        return torch.zeros(size, size, dtype=flat.dtype, device=flat.device)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # vmap's notes on slow fallbacks
            rows = torch.autograd.grad(
                flat,
                params,
                grad_outputs=torch.eye(size, dtype=flat.dtype, device=flat.device),
                is_grads_batched=True,
                retain_graph=True,
                allow_unused=True,
            )
        blocks = [
            torch.zeros(size, p.numel(), dtype=flat.dtype, device=flat.device)
            if r is None
            else r.reshape(size, -1)
            for p, r in zip(params, rows)
        ]
    except RuntimeError:
        blocks = [_row_by_row(flat, p) for p in params]
    return torch.cat(blocks, dim=1).detach()


def _row_by_row(flat: Tensor, param: Tensor) -> Tensor:
    rows = []
    for i in range(flat.numel()):
        (row,) = torch.autograd.grad(
            flat[i], param, retain_graph=True, allow_unused=True
        )
        rows.append(
            torch.zeros_like(param).reshape(-1) if row is None else row.reshape(-1)
        )
    return torch.stack(rows)


class Laplace:
    """A Gaussian approximation at the current values of ``params``.

    Args:
        loss_closure: returns the loss (a negative log density up to a constant, e.g.
            the negative log joint of a MAP fit) from the current ``params``.
        params: the tensors the loss was minimised over (leaf tensors with
            ``requires_grad=True``), at the minimum.
        min_eigenvalue: the floor for the Hessian's eigenvalues; by default
            ``1e-6`` times the largest. Where the Hessian is not positive definite
            (not at a strict minimum, or flat directions), eigenvalues below the floor
            are raised to it ("eigenvalue clipping") with a ``RuntimeWarning``:
            the approximation is then very wide along those directions.

    Attributes:
        mean: the flattened ``params`` (a copy).
        hessian: the Hessian of the loss there, symmetrised.
        covariance: the inverse of the (clipped) Hessian.
        num_clipped: how many eigenvalues were clipped.

    ``params`` themselves are not changed.

    Example:
        >>> import torch
        >>> torch.manual_seed(0)
        <torch._C.Generator object at ...>
        >>> x = torch.tensor([1.0, -1.0], requires_grad=True)
        >>> precision = torch.tensor([[2.0, 0.5], [0.5, 1.0]])
        >>> def loss():
        ...     d = x - torch.tensor([1.0, -1.0])
        ...     return 0.5 * d @ precision @ d
        >>> laplace = Laplace(loss, [x])
        >>> torch.allclose(laplace.covariance, torch.linalg.inv(precision))
        True
        >>> [draw.shape for draw in laplace.sample(100)]
        [torch.Size([100, 2])]
    """

    def __init__(
        self,
        loss_closure: Callable[[], Tensor],
        params: Iterable[Tensor],
        min_eigenvalue: float | None = None,
    ) -> None:
        if not callable(loss_closure):
            raise TypeError(
                f"loss_closure must be callable, got {type(loss_closure).__name__}"
            )
        self.params = check_parameters(params)
        self.mean = torch.cat([p.detach().reshape(-1) for p in self.params]).clone()
        self._set_precision(hessian(loss_closure, self.params), min_eigenvalue)

    @classmethod
    def from_precision(
        cls,
        precision: Tensor,
        params: Iterable[Tensor],
        min_eigenvalue: float | None = None,
    ) -> Laplace:
        """The Gaussian at ``params`` with a given precision matrix (e.g. a
        Gauss-Newton matrix plus a prior's), clipped as in the constructor.

        Example:
            >>> import torch
            >>> x = torch.zeros(2, requires_grad=True)
            >>> Laplace.from_precision(torch.diag(torch.tensor([4.0, 1.0])), [x]).covariance
            tensor([[0.2500, 0.0000],
                    [0.0000, 1.0000]])
        """
        laplace = cls.__new__(cls)
        laplace.params = check_parameters(params)
        laplace.mean = torch.cat([p.detach().reshape(-1) for p in laplace.params])
        laplace._set_precision(precision, min_eigenvalue)
        return laplace

    def _set_precision(self, matrix: Tensor, min_eigenvalue: float | None) -> None:
        matrix = matrix.double()
        self.hessian = 0.5 * (matrix + matrix.T)
        if not bool(torch.isfinite(self.hessian).all()):
            raise ValueError("the Hessian of the loss is not finite at params")
        eigenvalues, eigenvectors = torch.linalg.eigh(self.hessian)
        largest = eigenvalues.max().item()
        if largest <= 0:
            raise ValueError(
                "the Hessian of the loss has no positive eigenvalue at params "
                f"(largest {largest:.3g}): they are not at a minimum of the loss"
            )
        floor = (
            RELATIVE_EIGENVALUE_FLOOR * largest
            if min_eigenvalue is None
            else float(min_eigenvalue)
        )
        if floor <= 0:
            raise ValueError(f"min_eigenvalue must be positive, got {min_eigenvalue}")
        clipped = eigenvalues < floor
        self.num_clipped = int(clipped.sum())
        if self.num_clipped:
            warnings.warn(
                f"the Hessian of the loss is not positive definite at params: "
                f"{self.num_clipped} of {len(eigenvalues)} eigenvalues are below "
                f"{floor:.3g} (smallest {eigenvalues.min().item():.3g}) and were "
                "clipped to it, so the Gaussian is very wide along those directions. "
                "Check that params are at a minimum of the loss.",
                RuntimeWarning,
                stacklevel=3,
            )
        eigenvalues = eigenvalues.clamp(min=floor)
        dtype = self.mean.dtype
        self.eigenvalues = eigenvalues
        self.covariance = ((eigenvectors / eigenvalues) @ eigenvectors.T).to(dtype)
        self._scale = (eigenvectors * eigenvalues.rsqrt()).to(dtype)

    def sample_flat(
        self, n: int | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """Draws of the flat vector: shape ``(D,)``, or ``(n, D)`` for ``n`` draws."""
        shape = (1 if n is None else _count(n), self.mean.numel())
        device = self.mean.device if generator is None else generator.device
        noise = torch.randn(
            shape, dtype=self.mean.dtype, device=device, generator=generator
        )
        noise = noise.to(self.mean.device)
        draws = self.mean + noise @ self._scale.T
        return draws[0] if n is None else draws

    def sample(
        self, n: int | None = None, generator: torch.Generator | None = None
    ) -> list[Tensor]:
        """Draws shaped like ``params`` (each with a leading ``n`` if given)."""
        return self.unflatten(self.sample_flat(n, generator))

    def unflatten(self, flat: Tensor) -> list[Tensor]:
        """Split ``(..., D)`` into tensors shaped like ``params`` (with the same
        leading dimensions)."""
        batch = flat.shape[:-1]
        sizes = [p.numel() for p in self.params]
        return [
            part.reshape(batch + p.shape)
            for part, p in zip(flat.split(sizes, dim=-1), self.params)
        ]


def _count(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer or None, got {n!r}")
    return n


__all__ = ["Laplace", "hessian"]
