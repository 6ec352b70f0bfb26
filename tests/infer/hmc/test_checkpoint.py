"""A chain checkpoint that is truncated, corrupt, foreign or of another run is refused
with a CheckpointError naming the file, never silently replaced by a fresh start."""

import numpy as np
import pytest
import torch

from borch.checkpointing import CheckpointError
from borch.infer.hmc.checkpoint import ChainCheckpoint, tensor

HEADER = {"seed": 3, "chains": 2, "dim": 4, "num_samples": 40, "warmup": 30}


def saved_chain(folder, header=HEADER):
    checkpoint = ChainCheckpoint(folder, 1, every=10, header=header)
    rng = np.random.default_rng(0)
    checkpoint.save(
        {
            "draw": 10,
            "position": tensor(rng.normal(size=4)),
            "rng": rng.bit_generator.state,
        }
    )
    return checkpoint


def test_a_saved_chain_loads_back(tmp_path):
    payload = saved_chain(tmp_path).load()
    assert payload["draw"] == 10 and payload["header"] == HEADER
    assert payload["position"].shape == (4,)


@pytest.mark.parametrize("keep", [0.0, 0.1, 0.5, 0.9, 0.999])
def test_a_truncated_chain_checkpoint_is_an_error(tmp_path, keep):
    checkpoint = saved_chain(tmp_path)
    content = checkpoint.path.read_bytes()
    checkpoint.path.write_bytes(content[: int(len(content) * keep)])
    with pytest.raises(
        CheckpointError, match=r"chain_1\.pt' cannot be read .*truncated"
    ):
        checkpoint.load()


def test_a_corrupt_chain_checkpoint_is_an_error(tmp_path):
    checkpoint = saved_chain(tmp_path)
    content = bytearray(checkpoint.path.read_bytes())
    content[: len(content) // 2] = bytes(len(content) // 2)  # zeroed first half
    checkpoint.path.write_bytes(bytes(content))
    with pytest.raises(CheckpointError, match=r"chain_1\.pt' cannot be read"):
        checkpoint.load()


@pytest.mark.parametrize(
    "content",
    [torch.zeros(3), {"draw": 10}, {"header": "seed=3"}, [HEADER]],
    ids=["tensor", "no-header", "header-not-a-dict", "list"],
)
def test_a_file_that_is_not_a_chain_checkpoint_is_refused(tmp_path, content):
    checkpoint = ChainCheckpoint(tmp_path, 1, every=10, header=HEADER)
    torch.save(content, checkpoint.path)
    with pytest.raises(CheckpointError, match=r"chain_1\.pt' is not an MCMC chain"):
        checkpoint.load()


def test_a_file_with_other_objects_than_tensors_is_refused(tmp_path):
    checkpoint = ChainCheckpoint(tmp_path, 1, every=10, header=HEADER)
    torch.save({"header": HEADER, "kernel": np.random.default_rng(0)}, checkpoint.path)
    with pytest.raises(CheckpointError, match=r"cannot be read \(UnpicklingError"):
        checkpoint.load()


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"seed": 4}, r"seed=3 \(this run 4\)"),
        ({"dim": 5, "warmup": 10}, r"dim=4 \(this run 5\), warmup=30 \(this run 10\)"),
        ({"thinning": 2}, r"thinning=None \(this run 2\)"),
    ],
    ids=["seed", "dim-and-warmup", "new-setting"],
)
def test_a_chain_checkpoint_of_another_run_names_what_differs(tmp_path, changes, named):
    saved_chain(tmp_path)
    checkpoint = ChainCheckpoint(tmp_path, 1, every=10, header={**HEADER, **changes})
    with pytest.raises(
        CheckpointError, match=rf"chain_1\.pt' is of another run: saved {named}"
    ):
        checkpoint.load()
