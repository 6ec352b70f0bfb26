"""Workload: one training step of the amortised VAE of ``examples/vae_digits.py``.

Encoder 64 -> 128 -> 2 x 2 (tanh) giving the loc and log-scale of ``q(z | x)``,
decoder 2 -> 128 -> 64 giving pixel logits, ``z ~ Normal(0, 1)`` per image, a
Binomial(16, logits) likelihood of the digits' pixel counts, batches of 128 of the
1347 training digits (a new batch each step, the same sequence for every variant),
the ``N / B``-scaled negative ELBO with the reparameterised ``log q - log p``
estimator at the draw, backward, Adam step.

Variants, all the same math (they follow the same trajectory from the same seed):

* ``borch``: plain ``torch.nn`` networks in a ``borch.Module``, the latent as
  ``borch.RVPair(Normal(0, 1), Normal(loc, scale))`` and the observation inside
  ``borch.plate("data", N, subsample=index)``, ``vi_loss``;
* ``torch``: by hand with ``torch.distributions`` (``Normal``, ``rsample``,
  ``Binomial``), as a torch user writes it;
* ``torch-formulas``: by hand with the densities written out;
* ``pyro``: ``pyro.module`` networks, ``pyro.plate(..., subsample=index)``,
  ``Trace_ELBO``.

Run alone: ``python -m benchmarks.vae [--profile] [--phases]`` (``--phases``: the
median time of each phase of the borch step next to the hand-written one); ``make bench`` runs it with the
other workloads.
"""

from __future__ import annotations

import argparse
import io
import itertools
import time

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
from torch.distributions import Binomial, Normal

from benchmarks import harness

PIXELS, HIDDEN, LATENT = 64, 128, 2
COUNT = 16
BATCH = 128
LR = 3e-3
TRAIN = 1347  # the example's 75% split


def data() -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The first 1347 digits' pixel counts and a fixed cycle of 50 index batches."""
    counts = torch.tensor(load_digits().data[:TRAIN], dtype=torch.float32)
    generator = torch.Generator().manual_seed(0)
    indices = [torch.randperm(TRAIN, generator=generator)[:BATCH] for _ in range(50)]
    return counts, indices


def networks() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    encoder = nn.Sequential(
        nn.Linear(PIXELS, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, 2 * LATENT)
    )
    decoder = nn.Sequential(
        nn.Linear(LATENT, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, PIXELS)
    )
    return encoder, decoder


