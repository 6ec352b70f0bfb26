"""Broadcasting of shapes without torch's dispatch cost.

``torch.broadcast_shapes`` goes through torch's reference implementation (~15 µs a
call in torch 2.13); a training step asks for a handful of broadcasts, almost all of
equal shapes, so a plain tuple computation is worth having.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def broadcast_shapes(*shapes: Sequence[int]) -> torch.Size:
    """The shape all ``shapes`` broadcast to, as ``torch.broadcast_shapes``
    (a ``RuntimeError`` naming the shapes where they do not broadcast).

    Example:
        >>> broadcast_shapes((3, 1), (4,), ())
        torch.Size([3, 4])
        >>> broadcast_shapes((2,), (3,))
        Traceback (most recent call last):
        ...
        RuntimeError: shapes (2,) and (3,) do not broadcast
    """
    result = tuple(shapes[0]) if shapes else ()
    for shape in shapes[1:]:
        shape = tuple(shape)
        if shape == result:
            continue
        if len(shape) > len(result):
            result, shape = shape, result
        offset = len(result) - len(shape)
        merged = list(result)
        for i, size in enumerate(shape):
            current = merged[offset + i]
            if size == current or size == 1:
                continue
            if current == 1:
                merged[offset + i] = size
            else:
                raise RuntimeError(
                    f"shapes {tuple(result)} and {shape} do not broadcast"
                )
        result = tuple(merged)
    return torch.Size(result)
