"""The guards around the traced potential: the torch version it was tested on, the
dtype-derived agreement test, and the warm-up re-checks that move a chain whose trace
is wrong onto the model itself."""

import math
import re

import numpy as np
import pytest
import torch

from borch.infer import mcmc
from borch.infer.hmc import runner
from borch.infer.hmc.runner import check_iterations
from borch.infer.hmc.traced import tracing
from borch.infer.hmc.traced.tracing import (
    UntestedTorchError,
    check_torch_version,
    disagreement,
    tolerance,
)
from tests.infer.hmc.test_kernels import (
    POSTERIOR_MEAN,
    POSTERIOR_VARIANCE,
    Y,
    known_mean,
)
from tests.infer.mcmc_stats import assert_mean_within_mcse

SHORT = {"num_samples": 40, "warmup": 30, "progress": False}


def test_the_tested_versions_include_the_installed_torch():
    check_torch_version()  # the test suite runs on a tested version


@pytest.mark.parametrize("version", ["2.2.0", "2.12.1+cu121", "2.14.0", "3.0", "dev"])
def test_other_torch_versions_are_untested(version):
    with pytest.raises(UntestedTorchError, match=f"not on torch {re.escape(version)}"):
        check_torch_version(version)


@pytest.mark.parametrize("version", ["2.13.0", "2.13.1+cpu", "2.13.0a0+git1234"])
def test_the_tested_versions_pass(version):
    check_torch_version(version)


def test_an_untested_torch_is_not_traced(monkeypatch):
    """On another torch version the runner warns, naming it, and runs the model: the
    very draws of trace=False."""
    monkeypatch.setattr(torch, "__version__", "2.2.0")
    with pytest.warns(UserWarning, match=r"not on torch 2\.2\.0.*trace=False"):
        result = mcmc(known_mean(), Y, chains=2, seed=1, parallel=False, **SHORT)
    assert not result.traced
    assert result.traced_chains == [False, False]
    eager = mcmc(
        known_mean(), Y, chains=2, seed=1, parallel=False, trace=False, **SHORT
    )
    assert torch.equal(result.samples["mu"], eager.samples["mu"])


def test_widening_the_tested_range_is_one_edit(monkeypatch):
    monkeypatch.setattr(tracing, "TESTED_TORCH_VERSIONS", ((2, 2), (2, 13)))
    check_torch_version("2.5.1")


@pytest.mark.parametrize("dtype", [np.float32, np.float64, torch.float32])
def test_rounding_error_agrees_and_real_differences_do_not(dtype):
    eps = float(np.finfo(np.float32 if dtype is torch.float32 else dtype).eps)
    grad = np.array([3.0, -40.0, 0.5])
    energy = 120.0
    close = 50 * eps
    assert (
        disagreement(energy * (1 + close), grad * (1 + close), energy, grad, dtype)
        is None
    )
    far = 2 * tolerance(dtype)
    assert "energy" in disagreement(energy * (1 + far), grad, energy, grad, dtype)
    shifted = grad + np.array([0.0, 0.0, 40.0 * far])
    assert "gradient" in disagreement(energy, shifted, energy, grad, dtype)
    nan = np.array([np.nan, 0.0, 0.0])
    assert "gradient" in disagreement(energy, nan, energy, grad, dtype)


def test_non_finite_energies_agree_only_with_each_other():
    grad = np.zeros(2)
    assert disagreement(math.inf, grad, math.inf, grad, np.float32) is None
    assert disagreement(1.0, grad, math.inf, grad, np.float32) is not None
    assert disagreement(math.inf, grad, 1.0, grad, np.float32) is not None


def test_the_check_iterations():
    assert sorted(check_iterations(1000)) == [0, 99, 149, 249, 449, 949, 999]
    assert sorted(check_iterations(10)) == [0, 9]
    assert check_iterations(1) == {0}
    assert check_iterations(0) == set()


def wrong_trace(monkeypatch):
    """Make the runner's traced potential pass its check at the initial points and
    then return the potential of another density (mean 10, sd 0.3)."""
    real = runner.traced_potential

    def traced_potential(*args, **kwargs):
        right = real(*args, **kwargs)

        def wrong(q):
            energy, grad = right(q)
            offset = q - 10.0
            return energy + 5.0 * float(offset @ offset), grad + 10.0 * offset

        return wrong

    monkeypatch.setattr(runner, "traced_potential", traced_potential)


@pytest.mark.parametrize("parallel", [False, True])
def test_a_wrong_trace_moves_the_chain_onto_the_model(monkeypatch, parallel):
    """The warm-up check finds the difference; each chain warns (from the parent
    process also when it ran in a worker) and samples the model itself: the
    conjugate posterior's mean and variance within 4 MCSE, where the wrong trace's
    posterior is centred near 10."""
    wrong_trace(monkeypatch)
    with pytest.warns(RuntimeWarning) as caught:
        result = mcmc(
            known_mean(), Y, chains=2, seed=2, num_samples=800, warmup=200,
            parallel=parallel, progress=False,
        )  # fmt: skip
    assert_every_chain_switched(caught, chains=2)
    assert not result.traced
    assert result.traced_chains == [False, False]
    draws = result.samples["mu"].double().numpy()
    assert_mean_within_mcse(draws, POSTERIOR_MEAN)
    assert_mean_within_mcse((draws - POSTERIOR_MEAN) ** 2, POSTERIOR_VARIANCE)


def assert_every_chain_switched(caught, chains):
    """Every chain warned that its trace differs and it moved onto the model."""
    messages = [str(w.message) for w in caught]
    for chain in range(chains):
        assert any(
            m.startswith(f"chain {chain}: the traced potential differs")
            for m in messages
        ), messages
    assert all("switched to evaluating the model eagerly" in m for m in messages)


def test_a_right_trace_is_kept():
    result = mcmc(known_mean(), Y, chains=2, seed=2, parallel=False, **SHORT)
    assert result.traced
    assert result.traced_chains == [True, True]
