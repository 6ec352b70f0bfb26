"""Checkpoints of a chain's sampling phase, so that a long run resumes after a crash.

A chain writes ``chain_<k>.pt`` into the checkpoint folder when its warm-up ends and
every ``every`` draws after: its draws and statistics so far, its position, step size
and inverse mass matrix, and the state of its random number generator. Resuming
restores all of them, so the draws that follow are those of an uninterrupted run.
Files hold only tensors, numbers, strings and dicts: they load with
``torch.load(path, weights_only=True)``, and are replaced atomically, so a crash while
writing leaves the previous checkpoint.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import numpy as np
import torch

from borch.checkpointing import write_atomically
from borch.validation import check_count


class ChainCheckpoint:
    """Where one chain saves and finds its checkpoint.

    Args:
        folder: the checkpoint folder (created if missing).
        chain: the chain's number.
        every: draws between checkpoints.
        header: what a run must match to resume from the file (seed, chains, draws,
            warm-up, dimension); a file with another header is an error.

    Example:
        >>> import tempfile
        >>> import numpy as np
        >>> folder = tempfile.mkdtemp()
        >>> checkpoint = ChainCheckpoint(folder, 0, every=10, header={"seed": 1})
        >>> checkpoint.load() is None
        True
        >>> rng = np.random.default_rng(0)
        >>> checkpoint.save({"draw": 3, "rng": rng.bit_generator.state})
        >>> checkpoint.load()["draw"]
        3
    """

    def __init__(
        self, folder: str | os.PathLike, chain: int, every: int, header: dict
    ) -> None:
        self.folder = pathlib.Path(folder)
        self.path = self.folder / f"chain_{chain}.pt"
        self.every = check_count("checkpoint_every", every, minimum=1)
        self.header = dict(header)

    def due(self, draw: int, num_samples: int) -> bool:
        """Whether to save after ``draw`` draws (0: at the end of warm-up)."""
        return draw % self.every == 0 or draw == num_samples

    def save(self, payload: dict[str, Any]) -> None:
        """Write ``payload`` (with the header) in place of the last checkpoint."""
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomically({"header": self.header, **payload}, self.path)

    def load(self) -> dict[str, Any] | None:
        """The saved payload, or ``None`` if there is no checkpoint yet."""
        if not self.path.exists():
            return None
        payload = torch.load(self.path, weights_only=True)
        if payload.get("header") != self.header:
            raise ValueError(
                f"the checkpoint {self.path} is of another run ({payload.get('header')})"
                f", not of this one ({self.header}): give a fresh folder, or the "
                "arguments of the run that wrote it"
            )
        return payload


def tensor(array: np.ndarray | None) -> torch.Tensor | None:
    """A numpy array as a tensor for a checkpoint (a copy)."""
    return None if array is None else torch.from_numpy(np.array(array))


__all__ = ["ChainCheckpoint", "tensor"]
