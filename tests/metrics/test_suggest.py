"""module_metrics picks metrics by each observed variable's likelihood."""

import pytest
import torch

import borch
from borch import distributions as dist
from borch import metrics


class Many(borch.Module):
    def forward(self):
        self.label = dist.Categorical(logits=torch.zeros(4, 3))
        self.flag = dist.Bernoulli(probs=torch.full((4,), 0.5))
        self.count = dist.Poisson(torch.ones(4))
        self.y = dist.StudentT(3.0, torch.zeros(4), 1.0)
        self.weights = dist.Dirichlet(torch.ones(4, 3))


class Outer(borch.Module):
    def __init__(self):
        super().__init__()
        self.inner = Many()

    def forward(self):
        self.inner()


def test_module_metrics_by_family():
    model = Outer()
    model.inner.observe(
        label=torch.zeros(4, dtype=torch.long),
        flag=torch.zeros(4),
        count=torch.ones(4),
        y=torch.zeros(4),
        weights=torch.full((4, 3), 1 / 3),
    )
    model()
    found = metrics.module_metrics(model)
    assert set(found) == {
        "inner.label",
        "inner.flag",
        "inner.count",
        "inner.y",
        "inner.weights",
    }
    assert "expected_calibration_error" in found["inner.label"]
    assert "binary_roc_auc" in found["inner.flag"]
    assert "r2_score" not in found["inner.count"]
    assert "interval_coverage" in found["inner.count"]
    assert "r2_score" in found["inner.y"]
    assert set(found["inner.weights"]) == {"log_predictive_density"}
    assert found["inner.y"]["r2_score"] is metrics.r2_score


def test_module_metrics_needs_observations():
    model = Many()
    model()
    with pytest.raises(ValueError, match="observed"):
        metrics.module_metrics(model)
    with pytest.raises(TypeError, match="module"):
        metrics.module_metrics("model")
