"""Monte Carlo error checks for sampler tests.

Estimates from Markov chains are checked against exact values within a number of Monte
Carlo standard errors, the MCSE from ArviZ's ESS (it accounts for autocorrelation).
"""

import numpy as np

from borch.infer.hmc.result import import_arviz


def mcse_mean(draws: np.ndarray) -> float:
    """ESS-based Monte Carlo standard error of the mean of ``draws (chains, n)``."""
    arviz = import_arviz()
    # .item(): with numba installed ArviZ gives an array of shape (1,), which
    # numpy 2.4 refuses to convert with float()
    mcse = arviz.mcse(np.asarray(draws, dtype=np.float64), method="mean")
    return float(np.asarray(mcse).item())


def assert_mean_within_mcse(draws: np.ndarray, exact: float, n_mcse: float = 4.0):
    """``|mean(draws) - exact| <= n_mcse * MCSE``."""
    draws = np.asarray(draws, dtype=np.float64)
    error = abs(draws.mean() - exact)
    bound = n_mcse * mcse_mean(draws)
    assert error <= bound, (
        f"mean {draws.mean():.4f} vs exact {exact:.4f}: {error:.4f} > {bound:.4f}"
    )


def rhat(draws: np.ndarray) -> float:
    """Rank-normalised split r-hat of ``draws (chains, n)``."""
    arviz = import_arviz()
    return float(np.asarray(arviz.rhat(np.asarray(draws, dtype=np.float64))).item())
