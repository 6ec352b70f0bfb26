"""Shared test configuration: a fixed seed per test, hypothesis settings, devices."""

import random

import numpy as np
import pytest
import torch
from hypothesis import settings

settings.register_profile("borch", deadline=None, derandomize=True, max_examples=60)
settings.load_profile("borch")

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    return


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)
