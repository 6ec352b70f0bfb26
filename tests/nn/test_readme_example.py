"""The convolutional network of the README's borch.nn section runs as written and
trains."""

from __future__ import annotations

import contextlib
import io
import math
import pathlib
import re

import pytest
import torch

import borch

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(scope="module")
def namespace():
    """The names the README's code defines, after running exactly that code (once
    for this module)."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    blocks = [block for block in blocks if "class ConvNet" in block]
    assert len(blocks) == 1
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small convolutions crawl on a shared two-core machine
    try:
        names: dict = {"__name__": "readme"}
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(blocks[0], str(README), "exec"), names)
    finally:
        torch.set_num_threads(threads)
    names["printed"] = printed.getvalue()
    return names


def test_readme_conv_net_trains(namespace):
    losses = namespace["losses"]
    assert all(math.isfinite(value) for value in losses)
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    # The negative ELBO here is mostly the KL of 682 weights from their Normal(0, 1)
    # priors (~4.5 nats each at the start, posterior scale exp(-5)), which falls
    # only as the posterior scales grow; that the data are learned is checked on
    # the prediction: accuracy, and a predictive NLL below half of chance (log 2).
    assert last < 0.75 * first, (first, last)
    assert float(namespace["accuracy"]) >= 0.9
    probabilities, labels = namespace["probabilities"], namespace["labels"]
    nll = -probabilities[torch.arange(len(labels)), labels].log().mean()
    assert float(nll) < 0.5 * math.log(2), float(nll)
    assert namespace["printed"].startswith("loss ")


def test_readme_gradients_reach_every_posterior_parameter(namespace):
    net = namespace["net"]
    parameters = dict(net.named_parameters())
    assert parameters and all(".posterior." in name for name in parameters)
    approximations = [rv for _, rv in borch.named_random_variables(net)]
    # conv1, conv2, classifier: weight and bias each
    assert len(approximations) == 6
    owned = {id(p) for rv in approximations for p in rv.parameters()}
    assert owned == {id(p) for p in parameters.values()}
    for name, parameter in parameters.items():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert bool((parameter.grad != 0).any()), name


def test_readme_new_sample_changes_the_output(namespace):
    net, images = namespace["net"], namespace["images"][:8]
    with torch.no_grad():
        first = net(images)
        again = net(images)
        borch.sample(net)
        second = net(images)
    assert torch.equal(first, again)
    assert not torch.allclose(first, second)
