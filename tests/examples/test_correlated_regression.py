"""The correlated-regression example runs end to end (shortened) and writes its
pair plot."""

import pathlib
import runpy

import matplotlib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_example_runs_and_plots(tmp_path, capsys):
    matplotlib.use("Agg")
    example = runpy.run_path(
        str(ROOT / "examples" / "correlated_regression.py"), run_name="example"
    )
    arguments = ["--steps=100", "--samples=50", "--warmup=50", "--chains=1"]
    samples = example["main"]([*arguments, "--no-progress", f"--results={tmp_path}"])
    printed = capsys.readouterr().out
    for name in ["Normal", "MultivariateNormal", "NUTS", "pair plot"]:
        assert name in printed
    assert {k: v.shape[1] for k, v in samples.items()} == dict.fromkeys(samples, 3)
    plot = tmp_path / "correlated_regression_pairs.png"
    assert plot.stat().st_size > 10_000
