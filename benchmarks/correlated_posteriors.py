"""Step time of the posterior families on one correlated regression, against Pyro's
autoguide of the same family and a plain-torch full-rank step, in one run.

``w ~ Normal(0, 1)`` (3 collinear predictors), ``sigma ~ HalfCauchy(2.5)``,
``y ~ Normal(x @ w, sigma)`` on 40 points; one step is: new draws, forward, negative
ELBO (one draw), backward, Adam step. Each borch family is timed eager and compiled
(``borch.compile_step``: the loss and Adam's update compiled by inductor), each
Pyro autoguide with ``Trace_ELBO`` and with ``JitTrace_ELBO`` (its step traced by
``torch.jit``); compiled borch is set against Pyro's traced step. Pyro's variants
are skipped when Pyro is not installed, the flow when zuko is not.

Run ``python -m benchmarks.correlated_posteriors`` (one thread); the results go to
``benchmarks/results/correlated_posteriors.json``.
"""

from __future__ import annotations

import importlib.util
import sys

import torch

from benchmarks.harness import (
    COMPILE_SECONDS,
    Training,
    environment,
    time_steps,
    training_step,
    write_json,
)


def data():
    generator = torch.Generator().manual_seed(0)
    common = torch.randn(40, 1, generator=generator)
    x = common + 0.2 * torch.randn(40, 3, generator=generator)
    y = x @ torch.tensor([1.0, -0.5, 0.8]) + 0.5 * torch.randn(40, generator=generator)
    return x, y


def borch_step(family, compiled: str | None = None):
    """The borch step with posterior ``family()``: eager, or compiled under the
    variant name ``compiled``."""

    def make_training() -> Training:
        import borch
        from borch import distributions as dist
        from borch import infer

        x, y = data()

        class Regression(borch.Module):
            def forward(self, x):
                self.w = dist.Normal(torch.zeros(3), 1.0)
                self.sigma = dist.HalfCauchy(2.5)
                self.y = dist.Normal(x @ self.w, self.sigma)
                return self.y

        model = Regression(posterior=family())
        model.observe(y=y)
        model(x)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)

        def loss_fn():
            borch.sample(model)
            model(x)
            return infer.vi_loss(**borch.pq_to_infer(model))

        return Training(loss_fn, optimizer)

    return training_step(make_training, compiled)


def torch_step():
    """A full-rank Gaussian over (w, log sigma) written by hand."""
    from torch.distributions import HalfCauchy, MultivariateNormal, Normal

    x, y = data()
    loc = torch.nn.Parameter(torch.zeros(4))
    raw = torch.nn.Parameter(torch.zeros(4, 4))
    log_diag = torch.nn.Parameter(torch.full((4,), -2.3))
    optimizer = torch.optim.Adam([loc, raw, log_diag], lr=0.01)
    prior_w, prior_sigma = Normal(0.0, 1.0), HalfCauchy(2.5)

    def step():
        scale_tril = torch.tril(raw, -1) + torch.diag(log_diag.exp())
        q = MultivariateNormal(loc, scale_tril=scale_tril)
        u = q.rsample()
        w, sigma = u[:3], u[3].exp()
        log_p = (
            Normal(x @ w, sigma).log_prob(y).sum()
            + prior_w.log_prob(w).sum()
            + prior_sigma.log_prob(sigma)
        )
        loss = q.log_prob(u) - u[3] - log_p
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    return step


def pyro_step(guide_name, jit=False, **options):
    def make():
        import pyro
        import pyro.distributions as pdist
        from pyro.infer import SVI, JitTrace_ELBO, Trace_ELBO, autoguide

        x, y = data()
        pyro.clear_param_store()

        def model(x, y):
            w = pyro.sample("w", pdist.Normal(torch.zeros(3), 1.0).to_event(1))
            sigma = pyro.sample("sigma", pdist.HalfCauchy(2.5))
            with pyro.plate("data", len(x)):
                pyro.sample("y", pdist.Normal(x @ w, sigma), obs=y)

        guide = getattr(autoguide, guide_name)(model, **options)
        elbo = JitTrace_ELBO() if jit else Trace_ELBO()
        svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), elbo)
        return lambda: svi.step(x, y)

    return make


