"""posteriordb's kidiq-kidscore_momiq fitted with ``posterior.MultivariateNormal()``
in a plain ``torch.optim.Adam`` loop (no schedule, the last iterate), against borch's
NUTS reference ``tests/data/posteriordb/kidiq-kidscore_momiq.reference.json``.

For each learning rate, step count, seed and loss (one-draw ``vi_loss``, or
``particle_vi_loss`` with 16 particles), the errors the issue judges: the largest
mean error in posterior sds, the largest relative sd error (sigma's from 20,000
draws of the joint), the intercept-slope correlation's error; plus the default's
first call (the Laplace start) in seconds and ``init="prior"`` for contrast.

Run ``python -m benchmarks.kidiq_adam`` (one thread, a few minutes); the results go
to ``benchmarks/results/kidiq_adam.json``.
"""

from __future__ import annotations

import time

import torch

import borch
from benchmarks.harness import environment, write_json
from borch import infer, posterior
from tests.infer.hmc.posteriordb import kidiq_momiq

#: (lr, steps, seed, particles or None for one-draw vi_loss, init)
CONFIGS = [
    (0.01, 2000, 0, None, "laplace"),
    (0.01, 10000, 0, None, "laplace"),
    (0.05, 2000, 0, None, "laplace"),
    (0.05, 10000, 0, None, "laplace"),
    (0.02, 5000, 1, None, "laplace"),
    (0.05, 2000, 1, 16, "laplace"),
    (0.05, 2000, 0, None, "prior"),
]


def fit(lr, steps, seed, particles, init):
    torch.manual_seed(seed)
    model, (mom_iq,), _ = kidiq_momiq(posterior=posterior.MultivariateNormal(init=init))
    start = time.perf_counter()
    model(mom_iq)
    first_call = time.perf_counter() - start
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        if particles:
            loss = infer.particle_vi_loss(model, mom_iq, num_particles=particles)
        else:
            borch.sample(model)
            model(mom_iq)
            loss = infer.vi_loss(**borch.pq_to_infer(model))
        loss.backward()
        optimizer.step()
    return model.posterior.unconstrained_distribution(), first_call


def errors(joint, reference):
    mean = joint.mean.detach().double()
    covariance = joint.covariance_matrix.detach().double()
    sd = covariance.diagonal().sqrt()
    draws = joint.sample((20_000,)).detach().double()
    sigma = draws[:, 2].exp()
    means = torch.stack([mean[0], mean[1], sigma.mean()])
    sds = torch.stack([sd[0], sd[1], sigma.std()])
    ref_means = torch.tensor(reference["means"], dtype=torch.float64)
    ref_sds = torch.tensor(reference["sds"], dtype=torch.float64)
    correlation = (covariance[0, 1] / sd[0] / sd[1]).item()
    return {
        "mean_error_sd": ((means - ref_means) / ref_sds).abs().max().item(),
        "sd_error": (sds / ref_sds - 1).abs().max().item(),
        "correlation_error": abs(correlation - reference["corr_b1_b2"]),
        "means": means.tolist(),
        "sds": sds.tolist(),
        "correlation": correlation,
    }


def main() -> dict:
    torch.set_num_threads(1)
    _, _, reference = kidiq_momiq()
    results = []
    print(
        f"{'lr':>5}{'steps':>7}{'seed':>5}{'loss':>10}{'init':>9}"
        f"{'mean err/sd':>13}{'sd err':>8}{'corr err':>10}{'start s':>9}"
    )
    for lr, steps, seed, particles, init in CONFIGS:
        joint, first_call = fit(lr, steps, seed, particles, init)
        row = {
            "lr": lr,
            "steps": steps,
            "seed": seed,
            "particles": particles,
            "init": init,
            "first_call_s": first_call,
            **errors(joint, reference),
        }
        results.append(row)
        loss = f"pvi({particles})" if particles else "vi"
        print(
            f"{lr:>5}{steps:>7}{seed:>5}{loss:>10}{init:>9}"
            f"{row['mean_error_sd']:>13.3f}{row['sd_error']:>8.3f}"
            f"{row['correlation_error']:>10.4f}{first_call:>9.2f}",
            flush=True,
        )
    payload = {"environment": environment(), "results": results}
    print(write_json("kidiq_adam", payload))
    return payload


if __name__ == "__main__":
    main()
