"""borch.fastpath.shapes against torch.broadcast_shapes."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from borch.fastpath.shapes import broadcast_shapes

shape = st.lists(st.integers(min_value=0, max_value=3), max_size=4).map(tuple)


@settings(max_examples=100, deadline=None)
@given(st.lists(shape, min_size=1, max_size=4))
def test_broadcast_shapes_agrees_with_torch(shapes):
    try:
        expected = torch.broadcast_shapes(*shapes)
    except RuntimeError:
        with pytest.raises(RuntimeError, match="do not broadcast"):
            broadcast_shapes(*shapes)
    else:
        got = broadcast_shapes(*shapes)
        assert got == expected
        assert isinstance(got, torch.Size)


def test_no_shapes_is_a_scalar():
    assert broadcast_shapes() == torch.Size([]) == torch.broadcast_shapes()
