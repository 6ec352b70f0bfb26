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

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Runs the example once; returns (its returned rows, printed text, folder)."""
    example = runpy.run_path(str(ROOT / "examples" / "bnn_digits.py"), run_name="ex")
    folder = tmp_path_factory.mktemp("results")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rows = example["main"]([f"--results={folder}"])
    return rows, printed.getvalue(), folder


def table_row(text, name):
    """The numbers printed on the table line that starts with ``name``."""
    line = next(line for line in text.splitlines() if line.startswith(name))
    return [float(value) for value in line[len(name) :].split()]


def test_table_is_printed_and_matches_the_returned_rows(run):
    rows, text, _ = run
    assert "accuracy" in text and "H inverted" in text
    for name, row in rows.items():
        assert table_row(text, name) == pytest.approx(list(row.values()), abs=1e-4)


def test_plots_are_written(run):
    _, _, folder = run
    for name in ("bnn_digits_reliability.png", "bnn_digits_entropy.png"):
        path = folder / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size > 20_000  # two panels with axes and bars


def test_acceptance_thresholds(run):
    """Issue 3: accuracy >= 0.95 and within 2 points of the twin, ECE no worse, and
    predictive entropy clearly higher out of distribution (here: at least 5 times the
    in-distribution mean for both kinds of OOD input)."""
    rows, _, _ = run
    bnn, twin = rows["Bayesian MLP"], rows["deterministic MLP"]
    assert bnn["accuracy"] >= 0.95
    assert bnn["accuracy"] >= twin["accuracy"] - 0.02
    assert bnn["ECE"] <= twin["ECE"]
    assert bnn["H noise"] >= 5 * bnn["H test"]
    assert bnn["H inverted"] >= 5 * bnn["H test"]
