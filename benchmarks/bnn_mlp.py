"""Workload: one training step of a Bayesian MLP 64 -> 256 -> 256 -> 10, batch 128.

Mean-field Normal posteriors over every weight and bias (locs at torch's
initialisation, scales ``exp(-5)``), ``Normal(0, 1)`` priors on every weight and
bias (the :mod:`borch.nn` defaults),
reparameterised draws, a categorical likelihood of the labels and the analytic KL
divergence. One step: new draws, forward, negative ELBO, backward, Adam step.

Variants, all the same math:

* ``borch``: ``borch.nn.Linear`` layers, ``vi_loss(...,
  div_fn=analytical_kl_divergence_loss)``;
* ``torch``: by hand with ``torch.distributions`` (``Normal``, ``rsample``,
  ``kl_divergence``, ``Categorical``), priors built once, as a torch user writes it;
* ``torch-formulas``: by hand with the KL written out and ``F.cross_entropy``;
* ``pyro``: ``PyroModule`` + ``PyroSample`` priors, ``AutoNormal`` guide,
  ``Trace_ELBO`` (Pyro's standard estimator: sampled, not analytic, KL).

Run alone: ``python -m benchmarks.bnn_mlp`` (prints the ratios, peak memory and a
profile of the borch step); ``make bench`` runs it with the other workloads.
"""

from __future__ import annotations

import argparse
import itertools
import math

import torch
import torch.nn.functional as F
from torch.distributions import Categorical, Normal, kl_divergence

from benchmarks import harness

SIZES = (64, 256, 256, 10)
BATCH = 128
LOG_SCALE = -5.0
LR = 1e-3


def data():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, SIZES[0], generator=generator)
    y = torch.randint(0, SIZES[-1], (BATCH,), generator=generator)
    return x, y


def _prior_sd(fan_in: int, is_weight: bool) -> float:
    return 1.0  # borch.nn's default prior: Normal(0, 1) for every parameter


def _torch_parameters():
    """Posterior parameters: locs at torch.nn.Linear's initialisation."""
    params = []
    for fan_in, fan_out in itertools.pairwise(SIZES):
        linear = torch.nn.Linear(fan_in, fan_out)
        for tensor, is_weight in ((linear.weight, True), (linear.bias, False)):
            loc = torch.nn.Parameter(tensor.detach().clone())
            log_scale = torch.nn.Parameter(torch.full_like(loc, LOG_SCALE))
            params.append((loc, log_scale, _prior_sd(fan_in, is_weight)))
    return params


def borch_training():
    import borch
    from borch import distributions as dist
    from borch import nn
    from borch.infer import analytical_kl_divergence_loss, vi_loss

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(SIZES[0], SIZES[1])
            self.fc2 = nn.Linear(SIZES[1], SIZES[2])
            self.fc3 = nn.Linear(SIZES[2], SIZES[3])

        def forward(self, x):
            hidden = F.relu(self.fc1(x))
            hidden = F.relu(self.fc2(hidden))
            logits = self.fc3(hidden)
            self.y = dist.Categorical(logits=logits)
            return logits

    x, y = data()
    model = MLP()
    model.observe(y=y)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)

    def loss_fn():
        borch.sample(model)
        model(x)
        return vi_loss(**borch.pq_to_infer(model), div_fn=analytical_kl_divergence_loss)

    return harness.Training(loss_fn, optimizer)


def torch_training():
    """By hand with torch.distributions, priors built once."""
    x, y = data()
    params = _torch_parameters()
    priors = [Normal(0.0, sd) for _, _, sd in params]
    optimizer = torch.optim.Adam([p for loc, ls, _ in params for p in (loc, ls)], lr=LR)

    def loss_fn():
        posteriors = [Normal(loc, log_scale.exp()) for loc, log_scale, _ in params]
        w1, b1, w2, b2, w3, b3 = [q.rsample() for q in posteriors]
        hidden = F.relu(F.linear(x, w1, b1))
        hidden = F.relu(F.linear(hidden, w2, b2))
        logits = F.linear(hidden, w3, b3)
        loss = -Categorical(logits=logits).log_prob(y).sum()
        for q, p in zip(posteriors, priors):
            loss = loss + kl_divergence(q, p).sum()
        return loss

    return harness.Training(loss_fn, optimizer)


borch_step = harness.training_step(borch_training)
torch_step = harness.training_step(torch_training)


