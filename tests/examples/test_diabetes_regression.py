"""The diabetes example runs (shortened) and its printed numbers meet the targets."""

import pathlib
import re
import runpy

import matplotlib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def printed(name, text):
    return float(re.search(rf"{re.escape(name)}: ([-0-9.]+)", text).group(1))


def test_diabetes_example_coverage_and_plot(tmp_path, capsys):
    """Targets of issue 5: 90% intervals cover 85-95% of the 133 test points, 50%
    intervals 40-60%. RMSE must beat predicting the mean (the target's sd is ~77) and
    the NLPD must beat a Normal with that sd (log(77 sqrt(2 pi e)) ~ 5.76)."""
    matplotlib.use("Agg")
    example = runpy.run_path(
        str(ROOT / "examples" / "diabetes_regression.py"), run_name="example"
    )
    out = tmp_path / "out"
    example["main"](["--steps=600", "--samples=500", f"--results={out}"])
    text = capsys.readouterr().out
    assert 0.85 <= printed("coverage of the 90% interval", text) <= 0.95
    assert 0.40 <= printed("coverage of the 50% interval", text) <= 0.60
    assert printed("test RMSE", text) < 65
    assert printed("negative log predictive density", text) < 5.7
    plot = out / "diabetes_predictive_band.png"
    assert plot.stat().st_size > 10_000
