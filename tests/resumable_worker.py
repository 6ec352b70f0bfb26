"""A resumable data-parallel training run, launched by ``torchrun`` from
``tests/test_checkpointing.py``.

``--kill-at-step K`` makes rank 1 kill itself with SIGKILL at its K-th step on the
first attempt only (``TORCHELASTIC_RESTART_COUNT`` is 0), so that ``torchrun
--max-restarts=1`` restarts the job from the last checkpoint. Rank 0 writes the final
model state to ``--out``.
"""

import argparse
import os
import signal

import torch
import torch.distributed as tdist
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

import borch
import borch.nn as nn
from borch import distributed
from borch import distributions as dist

N, FEATURES = 48, 3


class Regression(borch.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(FEATURES, 4), nn.Tanh(), nn.Linear(4, 1))

    def forward(self, x):
        self.noise = dist.LogNormal(0.0, 1.0)
        self.y = dist.Normal(self.net(x).squeeze(-1), self.noise)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--kill-at-step", type=int, default=-1)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()

    distributed.init_process_group("gloo")
    rank, world = distributed.rank(), distributed.world_size()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(N, FEATURES, generator=generator)
    y = x.sum(-1) + 0.3 * torch.randn(N, generator=generator)

    distributed.seed(5)
    model = Regression()
    model.observe(y=y[:2])
    model(x[:2])
    wrapper = distributed.data_parallel(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    checkpoints = distributed.Checkpointer(
        args.checkpoint, wrapper, optimizer, every_steps=3
    )
    checkpoints.resume()
    dataset = TensorDataset(x, y)
    sampler = DistributedSampler(dataset, world, rank, shuffle=True, seed=1)
    loader = DataLoader(dataset, batch_size=4, sampler=sampler)
    first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
    for epoch in checkpoints.epochs(args.epochs):
        sampler.set_epoch(epoch)
        for xb, yb in checkpoints.batches(loader):
            if rank == 1 and first_attempt and checkpoints.steps == args.kill_at_step:
                os.kill(os.getpid(), signal.SIGKILL)
            borch.sample(wrapper)
            model.observe(y=yb)
            wrapper(xb)
            loss = distributed.sharded_vi_loss(
                **borch.pq_to_infer(wrapper), dataset_size=N, batch_size=len(yb)
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    if rank == 0:
        state = {k: v for k, v in model.state_dict().items() if "observed" not in k}
        torch.save({"state": state, "steps": checkpoints.steps}, args.out)
    tdist.barrier()
    tdist.destroy_process_group()


if __name__ == "__main__":
    main()