def families() -> dict:
    """borch's posterior families by variant name (the flows when zuko is
    installed)."""
    from borch import posterior

    found = {
        "Normal": posterior.Normal,
        "MultivariateNormal": posterior.MultivariateNormal,
        "LowRankMultivariateNormal": lambda: posterior.LowRankMultivariateNormal(
            rank=2
        ),
    }
    if importlib.util.find_spec("zuko") is not None:
        import zuko

        found["NormalizingFlow"] = lambda: posterior.NormalizingFlow(
            transforms=2, hidden_features=(32, 32)
        )
        found["NormalizingFlow(MAF)"] = lambda: posterior.NormalizingFlow(
            flow=zuko.flows.MAF, transforms=2, hidden_features=(32, 32)
        )
    else:
        print("skipping the flow: zuko not installed", file=sys.stderr)
    return found


#: Pyro's autoguide of each borch family (the default flow, a spline flow, has
#: none of the same kind in Pyro's autoguides).
GUIDES = {
    "Normal": ("AutoNormal", {}),
    "MultivariateNormal": ("AutoMultivariateNormal", {}),
    "LowRankMultivariateNormal": ("AutoLowRankMultivariateNormal", {"rank": 2}),
    # Both affine autoregressive flows of two transforms with two hidden layers of
    # 32; borch draws zuko's MAF through its one-pass direction, which makes it an
    # inverse autoregressive flow like Pyro's.
    "NormalizingFlow(MAF)": (
        "AutoIAFNormal",
        {"hidden_dim": [32, 32], "num_transforms": 2},
    ),
}


#: Pyro's ``JitTrace_ELBO`` fails on its flow guides (an assertion on their
#: parameters, pyro-ppl/pyro#3132, open): those are timed with ``Trace_ELBO`` only.
UNTRACEABLE = {"AutoIAFNormal"}


def variants(compiled: bool = False) -> dict:
    """Every variant's step factory by name; with ``compiled``, also the compiled
    borch steps and Pyro's traced ones (each compiles on creation)."""
    found = {"torch full-rank": torch_step}
    for family, make in families().items():
        found[f"borch {family}"] = borch_step(make)
        if compiled:
            name = f"borch {family} compiled"
            found[name] = borch_step(make, compiled=name)
    if importlib.util.find_spec("pyro") is not None:
        for guide, options in GUIDES.values():
            found[f"pyro {guide}"] = pyro_step(guide, **options)
            if compiled and guide not in UNTRACEABLE:
                found[f"pyro {guide} jit"] = pyro_step(guide, jit=True, **options)
    else:
        print("skipping pyro: not installed", file=sys.stderr)
    return found


#: Each borch variant and the Pyro variant it is set against: eager borch against
#: Pyro's ``Trace_ELBO`` step, compiled borch against Pyro's traced step (its
#: ``Trace_ELBO`` step where it cannot be traced).
PAIRS = {
    **{f"borch {family}": f"pyro {guide}" for family, (guide, _) in GUIDES.items()},
    **{
        f"borch {family} compiled": f"pyro {guide}"
        + ("" if guide in UNTRACEABLE else " jit")
        for family, (guide, _) in GUIDES.items()
    },
}


def main(compiled: bool = True) -> dict:
    torch.set_num_threads(1)
    # Each compiled variant adds entries to dynamo's caches of the same functions
    # (compile_step's traced step, Adam.step); at torch's limit of 8 per function
    # the later variants would run eager.
    torch._dynamo.config.recompile_limit = 64
    measured = time_steps(variants(compiled), steps=100, warmup=30, blocks=5)
    baseline = measured["torch full-rank"].seconds_per_step
    print(f"{'variant':<40}{'ms/step':>9}{'/torch':>8}{'pyro/borch':>12}")
    for name, result in measured.items():
        anchor = measured.get(PAIRS.get(name, ""))
        ratio = (
            f"{anchor.seconds_per_step / result.seconds_per_step:.2f}" if anchor else ""
        )
        print(
            f"{name:<40}{1000 * result.seconds_per_step:>9.3f}"
            f"{result.seconds_per_step / baseline:>8.2f}{ratio:>12}"
        )
    for name, seconds in COMPILE_SECONDS.items():
        print(f"{name}: compiling call {seconds:.1f} s")
    payload = {
        "environment": environment(),
        "results": measured,
        "compile_seconds": dict(COMPILE_SECONDS),
    }
    print(write_json("correlated_posteriors", payload))
    return payload


if __name__ == "__main__":
    main(compiled="--eager" not in sys.argv)
