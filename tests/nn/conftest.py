"""Shared setup of the borch.nn tests."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """The layers here are tiny: on a busy two-core machine torch's second thread
    only waits (a conv test measured 22 s on two threads, 1.3 s on one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
