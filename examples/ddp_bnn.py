"""Distributed training with DDP
=============================

A Bayesian neural-network classifier trained data-parallel with DDP.

scikit-learn's iris data (150 flowers, 4 standardised features, 3 species), 120 for
training and 30 held out. Each rank trains on its shard (``DistributedSampler``),
every rank draws the same weights in a step (same seed), the loss on a shard is the
whole-data negative ELBO estimate of :func:`borch.distributed.sharded_vi_loss`, and
DDP averages the gradients, so a step equals a single-process step on the union of
the ranks' batches.

Run with two CPU processes::

    torchrun --standalone --nproc_per_node=2 examples/ddp_bnn.py

or in one process, without torchrun: ``python examples/ddp_bnn.py``. Each rank prints
its loss; rank 0 prints the held-out accuracy of the posterior predictive. ``--help``
lists the options.

**Surviving a lost rank.** With ``--checkpoint FILE`` the run saves itself every
``--save-every`` epochs through :class:`borch.distributed.Checkpointer` (model,
posterior, optimiser, every rank's random state, the position in the data) and, when
``FILE`` exists, resumes from it. Under ``torchrun --max-restarts`` a rank that dies
(``kill -9`` one of them) takes the job down, torchrun starts every rank again, and
they continue from the last checkpoint, ending with the posterior of an uninterrupted
run::

    torchrun --standalone --nproc_per_node=2 --max-restarts=3 examples/ddp_bnn.py \
        --checkpoint ddp_bnn.pt

A file that is truncated or of another network stops the run with a
``CheckpointError`` naming what is wrong; it never silently starts afresh. The file
of a finished run makes a new launch skip the training (delete it to train again).

The network is written with ``borch.nn`` (default priors, Normal posteriors that start
at torch's initial weights); any borch module that returns logits works in its place.
"""

import argparse
import os

import torch
import torch.distributed as tdist
import torch.nn.functional as F
from sklearn.datasets import load_iris
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

import borch
import borch.nn as nn
from borch import distributed
from borch import distributions as dist


class Classifier(borch.Module):
    """A categorical likelihood ``label`` on the logits of any network."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        logits = self.net(x)
        self.label = dist.Categorical(logits=logits)
        return logits


def iris(seed=0):
    """Standardised features and labels, split 120/30 by a fixed permutation."""
    features, labels = load_iris(return_X_y=True)
    x = torch.tensor(features, dtype=torch.float32)
    x = (x - x.mean(0)) / x.std(0)
    y = torch.tensor(labels)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    train, test = order[:120], order[120:]
    return (x[train], y[train]), (x[test], y[test])


def setup():
    """Join the process group torchrun describes (gloo on CPU, nccl on GPU), in a way
    that also works when torchrun restarts the ranks."""
    if "WORLD_SIZE" not in os.environ or tdist.is_initialized():
        return torch.device("cpu")
    if torch.cuda.is_available():
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local_rank)
        distributed.init_process_group("nccl")
        return torch.device("cuda", local_rank)
    distributed.init_process_group("gloo")
    return torch.device("cpu")


def predictive_accuracy(model, x, y, draws=50):
    """Accuracy of the posterior predictive mean class probabilities."""
    with torch.no_grad():
        probs = 0.0
        for _ in range(draws):
            borch.sample(model)
            probs = probs + F.softmax(model.net(x), dim=-1) / draws
    return float((probs.argmax(-1) == y).float().mean())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=40, help="per rank")
    parser.add_argument("--hidden", type=int, default=8)
    parser.add_argument("--lr", type=float, default=0.03)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--print-every", type=int, default=50)
    parser.add_argument(
        "--checkpoint", help="file to save the run to and resume it from (optional)"
    )
    parser.add_argument("--save-every", type=int, default=10, help="epochs")
    args = parser.parse_args(argv)

    device = setup()
    rank, world = distributed.rank(), distributed.world_size()
    (x_train, y_train), (x_test, y_test) = iris(args.seed)
    x_train, y_train = x_train.to(device), y_train.to(device)

    distributed.seed(args.seed)  # the same weights drawn on every rank
    net = nn.Sequential(
        nn.Linear(x_train.shape[1], args.hidden), nn.Tanh(), nn.Linear(args.hidden, 3)
    )
    model = Classifier(net).to(device)
    # One forward creates every approximating variable (a network that assigns its
    # weights in forward creates them only now) before DDP fixes its parameters.
    model.observe(label=y_train[:1])
    model(x_train[:1])
    borch.sample(model)
    wrapper = distributed.data_parallel(model) if tdist.is_initialized() else model
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    dataset = TensorDataset(x_train, y_train)
    sampler = DistributedSampler(dataset, world, rank, shuffle=True, seed=args.seed)
    batches = DataLoader(dataset, batch_size=args.batch_size, sampler=sampler)
    epochs, resumable = range(args.epochs), lambda loader: loader
    if args.checkpoint is not None:
        # The checkpointer's loops skip what a resumed run has done and save when due.
        checkpoints = distributed.Checkpointer(
            args.checkpoint, wrapper, optimizer, every_epochs=args.save_every
        )
        if checkpoints.resume():
            print(
                f"rank {rank}/{world} resumed at epoch {checkpoints.epoch}", flush=True
            )
        epochs, resumable = checkpoints.epochs(args.epochs), checkpoints.batches
    for epoch in epochs:
        sampler.set_epoch(epoch)
        total = 0.0
        for xb, yb in resumable(batches):
            borch.sample(wrapper)
            model.observe(label=yb)
            wrapper(xb)
            loss = distributed.sharded_vi_loss(
                **borch.pq_to_infer(wrapper),
                dataset_size=len(dataset),
                batch_size=len(yb),
            )
            borch.infer.nonfinite_guard(model, loss)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) / len(batches)
        if epoch % args.print_every == 0 or epoch == args.epochs - 1:
            print(f"rank {rank}/{world} epoch {epoch:4d} loss {total:9.3f}", flush=True)

    if rank == 0:
        accuracy = predictive_accuracy(model, x_test.to(device), y_test.to(device))
        print(f"held-out accuracy {accuracy:.3f} ({len(y_test)} flowers)", flush=True)
    if tdist.is_initialized():
        tdist.barrier()
        tdist.destroy_process_group()
    return model


if __name__ == "__main__":
    main()