def torch_formulas_step():
    """By hand with the reparameterisation and the KL written out."""
    x, y = data()
    params = _torch_parameters()
    optimizer = torch.optim.Adam([p for loc, ls, _ in params for p in (loc, ls)], lr=LR)

    def step():
        weights, kl = [], 0.0
        for loc, log_scale, sd in params:
            scale = log_scale.exp()
            weights.append(loc + scale * torch.randn_like(loc))
            kl = (
                kl
                + (
                    math.log(sd) - log_scale + (scale**2 + loc**2) / (2 * sd**2) - 0.5
                ).sum()
            )
        w1, b1, w2, b2, w3, b3 = weights
        hidden = F.relu(F.linear(x, w1, b1))
        hidden = F.relu(F.linear(hidden, w2, b2))
        logits = F.linear(hidden, w3, b3)
        loss = F.cross_entropy(logits, y, reduction="sum") + kl
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    return step


def pyro_step():
    import pyro
    import pyro.distributions as pdist
    from pyro.infer import SVI, Trace_ELBO
    from pyro.infer.autoguide import AutoNormal
    from pyro.nn import PyroModule, PyroSample

    x, y = data()
    pyro.clear_param_store()

    class MLP(PyroModule):
        def __init__(self):
            super().__init__()
            layers = []
            for fan_in, fan_out in itertools.pairwise(SIZES):
                layer = PyroModule[torch.nn.Linear](fan_in, fan_out)
                layer.weight = PyroSample(
                    pdist.Normal(0.0, _prior_sd(fan_in, True))
                    .expand([fan_out, fan_in])
                    .to_event(2)
                )
                layer.bias = PyroSample(
                    pdist.Normal(0.0, 1.0).expand([fan_out]).to_event(1)
                )
                layers.append(layer)
            self.layers = PyroModule[torch.nn.ModuleList](layers)

        def forward(self, x, y=None):
            hidden = F.relu(self.layers[0](x))
            hidden = F.relu(self.layers[1](hidden))
            logits = self.layers[2](hidden)
            with pyro.plate("data", x.shape[0]):
                pyro.sample("y", pdist.Categorical(logits=logits), obs=y)
            return logits

    model = MLP()
    guide = AutoNormal(model, init_scale=math.exp(LOG_SCALE))
    svi = SVI(model, guide, pyro.optim.Adam({"lr": LR}), Trace_ELBO())
    return lambda: svi.step(x, y)


VARIANTS = {
    "borch": borch_step,
    "borch-compiled": harness.training_step(borch_training, "borch-compiled"),
    "torch": torch_step,
    "torch-compiled": harness.training_step(torch_training, "torch-compiled"),
    "torch-formulas": torch_formulas_step,
    "pyro": pyro_step,
}
MEMORY_VARIANTS = {"borch": borch_step, "torch": torch_step}
STEP_SCALE = 0.5  # steps take milliseconds: half the default block length


def profile_borch(steps: int = 300, top: int = 25) -> str:
    """cProfile of the borch step (see :func:`benchmarks.harness.profile_step`)."""

    return harness.profile_step(borch_step, steps, top)


def main(argv: list[str] | None = None) -> None:

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--blocks", type=int, default=7)
    parser.add_argument("--profile", action="store_true")
    options = parser.parse_args(argv)
    torch.set_num_threads(1)
    measured = harness.time_steps(
        harness.runnable(VARIANTS), steps=options.steps, blocks=options.blocks
    )
    harness.print_steps(measured)
    base = measured["torch"].seconds_per_step
    peaks = {name: harness.peak_memory(make) for name, make in MEMORY_VARIANTS.items()}
    print(
        f"peak memory: borch {peaks['borch'] / 1e6:.2f} MB, torch "
        f"{peaks['torch'] / 1e6:.2f} MB, ratio {peaks['borch'] / peaks['torch']:.2f}"
    )
    harness.write_json(
        "bnn_mlp",
        {
            "environment": harness.environment(),
            "seconds_per_step": {k: v.seconds_per_step for k, v in measured.items()},
            "spread": {k: v.spread for k, v in measured.items()},
            "ratio_to_torch": {
                k: v.seconds_per_step / base for k, v in measured.items()
            },
            "peak_bytes": peaks,
        },
    )
    if options.profile:
        print(profile_borch())


if __name__ == "__main__":
    main()
