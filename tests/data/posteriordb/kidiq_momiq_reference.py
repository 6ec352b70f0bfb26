"""Writes the NUTS reference of kidiq-kidscore_momiq (the borch translation) used by
tests/posterior/test_kidiq.py: ``python -m tests.data.posteriordb.kidiq_momiq_reference``
(about 8 minutes on one core)."""

import json
import pathlib

import numpy as np
import torch

from borch.infer import mcmc
from tests.infer.hmc.posteriordb import kidiq_momiq

HERE = pathlib.Path(__file__).parent


def main():
    torch.set_num_threads(1)
    model, (mom_iq,), _ = kidiq_momiq(dtype=torch.float64)
    result = mcmc(
        model,
        mom_iq,
        dense_mass=True,
        num_samples=5000,
        warmup=1000,
        chains=4,
        seed=1,
        progress=False,
        parallel=False,
    )
    names = ["b1", "b2", "sigma"]
    draws = np.stack([result.samples[name].reshape(-1).numpy() for name in names])
    reference = {
        "posterior": "kidiq-kidscore_momiq",
        "model": "kid_score ~ Normal(b1 + b2 * mom_iq, sigma); b1, b2 ~ Normal(0, 100); "
        "sigma ~ HalfCauchy(2.5); data: kid_score, mom_iq of "
        "kidiq-kidscore_momhsiq.json (N=434)",
        "draws": "borch NUTS, dense_mass=True, 4 chains x 5000 draws after 1000 "
        "warm-up, seed 1, float64 (kidiq_momiq_reference.py)",
        "names": names,
        "means": [round(float(v), 5) for v in draws.mean(1)],
        "sds": [round(float(v), 5) for v in draws.std(1)],
        "corr_b1_b2": round(float(np.corrcoef(draws)[0, 1]), 5),
    }
    path = HERE / "kidiq-kidscore_momiq.reference.json"
    path.write_text(json.dumps(reference, indent=1) + "\n")


if __name__ == "__main__":
    main()
