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

import contextlib
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from borch.infer.hmc.model_conversion import point_mass_of
from borch.infer.hmc.potential import check_parameters
from borch.sites import sites

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
        matrix = hessian(loss_closure, self.params).double()
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
                stacklevel=2,
            )
        eigenvalues = eigenvalues.clamp(min=floor)
        dtype = self.mean.dtype
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


class LaplacePosterior:
    """A Laplace approximation over a model's latent point masses; see
    :func:`laplace_posterior`.

    Attributes:
        laplace: the :class:`Laplace` approximation of the unconstrained values.
        names: the latent variables, in the order of the flat vector (the names
            :func:`borch.condition` and MCMC samples use).
    """

    def __init__(self, model: nn.Module, laplace: Laplace, latents: list) -> None:
        self.model = model
        self.laplace = laplace
        self.names = [name for name, _ in latents]
        self._approximations = [approximation for _, approximation in latents]

    def _constrained(self, flat: Tensor) -> dict[str, Tensor]:
        values = {}
        with torch.no_grad():
            parts = self.laplace.unflatten(flat)
            for name, approximation, part in zip(
                self.names, self._approximations, parts
            ):
                values[name] = approximation.distribution.transform(part)
        return values

    def samples(
        self, n: int, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """``{name: (n, *shape)}`` draws of the latent values; the model is unchanged."""
        return self._constrained(self.laplace.sample_flat(_count(n), generator))

    def draw(self, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Set the model's latent variables to one joint draw; return their values.

        The point masses' parameters are overwritten with the draw in unconstrained
        space, so the next run of the model uses it; :meth:`restore` returns them to
        the mode.
        """
        flat = self.laplace.sample_flat(None, generator)
        self._write(flat)
        return self._constrained(flat)

    def restore(self) -> None:
        """Put the point masses back at the mode the approximation was built at."""
        self._write(self.laplace.mean)

    @contextlib.contextmanager
    def drawn(self, generator: torch.Generator | None = None) -> Iterator[dict]:
        """A ``with`` block in which the model uses one joint draw (restored after)."""
        try:
            yield self.draw(generator)
        finally:
            self.restore()

    def _write(self, flat: Tensor) -> None:
        with torch.no_grad():
            for param, value in zip(self.laplace.params, self.laplace.unflatten(flat)):
                param.copy_(value)


def laplace_posterior(
    model: nn.Module,
    loss_closure: Callable[[], Tensor],
    min_eigenvalue: float | None = None,
) -> LaplacePosterior:
    """A Laplace approximation of a model fitted by MAP.

    Args:
        model: a :class:`borch.Module` whose latent variables have
            :class:`borch.posterior.PointMass` approximations, at the minimum of
            ``loss_closure`` (e.g. after LBFGS on ``vi_loss``).
        loss_closure: runs the model and returns the loss that was minimised.
        min_eigenvalue: see :class:`Laplace`.

    Returns:
        A :class:`LaplacePosterior`: a joint Gaussian over the point masses'
        unconstrained values (the Hessian is taken with respect to them), with
        ``draw()`` / ``drawn()`` to make the model's latent variables follow it (each
        value mapped through its point mass's transform onto the support) and
        ``samples(n)`` for draws by name.

    Example:
        >>> import torch
        >>> import borch
        >>> from borch import distributions as dist
        >>> torch.manual_seed(0)
        <torch._C.Generator object at ...>
        >>> class Mean(borch.Module):
        ...     def forward(self, y):
        ...         self.mu = dist.Normal(0.0, 10.0)
        ...         self.y = dist.Normal(self.mu.expand(y.shape), 1.0)
        >>> y = torch.tensor([1.0, 2.0, 3.0, 2.0])
        >>> model = Mean(posterior=borch.posterior.PointMass())
        >>> model.observe(y=y)
        >>> def loss_closure():
        ...     borch.sample(model)
        ...     model(y)
        ...     return borch.infer.vi_loss(**borch.pq_to_infer(model))
        >>> _ = loss_closure()
        >>> optimizer = torch.optim.LBFGS(model.parameters())
        >>> def step():
        ...     optimizer.zero_grad()
        ...     loss = loss_closure()
        ...     loss.backward()
        ...     return loss
        >>> _ = optimizer.step(step)
        >>> approx = borch.infer.laplace_posterior(model, loss_closure)
        >>> approx.laplace.covariance  # exact: 1 / (4 + 1/100)
        tensor([[0.2494]])
        >>> with approx.drawn():
        ...     prediction = model(y)  # uses one draw of mu
        >>> approx.samples(1000)["mu"].shape
        torch.Size([1000])
    """
    loss_closure()
    latents = []
    for site in sites(model):
        if site.observed:
            continue
        point_mass_of(site)
        latents.append((site.name, site.approximation))
    if not latents:
        raise ValueError(
            "the model used no latent random variables in loss_closure(): there is "
            "nothing to approximate"
        )
    params = [approximation.unconstrained_value for _, approximation in latents]
    laplace = Laplace(loss_closure, params, min_eigenvalue)
    return LaplacePosterior(model, laplace, latents)


__all__ = ["Laplace", "LaplacePosterior", "hessian", "laplace_posterior"]
