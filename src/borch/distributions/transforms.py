"""Transforms between unconstrained space and a support, without identity steps.

torch registers one transform for every ``GreaterThan`` constraint, ``exp`` followed
by ``x + lower_bound``; for the commonest support, the positive half-line, the second
step is ``0 + 1 * x``. Learned scales pass through it on every step, each time an
operation forward and another backward, for nothing. :func:`simplified` drops such
identity steps; values, Jacobians and inverses are unchanged.
"""

from __future__ import annotations

from torch.distributions import constraints
from torch.distributions import transforms as torch_transforms
from torch.distributions.constraint_registry import biject_to, transform_to

__all__ = ["simplified", "unconstraining_transform"]


def unconstraining_transform(
    support: constraints.Constraint, bijective: bool = False
) -> torch_transforms.Transform:
    """``biject_to(support)`` where registered (it has a Jacobian), else, unless
    ``bijective``, ``transform_to(support)``; identity steps removed.
    ``NotImplementedError`` if torch has neither.

    Example:
        >>> unconstraining_transform(constraints.positive)
        ExpTransform()
    """
    registries = (biject_to,) if bijective else (biject_to, transform_to)
    for registry in registries:
        try:
            return simplified(registry(support))
        except NotImplementedError:
            continue
    kind = "bijective transform" if bijective else "transform"
    raise NotImplementedError(f"no {kind} onto {support} is registered")


def simplified(transform: torch_transforms.Transform) -> torch_transforms.Transform:
    """``transform`` without the parts of a composition that map every value to itself.

    Example:
        >>> simplified(transform_to(constraints.positive))
        ExpTransform()
        >>> simplified(transform_to(constraints.greater_than(1.0)))
        ComposeTransform(
            ExpTransform(),
            AffineTransform()
        )
    """
    if type(transform) is not torch_transforms.ComposeTransform:
        return transform
    parts = [simplified(part) for part in transform.parts]
    kept = [part for part in parts if not _is_identity_affine(part)]
    if len(kept) == len(transform.parts) and all(
        new is old for new, old in zip(parts, transform.parts)
    ):
        return transform
    if len(kept) == 1 and _same_event_dims(kept[0], transform):
        return kept[0]
    if not kept:
        return transform
    return torch_transforms.ComposeTransform(kept, cache_size=transform._cache_size)


def _is_identity_affine(transform: torch_transforms.Transform) -> bool:
    if type(transform) is not torch_transforms.AffineTransform or transform.event_dim:
        return False
    # Only number bounds: a tensor bound would need a look at its values, which
    # costs a synchronisation and cannot be traced.
    return _is_number(transform.loc, 0) and _is_number(transform.scale, 1)


def _is_number(value, number: int) -> bool:
    return isinstance(value, (int, float)) and value == number


def _same_event_dims(part, whole) -> bool:
    return (
        part.domain.event_dim == whole.domain.event_dim
        and part.codomain.event_dim == whole.codomain.event_dim
    )