def encode(encoder: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    loc, log_scale = encoder(x / COUNT).chunk(2, dim=-1)
    return loc, log_scale


def borch_training():
    import borch
    from borch import distributions as dist
    from borch.infer import vi_loss

    class VAE(borch.Module):
        def __init__(self, encoder, decoder):
            super().__init__()
            self.encoder = encoder
            self.decoder = decoder

        def forward(self, x, index):
            loc, log_scale = encode(self.encoder, x)
            with borch.plate("data", TRAIN, subsample=index, dim=-2):
                self.z = borch.RVPair(
                    dist.Normal(0.0, 1.0),
                    dist.Normal(loc, log_scale.exp()),
                )
                self.x = dist.Binomial(COUNT, logits=self.decoder(self.z))

    counts, indices = data()
    model = VAE(*networks())
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    cycle = itertools.cycle(indices)

    def inputs():
        index = next(cycle)
        x = counts[index]
        model.observe(x=x)  # checks the data: outside a compiled loss
        return x, index

    def loss_fn(x, index):
        borch.sample(model)
        model(x, index)
        return vi_loss(**borch.pq_to_infer(model))

    return harness.Training(loss_fn, optimizer, inputs)


def torch_training():
    """By hand with torch.distributions."""
    counts, indices = data()
    encoder, decoder = networks()
    parameters = [*encoder.parameters(), *decoder.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=LR)
    prior = Normal(0.0, 1.0)
    cycle = itertools.cycle(indices)

    def loss_fn(x):
        loc, log_scale = encode(encoder, x)
        q = Normal(loc, log_scale.exp())
        z = q.rsample()
        log_likelihood = Binomial(COUNT, logits=decoder(z)).log_prob(x).sum()
        divergence = (q.log_prob(z) - prior.log_prob(z)).sum()
        return TRAIN / len(x) * (divergence - log_likelihood)

    return harness.Training(loss_fn, optimizer, lambda: (counts[next(cycle)],))


borch_step = harness.training_step(borch_training)
torch_step = harness.training_step(torch_training)


def torch_formulas_step():
    """By hand with the reparameterisation and the densities written out."""
    counts, indices = data()
    encoder, decoder = networks()
    parameters = [*encoder.parameters(), *decoder.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=LR)
    log_n_factorial = torch.lgamma(torch.tensor(COUNT + 1.0))
    cycle = itertools.cycle(indices)

    def step():
        x = counts[next(cycle)]
        loc, log_scale = encode(encoder, x)
        noise = torch.randn_like(loc)
        z = loc + log_scale.exp() * noise
        logits = decoder(z)
        log_likelihood = (
            x * logits
            - COUNT * F.softplus(logits)
            + log_n_factorial
            - torch.lgamma(x + 1)
            - torch.lgamma(COUNT + 1 - x)
        ).sum()
        # log q(z) - log p(z) at the draw; the 0.5 log(2 pi) terms cancel
        divergence = (0.5 * (z**2 - noise**2) - log_scale).sum()
        loss = TRAIN / len(x) * (divergence - log_likelihood)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    return step


def pyro_step():
    import pyro
    import pyro.distributions as pdist
    from pyro.infer import SVI, Trace_ELBO

    counts, indices = data()
    encoder, decoder = networks()
    pyro.clear_param_store()

    def model(x, index):
        pyro.module("decoder", decoder)
        with pyro.plate("data", TRAIN, subsample=index):
            prior = pdist.Normal(x.new_zeros(()), 1.0).expand([len(x), LATENT])
            z = pyro.sample("z", prior.to_event(1))
            likelihood = pdist.Binomial(COUNT, logits=decoder(z))
            pyro.sample("x", likelihood.to_event(1), obs=x)

    def guide(x, index):
        pyro.module("encoder", encoder)
        with pyro.plate("data", TRAIN, subsample=index):
            loc, log_scale = encode(encoder, x)
            pyro.sample("z", pdist.Normal(loc, log_scale.exp()).to_event(1))

    svi = SVI(model, guide, pyro.optim.Adam({"lr": LR}), Trace_ELBO())
    cycle = itertools.cycle(indices)

    def step():
        index = next(cycle)
        svi.step(counts[index], index)

    return step


VARIANTS = {
    "borch": borch_step,
    "borch-compiled": harness.training_step(borch_training, "borch-compiled"),
    "torch": torch_step,
    "torch-compiled": harness.training_step(torch_training, "torch-compiled"),
    "torch-formulas": torch_formulas_step,
    "pyro": pyro_step,
}
STEP_SCALE = 0.5  # steps take milliseconds: half the default block length


def profile_borch(steps: int = 300, top: int = 25) -> str:
    """cProfile of the borch step (see :func:`benchmarks.harness.profile_step`)."""
    from benchmarks import harness

    return harness.profile_step(borch_step, steps, top)


def phase_times(steps: int = 3000, warmup: int = 300) -> str:
    """Median time of each phase of the borch step and of the hand-written one, in
    µs, over ``steps`` interleaved steps of both (``perf_counter_ns`` between the
    phases; the sums exceed the timed steps by the clock reads)."""
    import statistics

    import borch
    from borch import distributions as dist
    from borch.infer import vi_loss

    clock = time.perf_counter_ns

    class VAE(borch.Module):
        def __init__(self, encoder, decoder):
            super().__init__()
            self.encoder = encoder
            self.decoder = decoder

        def forward(self, x, index, marks):
            loc, log_scale = encode(self.encoder, x)
            marks.append(clock())
            with borch.plate("data", TRAIN, subsample=index, dim=-2):
                marks.append(clock())
                prior = dist.Normal(torch.zeros_like(loc), torch.ones_like(loc))
                marks.append(clock())
                approximation = dist.Normal(loc, log_scale.exp())
                marks.append(clock())
                self.z = borch.RVPair(prior, approximation)
                marks.append(clock())
                z = self.z
                marks.append(clock())
                logits = self.decoder(z)
                marks.append(clock())
                self.x = dist.Binomial(COUNT, logits=logits)
                marks.append(clock())

    borch_phases = (
        "borch.sample(model)",
        "model.observe(x=batch)",
        "encoder",
        "plate enter (subsample check)",
        "prior dist.Normal(zeros_like, ones_like)",
        "approximation dist.Normal(loc, exp(log_scale))",
        "self.z = RVPair(prior, approximation)",
        "read self.z (the draw)",
        "decoder",
        "self.x = dist.Binomial(16, logits)",
        "plate exit",
        "pq_to_infer",
        "vi_loss",
        "backward",
        "Adam step + zero_grad",
    )
    torch_phases = (
        "encoder",
        "q = Normal(loc, exp(log_scale))",
        "q.rsample()",
        "decoder",
        "Binomial(16, logits)",
        "log_prob(x).sum()",
        "log q - log p, scaling",
        "backward",
        "Adam step + zero_grad",
    )
    counts, indices = data()
    model = VAE(*networks())
    borch_optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    encoder, decoder = networks()
    torch_optimizer = torch.optim.Adam(
        [*encoder.parameters(), *decoder.parameters()], lr=LR
    )
    prior = Normal(0.0, 1.0)

    def borch_step(x, index):
        marks = [clock()]
        borch.sample(model)
        marks.append(clock())
        model.observe(x=x)
        marks.append(clock())
        model(x, index, marks)
        marks.append(clock())
        inputs = borch.pq_to_infer(model)
        marks.append(clock())
        loss = vi_loss(**inputs)
        marks.append(clock())
        loss.backward()
        marks.append(clock())
        borch_optimizer.step()
        borch_optimizer.zero_grad()
        marks.append(clock())
        return [b - a for a, b in itertools.pairwise(marks)]

    def torch_step(x):
        marks = [clock()]
        loc, log_scale = encode(encoder, x)
        marks.append(clock())
        q = Normal(loc, log_scale.exp())
        marks.append(clock())
        z = q.rsample()
        marks.append(clock())
        logits = decoder(z)
        marks.append(clock())
        likelihood = Binomial(COUNT, logits=logits)
        marks.append(clock())
        log_likelihood = likelihood.log_prob(x).sum()
        marks.append(clock())
        divergence = (q.log_prob(z) - prior.log_prob(z)).sum()
        loss = TRAIN / len(x) * (divergence - log_likelihood)
        marks.append(clock())
        loss.backward()
        marks.append(clock())
        torch_optimizer.step()
        torch_optimizer.zero_grad()
        marks.append(clock())
        return [b - a for a, b in itertools.pairwise(marks)]

    borch_rows, torch_rows = [], []
    for step, index in zip(range(steps), itertools.cycle(indices)):
        x = counts[index]
        borch_row, torch_row = borch_step(x, index), torch_step(x)
        if step >= warmup:
            borch_rows.append(borch_row)
            torch_rows.append(torch_row)
    out = io.StringIO()
    for title, names, rows in (
        ("borch", borch_phases, borch_rows),
        ("torch", torch_phases, torch_rows),
    ):
        out.write(f"{title} step, median us per phase\n")
        for column, name in enumerate(names):
            median = statistics.median(row[column] for row in rows) / 1e3
            out.write(f"{median:9.1f}  {name}\n")
        total = statistics.median(sum(row) for row in rows) / 1e3
        out.write(f"{total:9.1f}  whole step (median)\n")
    return out.getvalue()


def main(argv: list[str] | None = None) -> None:
    from benchmarks import harness

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--blocks", type=int, default=7)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--phases", action="store_true", help="time each phase")
    options = parser.parse_args(argv)
    torch.set_num_threads(1)
    measured = harness.time_steps(
        harness.runnable(VARIANTS), steps=options.steps, blocks=options.blocks
    )
    harness.print_steps(measured)
    if options.profile:
        print(profile_borch())
    if options.phases:
        print(phase_times())


if __name__ == "__main__":
    main()
