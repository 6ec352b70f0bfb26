r"""Resumable training: save model, optimiser, progress and random state, resume exactly.

A :class:`Checkpointer` owns one checkpoint file. It saves, every ``every_steps``
optimisation steps and/or every ``every_epochs`` epochs:

* the model's ``state_dict`` (the approximating variables' parameters: the
  posterior; priors' parameters and buffers too), without the observed values (data,
  which the next step observes anew, and under data parallelism each rank's own);
* the optimiser's and any other object's ``state_dict`` (e.g. a learning-rate
  scheduler);
* the progress: epoch and step within the epoch;
* the random state of **every rank**: torch's CPU generator, the CUDA generators
  (when CUDA is initialised), numpy's and Python's global generators, both as they
  are now and as they were when the epoch began (the data loader shuffles from it).

and on resumption restores all of it, so a run that is killed and restarted (by
``torchrun --max-restarts``) continues as if it had not been interrupted: with the
same seeds the result is bit-for-bit that of an uninterrupted run. Under
``torch.distributed`` saving is collective (every rank calls it at the same step, as
the loop helpers do): the ranks' random states are gathered and rank 0 writes the one
file. Every rank reads it on resumption, so the file must be on a file system every
rank sees (a local disk for one machine).

**The file is safe to load.** It holds only tensors, numbers, strings and containers
of them, written with ``torch.save`` and read with ``torch.load(weights_only=True)``,
which unpickles nothing else: no code runs from a checkpoint file. It is written to
a temporary file in the same directory and moved into place with ``os.replace``, an
atomic rename, so a rank killed while writing leaves the previous checkpoint intact.
For the data-parallel models borch trains (every rank holds the whole model) this is
as safe as ``torch.distributed.checkpoint``, whose advantage is sharded state (FSDP,
tensor parallelism), which these models do not have. A file that cannot be read
(truncated, not a checkpoint) or that belongs to another model (names, shapes or
dtypes differ) raises :class:`CheckpointError` naming what does not match; the run
never starts afresh silently from a bad file.

Example (one process; under ``torchrun`` every rank runs the same code):
    >>> import tempfile, torch, borch
    >>> from borch import distributions as dist
    >>> from borch.checkpointing import Checkpointer
    >>> class Mean(borch.Module):
    ...     def forward(self, y):
    ...         self.mu = dist.Normal(0.0, 1.0)
    ...         self.observe(y=y)
    ...         self.y = dist.Normal(self.mu, 1.0)
    >>> data = torch.utils.data.DataLoader(torch.randn(12), batch_size=4, shuffle=True)
    >>> model = Mean(posterior=borch.posterior.Normal())
    >>> model(torch.zeros(1))  # one forward creates the approximating variables
    >>> optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    >>> path = tempfile.mkdtemp() + "/run.pt"
    >>> checkpoints = Checkpointer(path, model, optimizer, every_steps=2)
    >>> checkpoints.resume()  # no file yet: a fresh start
    False
    >>> for epoch in checkpoints.epochs(3):
    ...     for batch in checkpoints.batches(data):
    ...         borch.sample(model)
    ...         model(batch)
    ...         loss = borch.infer.vi_loss(**borch.pq_to_infer(model))
    ...         optimizer.zero_grad()
    ...         loss.backward()
    ...         optimizer.step()
    >>> checkpoints.epoch, checkpoints.steps
    (3, 9)
    >>> Checkpointer(path, model, optimizer).resume()  # a restarted run
    True
"""

from __future__ import annotations

import os
import pathlib
import pickle
import random
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from borch.validation import check_count

try:
    import torch.distributed as _dist
except ImportError:  # pragma: no cover - torch built without distributed support
    _dist = None

#: Marks a file as a borch checkpoint; ``VERSION`` changes with the layout.
FORMAT = "borch-checkpoint"
VERSION = 1
_LISTED = 5  # names listed per kind of mismatch
_WRAPPERS = (nn.DataParallel, nn.parallel.DistributedDataParallel)


#: What ``torch.load`` raises for a truncated or foreign file (by torch release).
_UNREADABLE = (
    RuntimeError,
    OSError,
    EOFError,
    ValueError,
    pickle.UnpicklingError,
    zipfile.BadZipFile,
)


class CheckpointError(ValueError):
    """A checkpoint file cannot be read, or does not fit the model being resumed."""


