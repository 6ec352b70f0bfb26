"""Checkpoints of a chain's sampling phase, so that a long run resumes after a crash.

A chain writes ``chain_<k>.pt`` into the checkpoint folder when its warm-up ends and
every ``every`` draws after: its draws and statistics so far, its position, step size
and inverse mass matrix, and the state of its random number generator. Resuming
restores all of them, so the draws that follow are those of an uninterrupted run.
Files hold only tensors, numbers, strings and dicts: they load with
``torch.load(path, weights_only=True)``, and are replaced atomically, so a crash while
writing leaves the previous checkpoint. A truncated or corrupt file, or one of another
run, raises :class:`borch.checkpointing.CheckpointError` naming the file and what is
wrong; the run never starts afresh over it.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import numpy as np
import torch

from borch.checkpointing import CheckpointError, load_file, write_atomically
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
        """The saved payload, or ``None`` if there is no checkpoint yet.

        Raises:
            CheckpointError: if the file cannot be read (truncated, corrupt), is not
                a chain checkpoint, or is of another run (its header differs), naming
                the file and what is wrong.
        """
        if not self.path.exists():
            return None
        payload = load_file(self.path)
        if not isinstance(payload, dict) or not isinstance(payload.get("header"), dict):
            raise CheckpointError(
                f"checkpoint {str(self.path)!r} is not an MCMC chain checkpoint (a "
                f"{type(payload).__name__} without a 'header' dict); not resuming "
                "from it: give a fresh folder"
            )
        saved = payload["header"]
        if saved != self.header:
            differ = [
                f"{key}={saved.get(key)!r} (this run {self.header.get(key)!r})"
                for key in sorted(set(saved) | set(self.header), key=str)
                if saved.get(key) != self.header.get(key)
            ]
            raise CheckpointError(
                f"checkpoint {str(self.path)!r} is of another run: saved "
                f"{', '.join(differ)}. Give a fresh folder, or the arguments of the "
                "run that wrote it"
            )
        return payload


def tensor(array: np.ndarray | None) -> torch.Tensor | None:
    """A numpy array as a tensor for a checkpoint (a copy)."""
    return None if array is None else torch.from_numpy(np.array(array))


__all__ = ["ChainCheckpoint", "tensor"]
