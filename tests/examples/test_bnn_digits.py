"""The flagship digits demo runs with its default settings and meets issue 3's targets.

The full run takes ~6 s on two slow cores, so the test runs it as shipped (no quick
mode) and checks the acceptance thresholds on the printed table. Training is seeded,
so the numbers are reproducible for one version of the code and of torch; the margins
over seeds 0-4 are stated in the example's docstring (the ECE comparison is the
thinnest: on one seed of five the twin's ECE is lower).
"""

import contextlib
import io
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
    """Issue 3: accuracy >= 0.95 and within 2 points of the twin, and predictive
    entropy clearly higher out of distribution (here: at least 5 times the
    in-distribution mean for both kinds of OOD input)."""
    rows, *_ = run
    bnn, twin = rows["Bayesian MLP"], rows["deterministic MLP"]
    assert bnn["accuracy"] >= 0.95
    assert bnn["accuracy"] >= twin["accuracy"] - 0.02
    assert bnn["H noise"] >= 5 * bnn["H test"]
    assert bnn["H inverted"] >= 5 * bnn["H test"]


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