class Stateful(Protocol):
    """Anything with ``state_dict`` and ``load_state_dict`` (optimisers, schedulers)."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> Any: ...


# ------------------------------------------------------------------ random state
def random_state() -> dict:
    """This process's random state: torch (CPU and initialised CUDA), numpy, Python.

    Held in tensors, numbers and tuples only, so that it loads with
    ``torch.load(weights_only=True)``.

    Example:
        >>> state = random_state()
        >>> first = torch.rand(2)
        >>> set_random_state(state)
        >>> torch.equal(torch.rand(2), first)
        True
    """
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_random_state(state: Mapping) -> None:
    """Restore a state returned by :func:`random_state`."""
    torch.set_rng_state(state["torch"])
    saved = state["numpy"]
    np.random.set_state(
        (
            saved["kind"],
            saved["keys"].numpy().astype(np.uint32),
            saved["position"],
            saved["has_gauss"],
            saved["cached_gaussian"],
        )
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------ the files
def write_atomically(payload: Any, path: str | os.PathLike) -> None:
    """``torch.save(payload, path)`` through a temporary file and ``os.replace``:
    readers see the old file or the new one, never a partial one."""
    path = pathlib.Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as file:
            torch.save(payload, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable
        directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def load_file(path: str | os.PathLike) -> Any:
    """``torch.load(path, weights_only=True)`` onto the CPU, with a clear error.

    Raises:
        CheckpointError: if the file cannot be read (truncated, corrupt, not a
            ``torch.save`` file, or holding objects other than tensors, numbers,
            strings and containers), naming the file and the reason.

    Example:
        >>> import tempfile
        >>> path = tempfile.mkdtemp() + "/run.pt"
        >>> with open(path, "wb") as file:
        ...     _ = file.write(b"not a checkpoint")
        >>> load_file(path)
        Traceback (most recent call last):
        ...
        borch.checkpointing.CheckpointError: checkpoint '...run.pt' cannot be read (...); it is truncated, corrupt or not a checkpoint. Not resuming from it: delete it to start afresh, or pass another file
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except _UNREADABLE as e:
        raise CheckpointError(
            f"checkpoint {str(path)!r} cannot be read ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else 'no details'}); it is truncated, "
            "corrupt or not a checkpoint. Not resuming from it: delete it to start "
            "afresh, or pass another file"
        ) from e


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load a :class:`Checkpointer` file with :func:`load_file` and check its format.

    Raises:
        CheckpointError: if the file cannot be read (truncated, corrupt, not written
            by :class:`Checkpointer`), naming the file and the reason.
    """
    payload = load_file(path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is not a borch checkpoint (a "
            f"{type(payload).__name__} without format={FORMAT!r}); not resuming from it"
        )
    if payload.get("version") != VERSION:
        raise CheckpointError(
            f"checkpoint {str(path)!r} has layout version {payload.get('version')!r}; "
            f"this borch reads version {VERSION}"
        )
    return payload


def check_state_matches(
    saved: Mapping[str, Any], current: Mapping[str, Any], what: str
) -> None:
    """Raise :class:`CheckpointError` unless ``saved`` has the names, shapes and
    dtypes of ``current`` (two ``state_dict`` s), listing what differs.

    Example:
        >>> check_state_matches({"w": torch.zeros(2)}, {"w": torch.zeros(3)}, "model")
        Traceback (most recent call last):
        ...
        borch.checkpointing.CheckpointError: the checkpoint's model state does not fit this model: shape differs: 'w' (saved (2,), here (3,))
    """
    missing = [name for name in current if name not in saved]
    unexpected = [name for name in saved if name not in current]
    differ = []
    for name in current:
        if name not in saved:
            continue
        mine, theirs = current[name], saved[name]
        if isinstance(mine, torch.Tensor) and isinstance(theirs, torch.Tensor):
            if mine.shape != theirs.shape:
                differ.append(("shape", name, tuple(theirs.shape), tuple(mine.shape)))
            elif mine.dtype != theirs.dtype:
                differ.append(("dtype", name, theirs.dtype, mine.dtype))
    problems = []
    if missing:
        problems.append(f"missing from the checkpoint: {_listing(missing)}")
    if unexpected:
        problems.append(f"not in this {what}: {_listing(unexpected)}")
    for kind in ("shape", "dtype"):
        found = [
            f"{name!r} (saved {saved_value}, here {here})"
            for k, name, saved_value, here in differ
            if k == kind
        ]
        if found:
            problems.append(f"{kind} differs: {_listing(found, quote=False)}")
    if problems:
        hint = ""
        if unexpected and not missing:
            hint = (
                "; if the model creates variables in its first forward pass, run "
                "one forward pass before resuming"
            )
        raise CheckpointError(
            f"the checkpoint's {what} state does not fit this {what}: "
            + "; ".join(problems)
            + hint
        )


def _listing(names: list[str], quote: bool = True) -> str:
    shown = [repr(name) if quote else name for name in names[:_LISTED]]
    more = f" and {len(names) - _LISTED} more" if len(names) > _LISTED else ""
    return ", ".join(shown) + more


# ------------------------------------------------------------------ ranks
def _rank_and_world() -> tuple[int, int]:
    if _dist is not None and _dist.is_available() and _dist.is_initialized():
        return _dist.get_rank(), _dist.get_world_size()
    return 0, 1


def _gather(state: Any) -> list:
    """Every rank's ``state``, in rank order (on every rank)."""
    _, world = _rank_and_world()
    if world == 1:
        return [state]
    states = [None] * world
    _dist.all_gather_object(states, state)
    return states


