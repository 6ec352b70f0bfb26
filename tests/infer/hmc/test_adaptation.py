"""Warm-up adaptation: dual averaging, Welford variance, Stan's windows, the step size
heuristic."""

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from borch.infer import dual_averaging, find_reasonable_epsilon
from borch.infer.hmc.adaptation import (
    DualAveraging,
    WelfordVariance,
    WindowedAdaptation,
    initial_step_size,
    warmup_windows,
)
from borch.infer.hmc.hamiltonian import initial_state
from borch.infer.hmc.metric import DiagonalMetric


def acceptance(step_size):
    """A smooth decreasing acceptance curve; 0.8 is reached at -log(0.8)."""
    return math.exp(-step_size)


TARGET_STEP = -math.log(0.8)


def test_dual_averaging_finds_the_step_size_of_the_target_acceptance():
    adapt = DualAveraging(1.0, target_accept=0.8)
    for _ in range(2000):
        adapt.update(acceptance(adapt.step_size))
    assert adapt.final_step_size == pytest.approx(TARGET_STEP, rel=0.02)


def test_dual_averaging_converges_under_noisy_acceptance():
    """Acceptance statistics with noise (sd 0.1): the averaged step size still lands
    within 10% of the target's (the noise averages out at rate 1/sqrt(iterations))."""
    rng = np.random.default_rng(0)
    adapt = DualAveraging(0.01, target_accept=0.8)
    for _ in range(4000):
        noisy = acceptance(adapt.step_size) + rng.normal(0, 0.1)
        adapt.update(min(1.0, max(0.0, noisy)))
    assert adapt.final_step_size == pytest.approx(TARGET_STEP, rel=0.1)


def test_the_documented_dual_averaging_loop_converges():
    """The original's loop (eps0 from the heuristic, m from 1, eps_bar after warm-up):
    the averaged step size approaches the target's, the relative error falling from
    under 4% after 1000 iterations to under 1% after 10000."""
    eps0, eps_bar, h_bar = 4.0, 1.0, 0.0
    eps = eps0
    errors = {}
    for m in range(1, 10001):
        eps, eps_bar, h_bar = dual_averaging(acceptance(eps), m, eps0, eps_bar, h_bar)
        if m in (1000, 10000):
            errors[m] = abs(eps_bar / TARGET_STEP - 1)
    assert errors[1000] < 0.04
    assert errors[10000] < 0.01


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"m": 0}, "m "),
        ({"m": 1.5}, "m "),
        ({"accept_prob": 1.5}, "accept_prob"),
        ({"initial_epsilon": 0.0}, "positive"),
        ({"epsilon_bar": -1.0}, "positive"),
    ],
)
def test_dual_averaging_rejects_bad_input(kwargs, match):
    arguments = {
        "accept_prob": 0.5,
        "m": 1,
        "initial_epsilon": 1.0,
        "epsilon_bar": 1.0,
        "h_bar": 0.0,
    }
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=match):
        dual_averaging(**arguments)


@given(
    hnp.arrays(
        np.float64,
        st.tuples(st.integers(2, 40), st.integers(1, 5)),
        elements=st.floats(-1e3, 1e3, allow_nan=False),
    )
)
def test_welford_matches_numpy(data):
    welford = WelfordVariance(data.shape[1])
    for row in data:
        welford.update(row)
    scale = max(1.0, np.abs(data).max())
    np.testing.assert_allclose(welford.mean, data.mean(0), atol=1e-9 * scale)
    np.testing.assert_allclose(
        welford.variance, data.var(0, ddof=1), rtol=1e-7, atol=1e-9 * scale**2
    )
    assert welford.count == len(data)


def test_welford_regularisation_is_stans():
    data = np.random.default_rng(1).normal(size=(30, 3))
    welford = WelfordVariance(3)
    for row in data:
        welford.update(row)
    expected = 30 / 35 * data.var(0, ddof=1) + 1e-3 * 5 / 35
    np.testing.assert_allclose(welford.regularized_variance(), expected)
    welford.reset()
    assert welford.count == 0
    with pytest.raises(ValueError, match="2 or more"):
        _ = welford.variance


