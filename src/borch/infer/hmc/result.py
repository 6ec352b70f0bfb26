"""The result of :func:`borch.infer.mcmc`: draws, sampler statistics, diagnostics."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

#: A chain with at least this fraction of divergent draws is flagged as unreliable.
DIVERGENT_CHAIN_FRACTION = 0.5


def import_arviz() -> Any:
    """Import ArviZ (the optional extra ``mcmc``) or explain how to install it."""
    try:
        with warnings.catch_warnings():
            # ArviZ 0.2x announces its coming refactor on import; nothing to act on.
            warnings.filterwarnings(
                "ignore", message=r"\s*ArviZ is undergoing", category=FutureWarning
            )
            import arviz
    except ImportError as error:
        raise ImportError(
            "MCMC diagnostics need ArviZ: pip install 'borch[mcmc]' (or pip install "
            "arviz)"
        ) from error
    return arviz


class MCMCResult:
    """Draws from :func:`borch.infer.mcmc` and what the sampler did.

    Attributes:
        samples: ``{name: tensor (chains, draws, *shape)}`` of latent values in their
            constrained space. Names are those :func:`borch.condition` takes:
            ``"mu"`` for ``model.mu``, ``"layer.weight"`` for a variable of the
            submodule ``model.layer``.
        divergences: bool ``(chains, draws)``, whether each transition diverged.
        accept_prob: ``(chains, draws)``, the mean acceptance statistic of each
            transition's trajectory.
        tree_depth: ``(chains, draws)``, the doublings of each trajectory.
        num_steps: ``(chains, draws)``, the leapfrog steps of each trajectory.
        energy: ``(chains, draws)``, the Hamiltonian at each draw.
        log_density: ``(chains, draws)``, the log density of each draw in
            unconstrained space (up to a constant).
        step_size: ``(chains,)``, the adapted step size of each chain.
        inverse_mass_matrix: ``(chains, dim)``, the adapted diagonal of each chain.
        seed: the seed the chains were drawn from.
        traced: whether the model's log density was replayed from a trace (fast) or
            evaluated by running the model (models with value-dependent control flow).
        divergent_chains: the chains where at least half the transitions diverged;
            their draws are not from the posterior.
    """

    def __init__(
        self,
        samples: dict[str, Tensor],
        stats: dict[str, Tensor],
        step_size: Tensor,
        inverse_mass_matrix: Tensor,
        seed: int,
        traced: bool,
    ) -> None:
        self.samples = samples
        self.divergences = stats["diverging"]
        self.accept_prob = stats["accept_prob"]
        self.tree_depth = stats["tree_depth"]
        self.num_steps = stats["num_steps"]
        self.energy = stats["energy"]
        self.log_density = stats["log_density"]
        self.step_size = step_size
        self.inverse_mass_matrix = inverse_mass_matrix
        self.seed = seed
        self.traced = traced
        fractions = self.divergences.float().mean(1)
        self.divergent_chains = [
            int(chain)
            for chain in torch.nonzero(fractions >= DIVERGENT_CHAIN_FRACTION).flatten()
        ]

    @property
    def num_chains(self) -> int:
        return self.divergences.shape[0]

    @property
    def num_draws(self) -> int:
        return self.divergences.shape[1]

    @property
    def num_divergent(self) -> int:
        """The number of divergent transitions after warm-up, over all chains."""
        return int(self.divergences.sum())

    def divergence_warning(self) -> str | None:
        """A message about the chains that mostly diverged (``None`` if there are none)."""
        if not self.divergent_chains:
            return None
        fractions = self.divergences.float().mean(1)
        parts = ", ".join(
            f"chain {chain} ({fractions[chain]:.0%})" for chain in self.divergent_chains
        )
        return (
            f"most transitions diverged in {parts} of {self.num_draws} draws: those "
            "chains did not explore the posterior and their draws are not samples from "
            "it. Reparameterise the model (e.g. non-centred), raise target_accept, or "
            "check the priors and the likelihood for regions of zero density."
        )

    def to_arviz(self) -> Any:
        """An ArviZ ``InferenceData`` with ``posterior`` and ``sample_stats`` groups.

        Example:
            >>> import torch
            >>> import borch
            >>> from borch import distributions as dist
            >>> class Model(borch.Module):
            ...     def forward(self):
            ...         self.mu = dist.Normal(0.0, 1.0)
            >>> result = borch.infer.mcmc(
            ...     Model(), num_samples=50, warmup=50, chains=2, seed=0, progress=False
            ... )
            >>> idata = result.to_arviz()
            >>> idata.posterior["mu"].shape
            (2, 50)
            >>> sorted(idata.sample_stats.data_vars)  # doctest: +NORMALIZE_WHITESPACE
            ['acceptance_rate', 'diverging', 'energy', 'lp', 'n_steps', 'step_size',
             'tree_depth']
        """
        arviz = import_arviz()
        posterior = {name: _numpy(value) for name, value in self.samples.items()}
        step_size = self.step_size[:, None].expand(self.num_chains, self.num_draws)
        sample_stats = {
            "diverging": _numpy(self.divergences),
            "acceptance_rate": _numpy(self.accept_prob),
            "tree_depth": _numpy(self.tree_depth),
            "n_steps": _numpy(self.num_steps),
            "energy": _numpy(self.energy),
            "lp": _numpy(self.log_density),
            "step_size": _numpy(step_size),
        }
        return arviz.from_dict(posterior=posterior, sample_stats=sample_stats)

    def summary(self, **kwargs: Any) -> Any:
        """ArviZ's summary table: mean, sd, HDI, MCSE, bulk and tail ESS, r-hat.

        Keyword arguments go to ``arviz.summary`` (e.g. ``hdi_prob=0.9``). If chains
        mostly diverged, a ``RuntimeWarning`` says which, and the table's
        ``attrs["warning"]`` holds the message.
        """
        arviz = import_arviz()
        table = arviz.summary(self.to_arviz(), **kwargs)
        message = self.divergence_warning()
        if message is not None:
            warnings.warn(message, RuntimeWarning, stacklevel=2)
            table.attrs["warning"] = message
        table.attrs["num_divergent"] = self.num_divergent
        return table

    def plot_trace(
        self, var_names: Sequence[str] | None = None, path: str | None = None
    ) -> Any:
        """ArviZ's trace plot (densities and draws per chain) of ``var_names`` (all
        by default); saved as an image to ``path`` if given. Returns the figure.

        Needs matplotlib; a figure saved to ``path`` is closed afterwards.
        """
        arviz = import_arviz()
        try:
            import matplotlib.pyplot as plt
        except ImportError as error:
            raise ImportError(
                "plots need matplotlib: pip install 'borch[plots]'"
            ) from error
        with warnings.catch_warnings():
            # ArviZ 0.2x calls a matplotlib helper the way matplotlib 3.11 deprecates.
            warnings.filterwarnings(
                "ignore", message="Passing a dict or None as alias_mapping"
            )
            axes = arviz.plot_trace(self.to_arviz(), var_names=var_names)
        figure = axes.ravel()[0].figure
        figure.tight_layout()
        if path is not None:
            figure.savefig(path, dpi=100)
            plt.close(figure)
        return figure

    def __repr__(self) -> str:
        names = ", ".join(self.samples)
        steps = ", ".join(f"{s:.3g}" for s in self.step_size.tolist())
        text = (
            f"MCMCResult({self.num_chains} chains x {self.num_draws} draws of {names}; "
            f"{self.num_divergent} divergent transitions; step sizes {steps})"
        )
        if self.divergent_chains:
            text += f" [unreliable chains: {self.divergent_chains}]"
        return text


def _numpy(tensor: Tensor) -> Any:
    return tensor.detach().cpu().numpy()


__all__ = ["DIVERGENT_CHAIN_FRACTION", "MCMCResult", "import_arviz"]
