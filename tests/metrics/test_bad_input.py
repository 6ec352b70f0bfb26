"""Bad input raises ValueError/TypeError naming the argument (hypothesis)."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from borch import metrics

shapes = st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple)


def different_shapes():
    return st.tuples(shapes, shapes).filter(lambda pair: pair[0] != pair[1])


PAIRED = [
    ("accuracy", lambda s: torch.zeros(s, dtype=torch.long), "predictions"),
    ("confusion_matrix", lambda s: torch.zeros(s, dtype=torch.long), "predictions"),
    ("mean_squared_error", torch.zeros, "predictions"),
    ("r2_score", torch.zeros, "predictions"),
    ("binary_roc_auc", torch.zeros, "scores"),
]


@pytest.mark.parametrize(("name", "make", "argument"), PAIRED)
@given(pair=different_shapes())
def test_mismatched_shapes(name, make, argument, pair):
    first, second = pair
    targets = torch.arange(torch.Size(second).numel()).reshape(second) % 2
    with pytest.raises(ValueError, match=f"{argument}.*targets"):
        getattr(metrics, name)(make(first), targets)


@given(pair=different_shapes(), classes=st.integers(2, 4))
def test_mismatched_shapes_with_classes(pair, classes):
    first, second = pair
    probs = torch.full((*first, classes), 1.0 / classes)
    targets = torch.zeros(second, dtype=torch.long)
    with pytest.raises(ValueError, match="targets"):
        metrics.accuracy_logit(probs, targets)
    if len(first) == 1:
        with pytest.raises(ValueError, match="targets"):
            metrics.expected_calibration_error(probs, targets)
    with pytest.raises(ValueError, match="targets"):
        metrics.interval_coverage(torch.zeros(3, *first), torch.zeros(second))


outside = st.one_of(
    st.floats(1.0001, 1e6), st.floats(-1e6, -0.0001), st.sampled_from([float("nan")])
)


@given(bad=outside, position=st.integers(0, 5))
def test_probabilities_outside_the_unit_interval(bad, position):
    probs = torch.full((2, 3, 2), 0.5)
    probs.view(-1)[position] = bad
    for function in (
        metrics.predictive_entropy,
        metrics.aleatoric_uncertainty,
        metrics.epistemic_uncertainty,
    ):
        with pytest.raises(ValueError, match="probs"):
            function(probs)
    with pytest.raises(ValueError, match="probs"):
        metrics.expected_calibration_error(probs[0], torch.zeros(3, dtype=torch.long))


def test_probabilities_must_sum_to_one():
    with pytest.raises(ValueError, match="probs.*sum to 1"):
        metrics.predictive_entropy(torch.full((2, 3, 2), 0.2))


EMPTY_CALLS = [
    lambda e: metrics.accuracy(e.long(), e.long()),
    lambda e: metrics.accuracy_logit(e.reshape(0, 2), e.long()),
    lambda e: metrics.confusion_matrix(e.long(), e.long()),
    lambda e: metrics.binary_roc_auc(e, e.long()),
    lambda e: metrics.mean_squared_error(e, e),
    lambda e: metrics.r2_score(e, e),
    lambda e: metrics.log_predictive_density(e),
    lambda e: metrics.interval_coverage(e.reshape(0, 3), torch.zeros(3)),
    lambda e: metrics.predictive_entropy(e.reshape(0, 2, 2)),
    lambda e: metrics.expected_calibration_error(e.reshape(0, 2), e.long()),
    lambda e: metrics.regression_uncertainty(e, e),
]


@pytest.mark.parametrize("call", EMPTY_CALLS)
def test_empty_inputs(call):
    with pytest.raises(ValueError, match="empty"):
        call(torch.zeros(0))


@given(
    value=st.one_of(st.text(max_size=3), st.none(), st.just(object())),
)
def test_non_tensors(value):
    with pytest.raises(TypeError, match="predictions"):
        metrics.mean_squared_error(value, torch.zeros(2))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda: metrics.accuracy(torch.tensor([0.5]), torch.tensor([0])),
            "predictions",
        ),
        (
            lambda: metrics.accuracy(torch.tensor([-1]), torch.tensor([0])),
            "predictions",
        ),
        (
            lambda: metrics.confusion_matrix(torch.tensor([3]), torch.tensor([0]), 2),
            "predictions",
        ),
        (lambda: metrics.binary_roc_auc(torch.rand(3), torch.ones(3)), "targets"),
        (lambda: metrics.r2_score(torch.rand(3), torch.ones(3)), "targets"),
        (
            lambda: metrics.interval_coverage(torch.rand(3, 2), torch.rand(2), 1.5),
            "level",
        ),
        (
            lambda: metrics.expected_calibration_error(
                torch.full((2, 2), 0.5), torch.zeros(2), n_bins=0
            ),
            "n_bins",
        ),
        (
            lambda: metrics.regression_uncertainty(torch.zeros(3, 2), -torch.ones(2)),
            "scales",
        ),
        (
            lambda: metrics.mean_squared_error(
                torch.tensor([float("nan")]), torch.zeros(1)
            ),
            "predictions",
        ),
    ],
)
def test_other_bad_values(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda: metrics.confusion_matrix(torch.tensor([0]), torch.tensor([0]), 0),
            ValueError,
            "num_classes must be a positive int or None, got 0",
        ),
        (
            lambda: metrics.confusion_matrix(torch.tensor([0]), torch.tensor([0]), 2.0),
            TypeError,
            r"num_classes must be a positive int or None, got 2\.0",
        ),
        (
            lambda: metrics.expected_calibration_error(
                torch.full((2, 2), 0.5), torch.zeros(2), n_bins=True
            ),
            TypeError,
            "n_bins must be a positive int, got True",
        ),
    ],
)
def test_counts_are_checked(call, error, match):
    with pytest.raises(error, match=match):
        call()
