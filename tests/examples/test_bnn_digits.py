"""The flagship digits demo runs with its default settings (the exact ELBO, borch.nn's
default priors and posteriors) and meets the targets of issue 3 and of "Deep models
done right" (item 4).

The full run takes a few seconds on two quiet cores, so the test runs it as shipped
(no quick mode) and checks the acceptance thresholds on the printed table. Training
is seeded, so the numbers are reproducible for one version of the code and of torch;
the figures over seeds 0-4 are stated in the example's docstring. Where a threshold
compares the two networks, its margin comes from the 450 test digits (a paired
standard error), not from a tolerance fitted to one run.
"""

import contextlib
import io
import math
import pathlib
import runpy

import pytest
import torch

from borch import metrics

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Runs the example once; returns (rows, predictions, labels, printed text,
    folder)."""
    example = runpy.run_path(str(ROOT / "examples" / "bnn_digits.py"), run_name="ex")
    folder = tmp_path_factory.mktemp("results")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rows, predictions, labels = example["main"]([f"--results={folder}"])
    return rows, predictions, labels, printed.getvalue(), folder


def table_row(text, name):
    """The numbers printed on the table line that starts with ``name``."""
    line = next(line for line in text.splitlines() if line.startswith(name))
    return [float(value) for value in line[len(name) :].split()]


def test_table_is_printed_and_matches_the_returned_rows(run):
    rows, _, _, text, _ = run
    assert "accuracy" in text and "H inverted" in text
    for name, row in rows.items():
        assert table_row(text, name) == pytest.approx(list(row.values()), abs=1e-4)


def test_plots_are_written(run):
    *_, folder = run
    for name in ("bnn_digits_reliability.png", "bnn_digits_entropy.png"):
        path = folder / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size > 20_000  # two panels with axes and bars


def test_acceptance_thresholds(run):
    """Issue 3: accuracy >= 0.95, and predictive entropy clearly higher out of
    distribution (here: at least 5 times the in-distribution mean for both kinds of
    OOD input). Item 4 of "Deep models done right": under the exact ELBO the BNN is
    calibrated, ECE <= 0.03 (15 bins)."""
    rows, *_ = run
    bnn = rows["Bayesian MLP"]
    assert bnn["accuracy"] >= 0.95
    assert bnn["ECE"] <= 0.03
    assert bnn["H noise"] >= 5 * bnn["H test"]
    assert bnn["H inverted"] >= 5 * bnn["H test"]


def test_accuracy_is_level_with_the_twins(run):
    """The BNN's accuracy is no lower than the twin's, at the resolution of 450 test
    digits: the difference may fall below zero by at most two paired standard errors
    (from the digits on which exactly one network is right, as in McNemar's test)."""
    rows, predictions, labels, _, _ = run
    bnn_right = predictions["Bayesian MLP"]["test"].mean(0).argmax(-1) == labels
    twin_right = predictions["deterministic MLP"]["test"].mean(0).argmax(-1) == labels
    n = len(labels)
    only_bnn = int((bnn_right & ~twin_right).sum())
    only_twin = int((twin_right & ~bnn_right).sum())
    difference = (only_bnn - only_twin) / n
    standard_error = math.sqrt(only_bnn + only_twin - (only_bnn - only_twin) ** 2 / n)
    standard_error /= n
    assert difference == pytest.approx(
        rows["Bayesian MLP"]["accuracy"] - rows["deterministic MLP"]["accuracy"]
    )
    # with no discordant digit at all the networks agree and the check is exact
    assert difference >= -2 * standard_error, (difference, standard_error)


def test_calibration_is_no_worse_than_the_twins(run):
    """Issue 3: the BNN's expected calibration error is no worse than the twin's.

    Both are near 0.015 on 450 test digits and move by about as much between seeds
    (see the example's docstring), so "no worse" is checked at the resolution the
    test set allows: the difference BNN - twin must not exceed two standard errors
    of a paired bootstrap over test digits (400 resamples, fixed seed)."""
    _, predictions, labels, _, _ = run
    bnn = predictions["Bayesian MLP"]["test"].mean(0)
    twin = predictions["deterministic MLP"]["test"].mean(0)
    difference = float(
        metrics.expected_calibration_error(bnn, labels)
        - metrics.expected_calibration_error(twin, labels)
    )
    generator = torch.Generator().manual_seed(0)
    resampled = []
    for _ in range(400):
        index = torch.randint(0, len(labels), (len(labels),), generator=generator)
        resampled.append(
            float(
                metrics.expected_calibration_error(bnn[index], labels[index])
                - metrics.expected_calibration_error(twin[index], labels[index])
            )
        )
    standard_error = torch.tensor(resampled).std().item()
    assert difference <= 2 * standard_error, (difference, standard_error)