@pytest.mark.parametrize(
    ("warmup", "expected"),
    [
        (1000, [(75, 100), (100, 150), (150, 250), (250, 450), (450, 950)]),
        (500, [(75, 100), (100, 150), (150, 250), (250, 450)]),
        (150, [(75, 100)]),
        (100, [(15, 90)]),
        (19, []),
        (0, []),
    ],
)
def test_warmup_windows_follow_stan(warmup, expected):
    assert warmup_windows(warmup) == expected


@pytest.mark.parametrize("warmup", [20, 21, 149, 150, 151, 200, 333, 1001, 2500, 10000])
def test_warmup_windows_tile_the_slow_phase(warmup):
    """Contiguous windows from the initial buffer to the final buffer, each at least
    twice the previous one except the stretched last."""
    windows = warmup_windows(warmup)
    assert windows
    for (_, end), (start, _) in itertools.pairwise(windows):
        assert end == start
    sizes = [end - start for start, end in windows]
    for before, after in itertools.pairwise(sizes[:-1]):
        assert after == 2 * before
    if len(sizes) > 1:
        assert sizes[-1] >= sizes[-2]
    assert windows[-1][1] <= warmup
    init, term = windows[0][0], warmup - windows[-1][1]
    assert (init, term) in {(75, 50), (int(0.15 * warmup), int(0.1 * warmup))}


def test_windowed_adaptation_estimates_the_variance_per_window():
    """At each window's end the inverse mass is the regularised variance of the
    positions seen in that window, and the step size restarts."""
    rng = np.random.default_rng(2)
    scales = np.array([0.1, 1.0, 10.0])
    adaptation = WindowedAdaptation(200, 3, step_size=0.5)
    positions = rng.normal(size=(200, 3)) * scales
    changes = []
    for iteration, position in enumerate(positions):
        if adaptation.update(iteration, position, 0.8):
            changes.append(iteration + 1)
            start, end = next(w for w in adaptation.windows if w[1] == iteration + 1)
            window = positions[start:end]
            n = len(window)
            expected = n / (n + 5) * window.var(0, ddof=1) + 1e-3 * 5 / (n + 5)
            np.testing.assert_allclose(adaptation.metric.inverse_mass, expected)
            adaptation.restart(0.5)
    assert changes == [end for _, end in warmup_windows(200)]
    assert adaptation.step_size == adaptation.dual_averaging.final_step_size


def gaussian(scale):
    def potential(q):
        return 0.5 * float((q / scale) @ (q / scale)), q / scale**2

    return potential


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
def test_initial_step_size_scales_with_the_posterior(scale):
    """The heuristic's step size is within a factor 8 of the Gaussian's scale (the
    one-step acceptance crosses 1/2 at a step size of order the scale)."""
    potential = gaussian(scale)
    state = initial_state(np.full(3, scale), potential)
    metric = DiagonalMetric(np.ones(3))
    step = initial_step_size(state, potential, metric, np.random.default_rng(0))
    assert scale / 8 < step < 8 * scale


def test_initial_step_size_errors_where_no_step_is_finite():
    def island(q):
        finite = np.abs(q).max() == 0
        return (0.0 if finite else math.inf), np.zeros_like(q)

    state = initial_state(np.zeros(2), island)
    metric = DiagonalMetric(np.ones(2))
    with pytest.raises(ValueError, match="no step size gives a finite energy"):
        initial_step_size(state, island, metric, np.random.default_rng(0))


def test_find_reasonable_epsilon_keeps_the_parameters():
    x = torch.tensor([0.5, -0.5], dtype=torch.float64, requires_grad=True)
    eps, eps_bar, h_bar = find_reasonable_epsilon([x], lambda: (x**2).sum() * 1e4)
    assert (eps_bar, h_bar) == (1.0, 0.0)
    assert 1e-3 < eps < 1e-1
    assert x.tolist() == [0.5, -0.5]
