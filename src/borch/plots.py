"""Pictures of predictions: reliability diagram, predictive band, uncertainty
histograms, and ArviZ trace plots of MCMC samples.

Every function returns a matplotlib figure (made without ``pyplot``, so no display
and no global figure state is involved) and saves it as a PNG when given ``path``.
matplotlib (and ArviZ for the trace plot) are the optional extra ``plots``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from borch.metrics import _checks
from borch.metrics.classification import expected_calibration_error
from borch.validation import check_count


def _figure(**kwargs: Any) -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - the test environment has it
        raise ImportError("plots need matplotlib: pip install 'borch[plots]'") from None
    return Figure(**kwargs)


def _finish(figure: Any, title: str, path: str | os.PathLike | None) -> Any:
    figure.suptitle(title)
    figure.tight_layout()
    if path is not None:
        figure.savefig(path, dpi=100)
    return figure


def _numpy(tensor: Tensor) -> Any:
    return tensor.detach().double().cpu().numpy()


def reliability_diagram(
    probs: Any,
    targets: Any,
    n_bins: int = 15,
    path: str | os.PathLike | None = None,
    title: str = "Reliability diagram",
) -> Any:
    """Accuracy against confidence per confidence bin, with the diagonal of perfect
    calibration; the expected calibration error is in the title.

    Args:
        probs: class probabilities (batch, classes).
        targets: labels (batch,).
        n_bins: equal-width confidence bins.
        path: where to save a PNG, if given.
        title: the figure title (the ECE is appended).

    Example:
        >>> import torch
        >>> probs = torch.softmax(torch.randn(100, 3, generator=torch.Generator().manual_seed(0)), -1)
        >>> figure = reliability_diagram(probs, torch.zeros(100, dtype=torch.long))
        >>> figure.texts[0].get_text()
        'Reliability diagram (ECE 0.288)'
    """
    ece = expected_calibration_error(probs, targets, n_bins)  # validates the input
    probs, targets = torch.as_tensor(probs), torch.as_tensor(targets)
    confidence, predicted = probs.max(-1)
    correct = (predicted == targets).double()
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    index = torch.bucketize(confidence.double(), edges[1:-1], right=False)
    counts = torch.bincount(index, minlength=n_bins).double()
    hits = torch.bincount(index, weights=correct, minlength=n_bins)
    mean_confidence = torch.bincount(
        index, weights=confidence.double(), minlength=n_bins
    )
    filled = counts > 0
    accuracy = torch.where(filled, hits / counts.clamp(min=1), torch.nan)
    centres = (edges[:-1] + edges[1:]) / 2
    figure = _figure(figsize=(5, 5))
    axes = figure.subplots()
    axes.bar(
        _numpy(centres),
        _numpy(accuracy.nan_to_num()),
        width=1 / n_bins,
        edgecolor="black",
        alpha=0.7,
        label="accuracy",
    )
    axes.plot(
        _numpy(mean_confidence[filled] / counts[filled]),
        _numpy(accuracy[filled]),
        "o",
        color="C1",
        label="mean confidence",
    )
    axes.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    axes.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy")
    axes.legend(loc="upper left")
    return _finish(figure, f"{title} (ECE {ece.item():.3f})", path)


def regression_band(
    x: Any,
    samples: Any,
    targets: Any = None,
    levels: Sequence[float] = (0.5, 0.9),
    path: str | os.PathLike | None = None,
    title: str = "Posterior predictive band",
    xlabel: str = "x",
    ylabel: str = "y",
) -> Any:
    """The predictive median and central intervals over ``x``, with the data.

    Args:
        x: one input per point, shape (batch,); points are sorted by it.
        samples: predictive draws, shape (samples, batch).
        targets: observed values (batch,), drawn as dots if given.
        levels: the interval probabilities to shade.
        path: where to save a PNG, if given.

    Example:
        >>> import torch
        >>> x = torch.linspace(0, 1, 20)
        >>> draws = x + torch.randn(200, 20, generator=torch.Generator().manual_seed(0))
        >>> regression_band(x, draws, x).texts[0].get_text()
        'Posterior predictive band'
    """
    x = _checks.as_tensor(x, "x")
    samples = _checks.as_tensor(samples, "samples")
    if x.dim() != 1 or samples.shape[1:] != x.shape:
        raise ValueError(
            f"x must have shape (batch,) and samples (samples, batch); got x "
            f"{tuple(x.shape)} and samples {tuple(samples.shape)}"
        )
    for level in levels:
        if not 0 < level < 1:
            raise ValueError(f"levels must be in (0, 1), got {level!r}")
    order = x.argsort()
    x, samples = x[order], samples[:, order]
    figure = _figure(figsize=(7, 4))
    axes = figure.subplots()
    for shade, level in enumerate(sorted(levels, reverse=True)):
        tails = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=samples.dtype)
        low, high = torch.quantile(samples, tails.to(samples.device), dim=0)
        axes.fill_between(
            _numpy(x),
            _numpy(low),
            _numpy(high),
            alpha=0.25 + 0.2 * shade,
            color="C0",
            label=f"{level:.0%} interval",
        )
    axes.plot(_numpy(x), _numpy(samples.median(0).values), color="C0", label="median")
    if targets is not None:
        targets = _checks.as_tensor(targets, "targets")
        if targets.shape != order.shape:
            raise ValueError(
                f"targets must have shape {tuple(order.shape)} like x, got "
                f"{tuple(targets.shape)}"
            )
        axes.plot(_numpy(x), _numpy(targets[order]), ".", color="black", label="data")
    axes.set(xlabel=xlabel, ylabel=ylabel)
    axes.legend()
    return _finish(figure, title, path)


def uncertainty_histograms(
    in_distribution: Any,
    out_of_distribution: Any,
    path: str | os.PathLike | None = None,
    title: str = "Uncertainty in and out of distribution",
    xlabel: str = "predictive entropy (nats)",
    bins: int = 30,
) -> Any:
    """Overlaid histograms of an uncertainty measure (e.g. predictive entropy) on
    in-distribution and out-of-distribution inputs.

    Example:
        >>> import torch
        >>> generator = torch.Generator().manual_seed(0)
        >>> figure = uncertainty_histograms(
        ...     torch.rand(50, generator=generator), 1 + torch.rand(50, generator=generator)
        ... )
        >>> [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
        ['in distribution', 'out of distribution']
    """
    bins = check_count("bins", bins)
    inside = _checks.as_tensor(in_distribution, "in_distribution").flatten()
    outside = _checks.as_tensor(out_of_distribution, "out_of_distribution").flatten()
    figure = _figure(figsize=(6, 4))
    axes = figure.subplots()
    low = min(inside.min(), outside.min()).item()
    high = max(inside.max(), outside.max()).item()
    edges = torch.linspace(low, high if high > low else low + 1, bins + 1)
    for values, label in (
        (inside, "in distribution"),
        (outside, "out of distribution"),
    ):
        axes.hist(_numpy(values), bins=_numpy(edges), alpha=0.6, label=label)
    axes.set(xlabel=xlabel, ylabel="count")
    axes.legend()
    return _finish(figure, title, path)


def trace_plot(
    samples: Any,
    var_names: Sequence[str] | None = None,
    path: str | os.PathLike | None = None,
    title: str = "MCMC trace",
) -> Any:
    """ArviZ's trace plot (density and draws per chain) of MCMC samples.

    Args:
        samples: a dict ``{name: tensor (chains, draws, *shape)}`` or an object with
            such a ``.samples`` (an MCMC result).
        var_names: the variables to show; all by default.
        path: where to save a PNG, if given.
    """
    from borch.infer.hmc.result import import_arviz

    arviz = import_arviz()
    samples = getattr(samples, "samples", samples)
    if not isinstance(samples, Mapping) or not samples:
        raise TypeError(
            "samples must be a non-empty dict {name: tensor (chains, draws, ...)} or "
            f"an MCMC result, got {type(samples).__name__}"
        )
    for name, value in samples.items():
        if not isinstance(value, Tensor) or value.dim() < 2 or value.numel() == 0:
            raise ValueError(
                f"samples['{name}'] must be a non-empty tensor (chains, draws, ...)"
            )
    names = list(samples) if var_names is None else list(var_names)
    missing = [name for name in names if name not in samples]
    if missing:
        raise ValueError(f"var_names {missing} are not in samples {list(samples)}")
    data = arviz.from_dict(posterior={n: _numpy(samples[n]) for n in names})
    rows = len(names)  # compact: one row per variable, whatever its shape
    figure = _figure(figsize=(10, 2.2 * rows))
    axes = figure.subplots(rows, 2, squeeze=False)
    with warnings.catch_warnings():
        # ArviZ 0.2x calls a matplotlib helper the way matplotlib 3.11 deprecates.
        warnings.filterwarnings(
            "ignore", message="Passing a dict or None as alias_mapping"
        )
        arviz.plot_trace(data, var_names=names, axes=axes, compact=True)
    return _finish(figure, title, path)


__all__ = [
    "regression_band",
    "reliability_diagram",
    "trace_plot",
    "uncertainty_histograms",
]