# ------------------------------------------------------------------ the helper
class Checkpointer:
    """Save a training run every so many steps or epochs, and resume it exactly.

    Drive the loop with :meth:`epochs` and :meth:`batches` (they count, skip what a
    resumed run has done already, restore the random state at the right moment and
    save when due), after :meth:`resume`:

    .. code-block:: python

        model(first_batch)  # create the approximating variables
        wrapper = borch.distributed.data_parallel(model)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        checkpoints = Checkpointer("run.pt", model, optimizer, every_steps=100)
        checkpoints.resume()  # True if it loaded the file
        for epoch in checkpoints.epochs(100):
            sampler.set_epoch(epoch)
            for x, y in checkpoints.batches(loader):
                ...  # one optimisation step

    Resuming on the same number of ranks with the same seeds, the run is bit-for-bit
    the uninterrupted one, as long as the data loader shuffles with a sampler that is
    seeded by epoch (``DistributedSampler``) or draws from torch's global generator
    (``shuffle=True``), not with a ``generator`` of its own.

    Args:
        path: the checkpoint file (its directory must exist).
        model: the model, or its ``DistributedDataParallel`` wrapper.
        optimizer: the optimiser, if any.
        every_steps: save after every so many optimisation steps (``None``: never
            within an epoch).
        every_epochs: save after every so many epochs (``None``: never at the end of
            an epoch).
        others: more objects with ``state_dict``/``load_state_dict`` to save under
            their names, e.g. ``{"scheduler": scheduler}``.

    Attributes:
        epoch: the current epoch (the next one to run between epochs).
        step: the steps done in the current epoch.
        steps: the steps done in all.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        model: nn.Module,
        optimizer: Stateful | None = None,
        *,
        every_steps: int | None = None,
        every_epochs: int | None = 1,
        others: Mapping[str, Stateful] | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        self.path = pathlib.Path(path)
        if isinstance(model, _WRAPPERS):
            model = model.module  # the file holds the model's own names
        self.model = model
        self.optimizer = optimizer
        self.every_steps = check_count("every_steps", every_steps, allow_none=True)
        self.every_epochs = check_count("every_epochs", every_epochs, allow_none=True)
        self.others = dict(others or {})
        self.epoch = self.step = self.steps = 0
        self._epoch_random_state: dict | None = None
        self._resumed: dict | None = None  # random states waiting for the loop

    # -------------------------------------------------------- saving and loading
    def save(self) -> None:
        """Write the checkpoint now (collective: every rank calls it)."""
        rank, world = _rank_and_world()
        now = random_state()
        epoch_start = self._epoch_random_state or now
        states = _gather({"now": now, "epoch_start": epoch_start})
        if rank != 0:
            return
        payload = {
            "format": FORMAT,
            "version": VERSION,
            "world_size": world,
            "epoch": self.epoch,
            "step": self.step,
            "steps": self.steps,
            "model": self._model_state(),
            "optimizer": None
            if self.optimizer is None
            else self.optimizer.state_dict(),
            "others": {name: obj.state_dict() for name, obj in self.others.items()},
            "random": states,
        }
        write_atomically(payload, self.path)

    def resume(self) -> bool:
        """Load the checkpoint if the file exists; ``False`` (a fresh start) if not.

        The model, optimiser and other objects get their saved state at once; the
        random state is restored by :meth:`epochs`/:meth:`batches` just before the
        first step that is run again (without the loop helpers, call
        :meth:`restore_random_state`).

        Raises:
            CheckpointError: if the file cannot be read or does not fit the model,
                optimiser, other objects or number of ranks, naming what differs.
        """
        if not self.path.exists():
            return False
        payload = read_checkpoint(self.path)
        rank, world = _rank_and_world()
        if payload["world_size"] != world:
            raise CheckpointError(
                f"checkpoint {str(self.path)!r} was written by {payload['world_size']} "
                f"ranks and this run has {world}: the random state of each rank "
                "cannot be restored; resume with the same number of ranks"
            )
        check_state_matches(payload["model"], self._model_state(), "model")
        self._load_others(payload)
        self.model.load_state_dict(payload["model"], strict=False)  # all but data
        self.epoch, self.step, self.steps = (
            payload["epoch"],
            payload["step"],
            payload["steps"],
        )
        self._resumed = payload["random"][rank]
        return True

    def _model_state(self) -> dict:
        """The model's state without observed values: data, not training state (and
        each rank's own shard under data parallelism)."""
        from borch.distributed import observed_buffer_names  # it imports this module

        observed = set(observed_buffer_names(self.model))
        state = self.model.state_dict()
        return {name: value for name, value in state.items() if name not in observed}

    def _load_others(self, payload: dict) -> None:
        saved_optimizer = payload["optimizer"]
        if (saved_optimizer is None) != (self.optimizer is None):
            had = "an" if saved_optimizer is not None else "no"
            raise CheckpointError(
                f"checkpoint {str(self.path)!r} has {had} optimiser state, but this run "
                f"{'has none' if self.optimizer is None else 'has an optimiser'}"
            )
        saved_others = payload["others"]
        if set(saved_others) != set(self.others):
            raise CheckpointError(
                f"checkpoint {str(self.path)!r} holds the state of "
                f"{sorted(saved_others)} and this run passes {sorted(self.others)}"
            )
        if self.optimizer is not None:
            try:
                self.optimizer.load_state_dict(saved_optimizer)
            except (ValueError, KeyError) as error:
                raise CheckpointError(
                    f"the checkpoint's optimiser state does not fit this optimiser: "
                    f"{error}"
                ) from error
        for name, obj in self.others.items():
            obj.load_state_dict(saved_others[name])

    def restore_random_state(self) -> None:
        """Restore the saved random state of this rank now (:meth:`batches` does it
        at the right moment: call this only when driving the loop by hand)."""
        if self._resumed is not None:
            set_random_state(self._resumed["now"])
            self._resumed = None

    # -------------------------------------------------------- the loop
    def epochs(self, count: int) -> Iterator[int]:
        """The epochs from the current one to ``count - 1``; saves when due after
        each (after the caller's work at the end of the epoch)."""
        count = check_count("count", count, minimum=0)
        if self.step == 0:  # resumed between epochs: continue from the saved state
            self.restore_random_state()
        while self.epoch < count:
            yield self.epoch
            self.epoch += 1
            self.step = 0
            self._epoch_random_state = None
            if self.every_epochs is not None and self.epoch % self.every_epochs == 0:
                self.save()

    def batches(self, loader: Iterable) -> Iterator[Any]:
        """The batches of ``loader`` not yet trained on in this epoch; saves when due
        after each step (when the caller asks for the next batch).

        On a resumed run, the loader is iterated from the random state the epoch
        began with (so that it shuffles as before), the batches done already are
        skipped, and then the random state of the checkpoint is restored.
        """
        resumed, self._resumed = self._resumed, None
        if resumed is not None and self.step == 0:
            set_random_state(resumed["now"])
            resumed = None
        elif resumed is not None:
            set_random_state(resumed["epoch_start"])
        self._epoch_random_state = random_state()
        iterator = iter(loader)
        for _ in range(self.step):
            next(iterator)
        if resumed is not None:
            set_random_state(resumed["now"])
        for batch in iterator:
            yield batch
            self.step += 1
            self.steps += 1
            if self.every_steps is not None and self.steps % self.every_steps == 0:
                self.save()


__all__ = [
    "CheckpointError",
    "Checkpointer",
    "check_state_matches",
    "load_file",
    "random_state",
    "read_checkpoint",
    "set_random_state",
    "write_atomically",
]
