"""The MCMC examples run end to end (shortened) and write their trace plots.

They run in this process (``runpy``), so torch, ArviZ and matplotlib are imported
once for the suite.
"""

import pathlib
import runpy

import matplotlib
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("eight_schools.py", ["theta_tilde[7]", "divergent transitions", "tau"]),
        ("logistic_regression.py", ["w[29]", "training accuracy", "smallest bulk ESS"]),
    ],
)
def test_example_runs_and_plots(script, expected, tmp_path, capsys):
    matplotlib.use("Agg")
    example = runpy.run_path(str(ROOT / "examples" / script), run_name="example")
    out = tmp_path / "out"
    arguments = ["--samples=30", "--warmup=30", "--chains=2", "--no-progress"]
    example["main"]([*arguments, f"--results={out}"])
    printed = capsys.readouterr().out
    for text in ["mean", "r_hat", "ess_bulk", *expected]:
        assert text in printed
    plots = list(out.glob("*_trace.png"))
    assert len(plots) == 1
    assert plots[0].stat().st_size > 10_000
