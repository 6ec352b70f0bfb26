"""Uncertainty decomposition: exact sums, known cases, agreement with the definition."""

import pytest
import torch

from borch import metrics


@pytest.mark.parametrize("shape", [(1, 1, 2), (5, 3, 4), (30, 8, 10)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_classification_decomposition_sums_exactly(shape, dtype):
    generator = torch.Generator().manual_seed(sum(shape))
    probs = torch.softmax(2 * torch.randn(shape, generator=generator, dtype=dtype), -1)
    total = metrics.predictive_entropy(probs)
    aleatoric = metrics.aleatoric_uncertainty(probs)
    epistemic = metrics.epistemic_uncertainty(probs)
    assert total.shape == aleatoric.shape == epistemic.shape == shape[1:2]
    assert torch.equal(total, aleatoric + epistemic)
    # against the definitions
    mean = probs.mean(0)
    direct = -(mean * mean.log()).sum(-1)
    expected_entropy = -(probs * probs.log()).sum(-1).mean(0)
    torch.testing.assert_close(total, direct)
    torch.testing.assert_close(aleatoric, expected_entropy)
    assert (epistemic > -1e-6).all()  # mutual information is non-negative


def test_agreeing_draws_have_no_epistemic_uncertainty_and_zeros_are_fine():
    probs = torch.tensor([[0.0, 1.0], [0.5, 0.5]]).expand(6, 2, 2)
    assert torch.equal(metrics.epistemic_uncertainty(probs), torch.zeros(2))
    torch.testing.assert_close(
        metrics.aleatoric_uncertainty(probs), torch.tensor([0.0, 0.6931472])
    )


def test_regression_decomposition_is_the_law_of_total_variance():
    """Draws y = mean_s + scale_s * eps: their variance estimates total; with 200 x
    2000 draws the relative standard error of a variance is sqrt(2 / 4e5) ~ 0.0022,
    bound 5 of them (1.2%)."""
    generator = torch.Generator().manual_seed(0)
    means = torch.randn(200, 3, generator=generator, dtype=torch.float64)
    scales = torch.rand(200, 3, generator=generator, dtype=torch.float64) + 0.5
    split = metrics.regression_uncertainty(means, scales)
    assert torch.equal(split.total, split.aleatoric + split.epistemic)
    draws = means + scales * torch.randn(
        2000, 200, 3, generator=generator, dtype=torch.float64
    )
    torch.testing.assert_close(
        draws.reshape(-1, 3).var(0), split.total, rtol=0.012, atol=0
    )
    torch.testing.assert_close(split.epistemic, means.var(0, correction=0))


def test_metrics_on_the_device(device):
    """Metrics return tensors on the device of their inputs (CUDA where available)."""
    probs = torch.full((3, 4, 2), 0.5, device=device)
    assert metrics.predictive_entropy(probs).device.type == device.type
    samples = torch.randn(50, 4, device=device)
    coverage = metrics.interval_coverage(samples, torch.zeros(4, device=device))
    assert coverage.device.type == device.type
    targets = torch.zeros(4, dtype=torch.long, device=device)
    assert metrics.expected_calibration_error(probs[0], targets).device.type == (
        device.type
    )
