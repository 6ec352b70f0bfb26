"""Resumable training: an interrupted run resumes bit-for-bit, under torchrun too, and
bad checkpoint files are refused with an error naming what does not fit."""

import os
import pathlib
import subprocess
import sys

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import borch
from borch import distributions as dist
from borch import posterior
from borch.checkpointing import Checkpointer, CheckpointError, read_checkpoint

ROOT = pathlib.Path(__file__).resolve().parents[1]
N = 12


class Regression(borch.Module):
    def __init__(self, features=2):
        super().__init__(posterior=posterior.Normal())
        self.features = features

    def forward(self, x):
        self.w = dist.Normal(torch.zeros(self.features), 1.0)
        self.noise = dist.LogNormal(0.0, 1.0)
        self.y = dist.Normal(x @ self.w, self.noise)


def data():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(N, 2, generator=generator)
    return TensorDataset(x, x.sum(-1) + 0.1 * torch.randn(N, generator=generator))


def build(path, features=2, **options):
    torch.manual_seed(123)
    model = Regression(features)
    model(torch.zeros(1, features))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    return model, optimizer, Checkpointer(path, model, optimizer, **options)


def train(checkpoints, model, optimizer, epochs=3, stop_after=None):
    """Shuffled batches drawn from torch's global generator; stops (as a killed
    process would) after ``stop_after`` steps in all."""
    loader = DataLoader(data(), batch_size=5, shuffle=True)  # 3 batches, last short
    for _ in checkpoints.epochs(epochs):
        for xb, yb in checkpoints.batches(loader):
            if checkpoints.steps == stop_after:
                return
            borch.sample(model)
            model.observe(y=yb)
            model(xb)
            loss = borch.infer.vi_loss(**borch.pq_to_infer(model))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


def final_state(model):
    return {k: v for k, v in model.state_dict().items() if "observed" not in k}


@pytest.mark.parametrize(
    ("every", "stop_after"),
    [({"every_steps": 2}, 5), ({"every_steps": 2}, 7), ({"every_epochs": 1}, 4)],
    ids=["mid-epoch", "into-next-epoch", "epoch-boundary"],
)
def test_an_interrupted_run_resumes_bit_for_bit(tmp_path, every, stop_after):
    model, optimizer, checkpoints = build(tmp_path / "whole.pt", **every)
    train(checkpoints, model, optimizer)
    expected = final_state(model)

    path = tmp_path / "run.pt"
    model, optimizer, checkpoints = build(path, **every)
    assert not checkpoints.resume()
    train(checkpoints, model, optimizer, stop_after=stop_after)
    model, optimizer, checkpoints = build(path, **every)  # a new process
    torch.manual_seed(999)
    assert checkpoints.resume()
    assert 0 < checkpoints.steps < stop_after
    train(checkpoints, model, optimizer)

    assert checkpoints.steps == 9
    for name, value in expected.items():
        assert torch.equal(final_state(model)[name], value), name


def test_the_file_loads_with_weights_only(tmp_path):
    model, optimizer, checkpoints = build(tmp_path / "run.pt", every_steps=1)
    train(checkpoints, model, optimizer, epochs=1)
    payload = torch.load(tmp_path / "run.pt", weights_only=True)
    assert payload["steps"] == 3 and payload["epoch"] == 1
    assert set(payload["model"]) == set(final_state(model))
    assert not list(tmp_path.glob(".*tmp"))  # the temporary file was moved into place


def saved_run(tmp_path):
    model, optimizer, checkpoints = build(tmp_path / "run.pt", every_steps=1)
    train(checkpoints, model, optimizer, epochs=1)
    return tmp_path / "run.pt"


