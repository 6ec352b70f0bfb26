"""Predicting with a trained borch.nn classifier: after ``observe(None)`` and under
``torch.no_grad()``, the likelihood is drawn from the network's current output and
nothing warns (the test configuration turns warnings into errors).

This is how ``examples/bnn_digits.py`` and users predict: train with the labels
observed, forget them, call the model on new inputs without gradients.
"""

from __future__ import annotations

import torch

import borch
from borch import distributions as dist
from borch import nn

#: logits are multiplied by this, so the likelihood is nearly a point mass on the
#: top class: a draw misses it with probability below exp(-20) per row when the top
#: two logits differ by at least 20 (checked below)
SHARPNESS = 200.0
GAP = 20.0


class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(3, 4)

    def forward(self, x):
        logits = SHARPNESS * self.net(x)
        self.y = dist.Categorical(logits=logits)
        return logits


def trained_classifier() -> Classifier:
    """One training step with labels observed, then the labels forgotten."""
    torch.manual_seed(0)
    model = Classifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, labels = torch.randn(8, 3), torch.randint(0, 4, (8,))
    borch.sample(model)
    model.observe(y=labels)
    model(x)
    loss = borch.infer.vi_loss(**borch.pq_to_infer(model))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    model.observe(None)
    return model


def clear_rows(logits: torch.Tensor) -> torch.Tensor:
    """Rows whose top logit leads the second by at least ``GAP``."""
    top2 = logits.topk(2, dim=-1).values
    return (top2[:, 0] - top2[:, 1]) >= GAP


def test_prediction_draws_from_the_current_output_without_warnings():
    model = trained_classifier()
    generator = torch.Generator().manual_seed(1)
    # new inputs each time, one batch of another size: a stale or frozen likelihood
    # would give the first batch's classes or fail to broadcast
    batches = [torch.randn(size, 3, generator=generator) for size in (16, 16, 5)]
    with torch.no_grad():
        for x in batches:
            borch.sample(model)
            logits = model(x)
            drawn = model.y
            clear = clear_rows(logits)
            assert int(clear.sum()) >= len(x) // 2  # the check below has teeth
            assert drawn.shape == (len(x),)
            assert torch.equal(drawn[clear], logits.argmax(-1)[clear])
