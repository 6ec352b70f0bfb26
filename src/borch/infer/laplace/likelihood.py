"""The curvature of one likelihood with respect to its own parameters.

An observed site's distribution (``Categorical(logits=...)``, ``Normal(loc, scale)``,
``Poisson(rate)``, ...) is a function of the network only through its parameter
tensors: its *output parameters*. The generalised Gauss-Newton matrix of the network
is ``J^T F J`` with ``J`` the Jacobian of the output parameters and ``F`` the Fisher
information of the likelihood with respect to them. ``F`` is the Hessian, at
``q = p``, of ``KL(p || q)`` in ``q``'s parameters, which torch knows in closed form
for its families: so every family with a registered KL gets its exact Fisher without
a formula written here. Others fall back to the Hessian of the negative log density
at the observed value, with negative eigenvalues set to zero.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor
from torch.distributions import Distribution, biject_to, kl_divergence
from torch.distributions.transforms import Transform, identity_transform

from borch.sites import Site


class OutputParameters(NamedTuple):
    """The tensors of a likelihood that depend on the model's latent values.

    Attributes:
        name: the site's name.
        distribution: the site's torch distribution.
        varying: ``{argument name: tensor}`` for the arguments that carry gradients,
            each shaped ``batch_shape + its own event shape``.
        constant: the other arguments.
        weight: ``(B,)`` the factor of each element's log density (scale and mask).
    """

    name: str
    distribution: Distribution
    varying: dict[str, Tensor]
    constant: dict[str, Tensor]
    weight: Tensor

    @property
    def count(self) -> int:
        """``B``, the number of independent elements of the likelihood."""
        return self.weight.numel()

    def flat(self) -> Tensor:
        """``(B, K)``: the varying arguments of each element side by side."""
        count = self.count
        return torch.cat([v.reshape(count, -1) for v in self.varying.values()], 1)

    def split(self, flat: Tensor) -> dict[str, Tensor]:
        """Inverse of :meth:`flat`, keeping leading sample dimensions."""
        lead = flat.shape[:-2]
        count = self.count
        sizes = [v.reshape(count, -1).shape[1] for v in self.varying.values()]
        parts = flat.split(sizes, dim=-1)
        return {
            key: part.reshape(lead + value.shape)
            for (key, value), part in zip(self.varying.items(), parts)
        }

    def unconstrained_flat(self) -> Tensor:
        """``(B, K)``: :meth:`flat` with each argument mapped off its constraint
        (``log`` of a scale or rate; logits as they are), the space the
        linearised predictive is Gaussian in, so its draws stay on the support."""
        count = self.count
        return torch.cat(
            [
                _bijection(self.distribution, key).inv(value).reshape(count, -1)
                for key, value in self.varying.items()
            ],
            1,
        )

    def constrained(self, flat: Tensor) -> dict[str, Tensor]:
        """Inverse of :meth:`unconstrained_flat` (with leading sample dimensions)."""
        return {
            key: _bijection(self.distribution, key)(value)
            for key, value in self.split(flat).items()
        }

    def rebuild(self, varying: dict[str, Tensor]) -> Distribution:
        """The same family with ``varying`` replacing the varying arguments (which
        may carry extra leading dimensions)."""
        if not varying:
            return self.distribution
        key, value = next(iter(varying.items()))
        lead = value.shape[: value.dim() - self.varying[key].dim()]
        constant = {
            key: value.expand(lead + value.shape)
            for key, value in self.constant.items()
        }
        return type(self.distribution)(**varying, **constant, validate_args=False)


def _bijection(distribution: Distribution, key: str) -> Transform:
    try:
        return biject_to(distribution.arg_constraints[key])
    except NotImplementedError:  # a dependent constraint: no fixed bijection
        return identity_transform


def output_parameters(site: Site) -> OutputParameters:
    """The output parameters of an observed site's likelihood.

    Example:
        >>> import torch
        >>> import borch
        >>> from borch import distributions as dist
        >>> class Model(borch.Module):
        ...     def forward(self, x):
        ...         self.y = dist.Normal(x * 2.0, 1.0)
        >>> model = Model()
        >>> model.observe(y=torch.zeros(3))
        >>> model(torch.ones(3, requires_grad=True))
        >>> parameters = output_parameters(borch.sites(model)[0])
        >>> list(parameters.varying), list(parameters.constant), parameters.count
        (['loc'], ['scale'], 3)
    """
    distribution = site.prior.distribution
    arguments = _arguments(distribution, site.name)
    varying = {k: v for k, v in arguments.items() if v.requires_grad}
    constant = {k: v.detach() for k, v in arguments.items() if not v.requires_grad}
    batch_shape = distribution.batch_shape
    weight = torch.ones(batch_shape, dtype=_dtype(arguments), device=_device(arguments))
    weight = weight * site.scale
    if site.mask is not None:
        weight = weight * site.mask
    return OutputParameters(
        site.name, distribution, varying, constant, weight.reshape(-1).detach()
    )


def _arguments(distribution: Distribution, name: str) -> dict[str, Tensor]:
    """The tensors the distribution was built from, once each (``probs`` and
    ``logits`` are two views of one parameter: the one given is used)."""
    stored = vars(distribution)
    given = stored.get("_param")
    arguments = {}
    for key in distribution.arg_constraints:
        value = stored.get(key)
        if not isinstance(value, Tensor):
            continue
        if given is not None and value is not given:
            continue
        arguments[key] = value
    if not arguments:
        raise TypeError(
            f"the likelihood of '{name}' ({type(distribution).__name__}) keeps no "
            "tensor arguments that Laplace can differentiate through"
        )
    batch = len(distribution.batch_shape)
    return {
        key: value.expand(distribution.batch_shape + value.shape[batch:])
        if value.dim() >= batch
        else value.expand(distribution.batch_shape)
        for key, value in arguments.items()
    }


def _dtype(arguments: dict[str, Tensor]) -> torch.dtype:
    dtypes = [v.dtype for v in arguments.values() if v.is_floating_point()]
    return dtypes[0] if dtypes else torch.get_default_dtype()


def _device(arguments: dict[str, Tensor]) -> torch.device:
    return next(iter(arguments.values())).device


def fisher(parameters: OutputParameters, value: Tensor) -> Tensor:
    """``(B, K, K)``: the Fisher information of each element with respect to its
    varying output parameters, times its weight.

    Example:
        >>> import torch
        >>> import borch
        >>> from borch import distributions as dist
        >>> class Model(borch.Module):
        ...     def forward(self, loc, scale):
        ...         self.y = dist.Normal(loc, scale)
        >>> model = Model()
        >>> model.observe(y=torch.zeros(1))
        >>> model(torch.zeros(1, requires_grad=True), torch.full((1,), 2.0, requires_grad=True))
        >>> site = borch.sites(model)[0]
        >>> fisher(output_parameters(site), site.value).float()  # diag(1/s^2, 2/s^2)
        tensor([[[0.2500, 0.0000],
                 [0.0000, 0.5000]]])
    """
    at = parameters.flat().detach()
    count, size = at.shape
    moving = at.clone().requires_grad_(True)
    fixed = parameters.rebuild(parameters.split(at))
    moved = parameters.rebuild(parameters.split(moving))
    try:
        divergence = kl_divergence(fixed, moved)
        value = None
    except NotImplementedError:
        divergence = -moved.log_prob(value.detach())
    total = divergence.sum()
    (gradient,) = torch.autograd.grad(total, moving, create_graph=True)
    columns = []
    for k in range(size):
        (column,) = torch.autograd.grad(gradient[:, k].sum(), moving, retain_graph=True)
        columns.append(column)
    matrix = torch.stack(columns, dim=-1).double()
    matrix = 0.5 * (matrix + matrix.transpose(-1, -2))
    if value is not None:  # an observed Hessian: keep its positive part
        eigenvalues, vectors = torch.linalg.eigh(matrix)
        matrix = (vectors * eigenvalues.clamp(min=0).unsqueeze(-2)) @ vectors.mT
    return matrix * parameters.weight.double().reshape(count, 1, 1)


def fisher_root(matrix: Tensor) -> Tensor:
    """``(B, K, K)`` factors ``L`` with ``L L^T`` the positive semi-definite
    ``matrix`` (its columns are the directions backpropagated)."""
    eigenvalues, vectors = torch.linalg.eigh(matrix)
    return vectors * eigenvalues.clamp(min=0).sqrt().unsqueeze(-2)


__all__ = ["OutputParameters", "fisher", "fisher_root", "output_parameters"]