@pytest.mark.parametrize("keep", [0.0, 0.5, 0.99])
def test_a_truncated_file_is_an_error_not_a_fresh_start(tmp_path, keep):
    path = saved_run(tmp_path)
    content = path.read_bytes()
    path.write_bytes(content[: int(len(content) * keep)])
    _, _, checkpoints = build(path)
    with pytest.raises(CheckpointError, match=r"run\.pt' cannot be read .*truncated"):
        checkpoints.resume()
    assert checkpoints.steps == 0


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path):
    path = tmp_path / "weights.pt"
    model, _, checkpoints = build(path)
    torch.save(model.state_dict(), path)  # a plain state dict
    with pytest.raises(CheckpointError, match="not a borch checkpoint"):
        checkpoints.resume()


def test_a_checkpoint_of_another_model_names_what_differs(tmp_path):
    path = saved_run(tmp_path)
    _, _, checkpoints = build(path, features=3)
    with pytest.raises(
        CheckpointError,
        match=r"shape differs: 'posterior\.w\.loc' \(saved \(2,\), here \(3,\)\)",
    ):
        checkpoints.resume()


def test_names_missing_or_extra_are_listed(tmp_path):
    path = saved_run(tmp_path)
    model = Regression()  # never run: its variables do not exist yet
    checkpoints = Checkpointer(path, model, None)
    with pytest.raises(
        CheckpointError, match=r"not in this model: 'posterior\.w\.loc'.*forward"
    ):
        checkpoints.resume()


def test_an_optimiser_that_does_not_fit_is_named(tmp_path):
    path = saved_run(tmp_path)
    model, _, _ = build(path)
    with pytest.raises(
        CheckpointError, match="has an optimiser state, but this run has none"
    ):
        Checkpointer(path, model, None).resume()
    optimizer = torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    with pytest.raises(CheckpointError, match="optimiser state does not fit"):
        Checkpointer(path, model, optimizer).resume()


def test_a_checkpoint_of_another_world_size_is_refused(tmp_path):
    path = saved_run(tmp_path)
    payload = read_checkpoint(path)
    payload["world_size"] = 2
    torch.save(payload, path)
    _, _, checkpoints = build(path)
    with pytest.raises(CheckpointError, match="written by 2 ranks and this run has 1"):
        checkpoints.resume()


def test_counts_are_checked(tmp_path):
    model = Regression()
    with pytest.raises(
        ValueError, match="every_steps must be a positive int or None, got 0"
    ):
        Checkpointer(tmp_path / "x.pt", model, every_steps=0)
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        Checkpointer(tmp_path / "x.pt", object())


# ------------------------------------------------------- a rank killed under torchrun
def torchrun(tmp_path, name, launcher=(), worker=()):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "src"), str(ROOT), *filter(None, [env.get("PYTHONPATH")])]
    )
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node=2", *launcher]
    command += [str(ROOT / "tests" / "resumable_worker.py"), *worker]
    command += [
        f"--checkpoint={tmp_path / name}.pt",
        f"--out={tmp_path / name}-final.pt",
    ]
    return subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=240, check=False
    )


def test_a_rank_killed_mid_epoch_restarts_from_the_checkpoint(tmp_path):
    """Two gloo ranks, checkpoints every 3 steps; rank 1 SIGKILLs itself at step 8
    (mid-epoch 1) on the first attempt. torchrun restarts both ranks, they resume from
    step 6, and the final posterior equals an uninterrupted run's bit for bit."""
    whole = torchrun(tmp_path, "whole")
    assert whole.returncode == 0, whole.stderr[-3000:]
    killed = torchrun(tmp_path, "killed", ["--max-restarts=1"], ["--kill-at-step=8"])
    assert killed.returncode == 0, killed.stderr[-3000:]
    assert "exitcode: -9" in killed.stderr  # the first attempt did die by SIGKILL
    expected = torch.load(tmp_path / "whole-final.pt", weights_only=True)
    resumed = torch.load(tmp_path / "killed-final.pt", weights_only=True)
    assert resumed["steps"] == expected["steps"] == 24
    assert resumed["state"].keys() == expected["state"].keys()
    for name, value in expected["state"].items():
        assert torch.equal(resumed["state"][name], value), name
