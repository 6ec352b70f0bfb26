"""Step time of the posterior families on one correlated regression, against Pyro's
autoguide of the same family and a plain-torch full-rank step, in one run.

``w ~ Normal(0, 1)`` (3 collinear predictors), ``sigma ~ HalfCauchy(2.5)``,
``y ~ Normal(x @ w, sigma)`` on 40 points; one step is: new draws, forward, negative
ELBO (one draw), backward, Adam step. Pyro's variants are skipped when Pyro is not
installed, the flow when zuko is not.

Run ``python -m benchmarks.correlated_posteriors`` (one thread); the results go to
``benchmarks/results/correlated_posteriors.json``.
"""

from __future__ import annotations

import importlib.util
import sys

import torch

from benchmarks.harness import environment, time_steps, write_json


def data():
    generator = torch.Generator().manual_seed(0)
    common = torch.randn(40, 1, generator=generator)
    x = common + 0.2 * torch.randn(40, 3, generator=generator)
    y = x @ torch.tensor([1.0, -0.5, 0.8]) + 0.5 * torch.randn(40, generator=generator)
    return x, y


def borch_step(family):
    def make():
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

        def step():
            borch.sample(model)
            model(x)
            infer.vi_loss(**borch.pq_to_infer(model)).backward()
            optimizer.step()
            optimizer.zero_grad()

        return step

    return make


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


def pyro_step(guide_name, **options):
    def make():
        import pyro
        import pyro.distributions as pdist
        from pyro.infer import SVI, Trace_ELBO, autoguide

        x, y = data()
        pyro.clear_param_store()

        def model(x, y):
            w = pyro.sample("w", pdist.Normal(torch.zeros(3), 1.0).to_event(1))
            sigma = pyro.sample("sigma", pdist.HalfCauchy(2.5))
            with pyro.plate("data", len(x)):
                pyro.sample("y", pdist.Normal(x @ w, sigma), obs=y)

        guide = getattr(autoguide, guide_name)(model, **options)
        svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
        return lambda: svi.step(x, y)

    return make


def variants() -> dict:
    from borch import posterior

    found = {
        "torch full-rank": torch_step,
        "borch Normal": borch_step(posterior.Normal),
        "borch MultivariateNormal": borch_step(posterior.MultivariateNormal),
        "borch LowRankMultivariateNormal": borch_step(
            lambda: posterior.LowRankMultivariateNormal(rank=2)
        ),
    }
    if importlib.util.find_spec("zuko") is not None:
        import zuko

        found["borch NormalizingFlow"] = borch_step(
            lambda: posterior.NormalizingFlow(transforms=2, hidden_features=(32, 32))
        )
        found["borch NormalizingFlow(MAF)"] = borch_step(
            lambda: posterior.NormalizingFlow(
                flow=zuko.flows.MAF, transforms=2, hidden_features=(32, 32)
            )
        )
    else:
        print("skipping the flow: zuko not installed", file=sys.stderr)
    if importlib.util.find_spec("pyro") is not None:
        found["pyro AutoNormal"] = pyro_step("AutoNormal")
        found["pyro AutoMultivariateNormal"] = pyro_step("AutoMultivariateNormal")
        found["pyro AutoLowRankMultivariateNormal"] = pyro_step(
            "AutoLowRankMultivariateNormal", rank=2
        )
        found["pyro AutoIAFNormal"] = pyro_step(
            "AutoIAFNormal", hidden_dim=[32, 32], num_transforms=2
        )
    else:
        print("skipping pyro: not installed", file=sys.stderr)
    return found


PAIRS = {
    "borch Normal": "pyro AutoNormal",
    "borch MultivariateNormal": "pyro AutoMultivariateNormal",
    "borch LowRankMultivariateNormal": "pyro AutoLowRankMultivariateNormal",
    # Both affine autoregressive flows of two transforms with two hidden layers of
    # 32; borch draws zuko's MAF through its one-pass direction, which makes it an
    # inverse autoregressive flow like Pyro's.
    "borch NormalizingFlow(MAF)": "pyro AutoIAFNormal",
}


def main() -> dict:
    torch.set_num_threads(1)
    measured = time_steps(variants(), steps=100, warmup=30, blocks=5)
    baseline = measured["torch full-rank"].seconds_per_step
    print(f"{'variant':<36}{'ms/step':>9}{'/torch':>8}{'pyro/borch':>12}")
    for name, result in measured.items():
        anchor = measured.get(PAIRS.get(name, ""))
        ratio = (
            f"{anchor.seconds_per_step / result.seconds_per_step:.2f}" if anchor else ""
        )
        print(
            f"{name:<36}{1000 * result.seconds_per_step:>9.3f}"
            f"{result.seconds_per_step / baseline:>8.2f}{ratio:>12}"
        )
    payload = {"environment": environment(), "results": measured}
    print(write_json("correlated_posteriors", payload))
    return payload


if __name__ == "__main__":
    main()
