"""examples/ddp_bnn.py runs in one process and under torchrun with two gloo ranks."""

import os
import pathlib
import re
import runpy
import subprocess
import sys

import torch

from borch.checkpointing import read_checkpoint

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "ddp_bnn.py"
SHORT = ["--epochs=3", "--print-every=1"]


def test_example_runs_in_one_process(capsys):
    example = runpy.run_path(str(SCRIPT), run_name="example")
    example["main"](SHORT)
    printed = capsys.readouterr().out
    assert len(re.findall(r"rank 0/1 epoch +\d+ loss +[\d.]+", printed)) == 3
    assert re.search(r"held-out accuracy [\d.]+ \(30 flowers\)", printed)


def test_example_resumes_from_its_checkpoint_bit_for_bit(tmp_path, capsys):
    """Stopped after 2 of 4 epochs and launched again, it ends where an uninterrupted
    run ends (the two-rank restart after a SIGKILL is tested with the Checkpointer)."""
    main = runpy.run_path(str(SCRIPT), run_name="example")["main"]
    expected = main(["--epochs=4", "--print-every=10"]).state_dict()
    checkpoint = f"--checkpoint={tmp_path / 'run.pt'}"
    main(["--epochs=2", "--save-every=1", checkpoint])
    resumed = main(["--epochs=4", "--save-every=1", checkpoint]).state_dict()
    assert "rank 0/1 resumed at epoch 2" in capsys.readouterr().out
    for name, value in expected.items():
        assert torch.equal(resumed[name], value), name
    assert read_checkpoint(tmp_path / "run.pt")["epoch"] == 4


def test_example_runs_under_torchrun_with_two_ranks(tmp_path):
    """A fresh interpreter per rank: about 10 s on two slow cores, most of it
    importing torch three times (launcher and two workers)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])]
    )
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node=2", str(SCRIPT), *SHORT]
    command += ["--save-every=1", f"--checkpoint={tmp_path / 'run.pt'}"]
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, _excerpt(done.stderr)
    for rank in (0, 1):
        losses = re.findall(rf"rank {rank}/2 epoch +\d+ loss +([\d.]+)", done.stdout)
        assert len(losses) == 3, done.stdout
    assert len(re.findall(r"held-out accuracy", done.stdout)) == 1  # rank 0 only
    saved = read_checkpoint(tmp_path / "run.pt")
    assert (saved["epoch"], saved["world_size"]) == (3, 2)


def _excerpt(stderr: str) -> str:
    """The start (where a rank's own error is) and the end (torchrun's summary)."""
    if len(stderr) <= 6000:
        return stderr
    return f"{stderr[:3000]}\n...\n{stderr[-3000:]}"
