"""borch.metrics agrees with scikit-learn and independent references."""

import itertools

import numpy as np
import pytest
import torch
from sklearn import metrics as sk

from borch import metrics

SHAPES = [(1,), (7,), (50,), (4, 9)]
CLASSES = [2, 3, 10]


def labels(shape, classes, generator):
    return torch.randint(0, classes, shape, generator=generator)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("classes", CLASSES)
def test_accuracy_and_confusion_matrix(shape, classes):
    generator = torch.Generator().manual_seed(classes)
    predictions, targets = (labels(shape, classes, generator) for _ in range(2))
    flat_p, flat_t = predictions.flatten().numpy(), targets.flatten().numpy()
    assert metrics.accuracy(predictions, targets).item() == pytest.approx(
        sk.accuracy_score(flat_t, flat_p)
    )
    np.testing.assert_array_equal(
        metrics.confusion_matrix(predictions, targets, num_classes=classes).numpy(),
        sk.confusion_matrix(flat_t, flat_p, labels=list(range(classes))),
    )


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("classes", CLASSES)
def test_accuracy_logit(shape, classes):
    generator = torch.Generator().manual_seed(classes)
    logits = torch.randn(*shape, classes, generator=generator)
    targets = labels(shape, classes, generator)
    expected = sk.accuracy_score(
        targets.flatten().numpy(), logits.argmax(-1).flatten().numpy()
    )
    assert metrics.accuracy_logit(logits, targets).item() == pytest.approx(expected)


@pytest.mark.parametrize("n", [4, 30, 500])
@pytest.mark.parametrize("ties", [False, True])
def test_binary_roc_auc(n, ties):
    generator = torch.Generator().manual_seed(n)
    targets = torch.arange(n) % 2
    scores = torch.rand(n, generator=generator)
    if ties:
        scores = (scores * 4).round() / 4
    expected = sk.roc_auc_score(targets.numpy(), scores.numpy())
    assert metrics.binary_roc_auc(scores, targets).item() == pytest.approx(
        expected, abs=1e-6
    )
    # raw scores (logits) rank the same way
    logits = torch.logit(scores.clamp(0.01, 0.99))
    assert metrics.binary_roc_auc(logits * 10, targets).item() == pytest.approx(
        sk.roc_auc_score(targets.numpy(), logits.numpy()), abs=1e-6
    )


@pytest.mark.parametrize("shape", SHAPES[1:])
def test_regression_metrics(shape):
    generator = torch.Generator().manual_seed(len(shape))
    targets = torch.randn(shape, generator=generator, dtype=torch.float64)
    predictions = targets + 0.5 * torch.randn(
        shape, generator=generator, dtype=torch.float64
    )
    flat_p, flat_t = predictions.flatten().numpy(), targets.flatten().numpy()
    assert metrics.mean_squared_error(predictions, targets).item() == pytest.approx(
        sk.mean_squared_error(flat_t, flat_p), rel=1e-12
    )
    assert metrics.r2_score(predictions, targets).item() == pytest.approx(
        sk.r2_score(flat_t, flat_p), rel=1e-12
    )


def reference_ece(probs, targets, n_bins):
    """Guo et al.'s ECE with bins (k/n, (k+1)/n], written out in numpy."""
    confidence = probs.max(-1)
    correct = probs.argmax(-1) == targets
    edges = np.linspace(0, 1, n_bins + 1)
    total = 0.0
    for low, high in itertools.pairwise(edges):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            gap = abs(correct[inside].mean() - confidence[inside].mean())
            total += inside.mean() * gap
    return total


@pytest.mark.parametrize("classes", CLASSES)
@pytest.mark.parametrize("n_bins", [1, 5, 15])
def test_expected_calibration_error_matches_reference(classes, n_bins):
    generator = torch.Generator().manual_seed(classes + n_bins)
    probs = torch.softmax(
        3 * torch.randn(200, classes, generator=generator, dtype=torch.float64), -1
    )
    targets = labels((200,), classes, generator)
    expected = reference_ece(probs.numpy(), targets.numpy(), n_bins)
    found = metrics.expected_calibration_error(probs, targets, n_bins=n_bins)
    assert found.item() == pytest.approx(expected, abs=1e-6)


def calibrated_predictor(n, classes, sharpen, generator):
    """Probabilities from a Dirichlet, labels drawn from them (so calibrated), then
    the reported probabilities raised to the power ``sharpen`` and renormalised."""
    probs = torch.distributions.Dirichlet(torch.ones(classes)).sample((n,))
    targets = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    reported = probs**sharpen
    return reported / reported.sum(-1, keepdim=True), targets


@pytest.mark.parametrize("classes", [2, 5])
def test_ece_of_a_calibrated_predictor_is_near_zero(classes):
    """For a calibrated predictor each bin's accuracy minus its mean confidence has
    mean 0 and standard deviation at most sqrt(0.25 / n_b), so
    E[ECE] <= sum_b w_b sqrt(0.25 / n_b) * sqrt(2 / pi) <= sqrt(0.25 n_bins / n)
    (Cauchy-Schwarz); the bound is 3 times that."""
    n, n_bins = 20000, 15
    generator = torch.Generator().manual_seed(classes)
    probs, targets = calibrated_predictor(n, classes, 1.0, generator)
    ece = metrics.expected_calibration_error(probs, targets, n_bins=n_bins)
    assert ece.item() < 3 * (0.25 * n_bins / n) ** 0.5


@pytest.mark.parametrize("classes", [2, 5])
def test_ece_of_an_overconfident_predictor_is_large(classes):
    """Sharpening calibrated probabilities (power 4) overstates confidence by more
    than 0.1 on average: far outside the calibrated bound of ~0.04."""
    generator = torch.Generator().manual_seed(classes)
    probs, targets = calibrated_predictor(20000, classes, 4.0, generator)
    assert metrics.expected_calibration_error(probs, targets).item() > 0.1


def test_log_predictive_density_and_coverage_match_numpy():
    generator = torch.Generator().manual_seed(0)
    log_likelihoods = torch.randn(40, 6, generator=generator, dtype=torch.float64) - 3
    expected = np.log(np.exp(log_likelihoods.numpy()).mean(0))
    np.testing.assert_allclose(
        metrics.log_predictive_density(log_likelihoods).numpy(), expected, rtol=1e-12
    )
    samples = torch.randn(101, 30, generator=generator, dtype=torch.float64)
    targets = 1.5 * torch.randn(30, generator=generator, dtype=torch.float64)
    low, high = np.quantile(samples.numpy(), [0.05, 0.95], axis=0)
    expected = ((targets.numpy() >= low) & (targets.numpy() <= high)).mean()
    assert metrics.interval_coverage(samples, targets, 0.9).item() == expected


def test_interval_coverage_of_the_predictive_itself_is_the_level():
    """Targets drawn from the predictive distribution fall in the 90% interval with
    probability ~0.9; with 4000 targets the standard error is sqrt(.09/4000) ~ 0.005
    (plus the quantile error of 2000 draws, smaller); bound 4 standard errors."""
    generator = torch.Generator().manual_seed(0)
    samples = torch.randn(2000, 4000, generator=generator)
    targets = torch.randn(4000, generator=generator)
    for level in (0.5, 0.9):
        coverage = metrics.interval_coverage(samples, targets, level).item()
        se = (level * (1 - level) / 4000) ** 0.5
        assert abs(coverage - level) < 4 * se + 0.01
