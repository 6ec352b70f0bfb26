"""The heteroscedastic Laplace example runs as shipped, writes its figure, and its
last-layer Laplace predictive is no worse than the MAP network on the test patients.

The predictive log likelihoods are means over 111 test points from one seeded run
(-1.117 against -1.136 when written); the comparison allows 0.01 per point for other
torch builds, so it checks the direction of the effect the docstring states.
"""

import pathlib
import runpy

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_heteroscedastic_laplace_example(tmp_path, capsys):
    example = runpy.run_path(
        str(ROOT / "examples" / "heteroscedastic_laplace.py"), run_name="ex"
    )
    figures = example["main"]([f"--results={tmp_path}"])
    assert (tmp_path / "heteroscedastic_laplace.png").stat().st_size > 0
    assert figures["laplace_log_likelihood"] >= figures["map_log_likelihood"] - 0.01
    assert 0 < figures["coverage_50"] < figures["coverage_90"] <= 1
    assert "coverage of the 90% band" in capsys.readouterr().out
