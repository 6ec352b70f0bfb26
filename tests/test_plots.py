"""Plots render to PNG without a display and carry the titles they promise."""

import matplotlib
import pytest
import torch

import borch
from borch import distributions as dist
from borch import plots

matplotlib.use("Agg")
GENERATOR_SEED = 0


def generator():
    return torch.Generator().manual_seed(GENERATOR_SEED)


def check_png(path, minimum=5_000):
    assert path.exists()
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > minimum


def test_reliability_diagram(tmp_path):
    probs = torch.softmax(2 * torch.randn(300, 4, generator=generator()), -1)
    targets = torch.multinomial(probs, 1, generator=generator()).squeeze(-1)
    path = tmp_path / "reliability.png"
    figure = plots.reliability_diagram(probs, targets, n_bins=10, path=path)
    check_png(path)
    ece = borch.metrics.expected_calibration_error(probs, targets, n_bins=10)
    assert figure.texts[0].get_text() == f"Reliability diagram (ECE {ece:.3f})"
    axes = figure.axes[0]
    assert (axes.get_xlabel(), axes.get_ylabel()) == ("confidence", "accuracy")
    # one bar per bin, each as tall as the bin's accuracy
    assert len(axes.patches) == 10


def test_regression_band(tmp_path):
    x = torch.linspace(-2, 2, 40)
    draws = torch.sin(x) + 0.3 * torch.randn(500, 40, generator=generator())
    path = tmp_path / "band.png"
    figure = plots.regression_band(
        x.flip(0), draws.flip(1), torch.sin(x).flip(0), path=path, title="Band"
    )
    check_png(path)
    assert figure.texts[0].get_text() == "Band"
    labels = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert labels == ["90% interval", "50% interval", "median", "data"]
    data_line = figure.axes[0].lines[-1]
    assert (data_line.get_xdata() == x.double().numpy()).all()  # sorted by x


def test_uncertainty_histograms(tmp_path):
    path = tmp_path / "hist.png"
    figure = plots.uncertainty_histograms(
        torch.rand(100, generator=generator()) * 0.3,
        torch.rand(100, generator=generator()) + 0.5,
        path=path,
    )
    check_png(path)
    assert figure.texts[0].get_text() == "Uncertainty in and out of distribution"
    assert figure.axes[0].get_xlabel() == "predictive entropy (nats)"


def test_trace_plot_of_a_samples_dict_and_of_an_mcmc_result(tmp_path):
    samples = {
        "mu": torch.randn(2, 50, generator=generator()),
        "theta": torch.randn(2, 50, 3, generator=generator()),
    }
    path = tmp_path / "trace.png"
    figure = plots.trace_plot(samples, path=path)
    check_png(path)
    assert figure.texts[0].get_text() == "MCMC trace"
    titles = [axes.get_title() for axes in figure.axes]
    assert titles[:2] == ["mu", "mu"] and titles[2:4] == ["theta", "theta"]

    class Mean(borch.Module):
        def forward(self):
            self.mu = dist.Normal(0.0, 1.0)
            self.y = dist.Normal(self.mu, 1.0)

    model = Mean()
    model.observe(y=torch.tensor(0.5))
    result = borch.infer.mcmc(
        model, num_samples=10, warmup=10, chains=1, seed=0, progress=False
    )
    figure = plots.trace_plot(result, var_names=["mu"])
    assert [axes.get_title() for axes in figure.axes] == ["mu", "mu"]


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: plots.trace_plot({}), TypeError, "samples"),
        (
            lambda: plots.trace_plot({"a": torch.zeros(3)}),
            ValueError,
            "samples\\['a'\\]",
        ),
        (
            lambda: plots.trace_plot({"a": torch.zeros(1, 3)}, var_names=["b"]),
            ValueError,
            "var_names",
        ),
        (
            lambda: plots.regression_band(torch.zeros(3), torch.zeros(5, 4)),
            ValueError,
            "samples",
        ),
        (
            lambda: plots.regression_band(
                torch.zeros(3), torch.zeros(5, 3), torch.zeros(2)
            ),
            ValueError,
            "targets",
        ),
        (
            lambda: plots.reliability_diagram(torch.full((3, 2), 2.0), torch.zeros(3)),
            ValueError,
            "probs",
        ),
        (
            lambda: plots.uncertainty_histograms(torch.zeros(0), torch.zeros(3)),
            ValueError,
            "in_distribution",
        ),
        (
            lambda: plots.uncertainty_histograms(
                torch.zeros(3), torch.zeros(3), bins=0
            ),
            ValueError,
            "bins must be a positive int, got 0",
        ),
    ],
)
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()
