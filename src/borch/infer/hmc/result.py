"""The result of :func:`borch.infer.mcmc`: draws, sampler statistics, diagnostics."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

#: A chain with at least this fraction of divergent draws is flagged as unreliable.
DIVERGENT_CHAIN_FRACTION = 0.5

#: The names ArviZ gives statistics whose field names in a kernel's info differ;
#: every other field keeps its name in ``sample_stats``.
ARVIZ_NAMES = {
    "accept_prob": "acceptance_rate",
    "num_steps": "n_steps",
    "log_density": "lp",
}


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
        stats: ``{field: tensor (chains, draws, ...)}``, every field of the kernel's
            info after warm-up, and ``log_density``. The attributes below are the
            usual ones (``None`` where the kernel does not report them).
        divergences: bool ``(chains, draws)``, whether each transition diverged
            (all false for a kernel without a ``diverging`` field).
        accept_prob: ``(chains, draws)``, the mean acceptance statistic of each
            transition's trajectory.
        tree_depth: ``(chains, draws)``, the doublings of each trajectory.
        num_steps: ``(chains, draws)``, the leapfrog steps of each trajectory.
        energy: ``(chains, draws)``, the Hamiltonian at each draw.
        log_density: ``(chains, draws)``, the log density of each draw in
            unconstrained space (up to a constant).
        step_size: ``(chains,)``, the adapted step size of each chain (``None`` for
            a kernel without one).
        inverse_mass_matrix: the adapted inverse mass matrix of each chain:
            ``(chains, dim)`` diagonals, or ``(chains, dim, dim)`` matrices with
            ``dense_mass`` (``None`` for a kernel without one).
        final_positions: ``(chains, dim)``, the unconstrained position of each
            chain's last draw (where ``mcmc(continue_from=result)`` starts).
        dense_mass: the ``dense_mass`` the run adapted.
        seed: the seed the chains were drawn from.
        traced: whether the draws of every chain came from the model's log density
            replayed from a trace (fast), rather than from running the model (models
            with value-dependent control flow, or a chain whose trace failed a
            check).
        traced_chains: the same per chain, a list of bools.
        divergent_chains: the chains where at least half the transitions diverged;
            their draws are not from the posterior.
    """

    def __init__(
        self,
        samples: dict[str, Tensor],
        stats: Mapping[str, Tensor],
        step_size: Tensor | None,
        inverse_mass_matrix: Tensor | None,
        seed: int,
        traced: bool | Sequence[bool],
        final_positions: Tensor | None = None,
        dense_mass: bool | Sequence[Sequence[str]] = False,
        model: Any = None,
        positions: Tensor | None = None,
    ) -> None:
        self.samples = samples
        self.stats = dict(stats)
        shape = self.stats["log_density"].shape
        self.divergences = self.stats.get("diverging")
        if self.divergences is None:
            self.divergences = torch.zeros(shape, dtype=torch.bool)
        self.accept_prob = self.stats.get("accept_prob")
        self.tree_depth = self.stats.get("tree_depth")
        self.num_steps = self.stats.get("num_steps")
        self.energy = self.stats.get("energy")
        self.log_density = self.stats["log_density"]
        self.step_size = step_size
        self.inverse_mass_matrix = inverse_mass_matrix
        self.seed = seed
        self.final_positions = final_positions
        self.dense_mass = dense_mass
        self._model = model  # a ModelPotential, for the log likelihood
        self._positions = positions  # unconstrained, (chains, draws, dim)
        self._log_likelihood: dict[str, Tensor] | None = None
        if isinstance(traced, bool):
            traced = [traced] * shape[0]
        self.traced_chains = [bool(t) for t in traced]
        self.traced = all(self.traced_chains)
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

    def log_likelihood(self) -> dict[str, Tensor]:
        """The log likelihood of each draw, element by element, for every observed
        variable: ``{name: (chains, draws, *batch_shape)}`` (computed by running the
        model at each draw on the first call).

        Example:
            >>> import torch
            >>> import borch
            >>> from borch import distributions as dist
            >>> class Mean(borch.Module):
            ...     def forward(self):
            ...         self.mu = dist.Normal(0.0, 1.0)
            ...         self.y = dist.Normal(self.mu.expand(3), 1.0)
            >>> model = Mean()
            >>> model.observe(y=torch.tensor([0.1, -0.4, 0.3]))
            >>> result = borch.infer.mcmc(
            ...     model, num_samples=20, warmup=20, chains=2, seed=0, progress=False
            ... )
            >>> result.log_likelihood()["y"].shape
            torch.Size([2, 20, 3])
        """
        if self._model is None or self._positions is None:
            raise ValueError(
                "this MCMCResult does not know its model, so it cannot compute the "
                "log likelihood of its draws"
            )
        if self._log_likelihood is None:
            flat = self._positions.reshape(-1, self._positions.shape[-1]).numpy()
            pointwise = self._model.pointwise_log_likelihood(flat)
            shape = (self.num_chains, self.num_draws)
            self._log_likelihood = {
                name: value.reshape(*shape, *value.shape[1:])
                for name, value in pointwise.items()
            }
        return self._log_likelihood

    def to_arviz(
        self,
        log_likelihood: bool = True,
        posterior_predictive: Mapping[str, Tensor] | None = None,
    ) -> Any:
        """An ArviZ ``InferenceData`` with ``posterior`` and ``sample_stats`` groups,
        and ``log_likelihood`` and ``observed_data`` for model comparison
        (``arviz.loo``, ``arviz.waic``).

        Args:
            log_likelihood: add the ``log_likelihood`` group (see
                :meth:`log_likelihood`; it runs the model once per draw) and
                ``observed_data``.
            posterior_predictive: draws of observed variables ``{name: (chains,
                draws, *shape)}`` (or ``(chains * draws, *shape)``, e.g. the output
                of :func:`borch.infer.predictive`), added as
                ``posterior_predictive``.

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
        sample_stats = {"diverging": _numpy(self.divergences)}
        for name, value in self.stats.items():
            sample_stats[ARVIZ_NAMES.get(name, name)] = _numpy(value)
        if self.step_size is not None:
            step_size = self.step_size[:, None].expand(self.num_chains, self.num_draws)
            sample_stats["step_size"] = _numpy(step_size)
        groups: dict[str, Any] = {}
        if log_likelihood and self._model is not None:
            pointwise = self.log_likelihood()
            if pointwise:
                groups["log_likelihood"] = {k: _numpy(v) for k, v in pointwise.items()}
                groups["observed_data"] = {
                    k: _numpy(v) for k, v in self._model.observed_data().items()
                }
        if posterior_predictive is not None:
            shape = (self.num_chains, self.num_draws)
            groups["posterior_predictive"] = {
                name: _numpy(_by_chain(torch.as_tensor(value), shape, name))
                for name, value in posterior_predictive.items()
            }
        return arviz.from_dict(posterior=posterior, sample_stats=sample_stats, **groups)

    def summary(self, **kwargs: Any) -> Any:
        """ArviZ's summary table: mean, sd, HDI, MCSE, bulk and tail ESS, r-hat.

        Keyword arguments go to ``arviz.summary`` (e.g. ``hdi_prob=0.9``). If chains
        mostly diverged, a ``RuntimeWarning`` says which, and the table's
        ``attrs["warning"]`` holds the message.
        """
        arviz = import_arviz()
        table = arviz.summary(self.to_arviz(log_likelihood=False), **kwargs)
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
            idata = self.to_arviz(log_likelihood=False)
            axes = arviz.plot_trace(idata, var_names=var_names)
        figure = axes.ravel()[0].figure
        figure.tight_layout()
        if path is not None:
            figure.savefig(path, dpi=100)
            plt.close(figure)
        return figure

    def __repr__(self) -> str:
        names = ", ".join(self.samples)
        text = (
            f"MCMCResult({self.num_chains} chains x {self.num_draws} draws of {names}; "
            f"{self.num_divergent} divergent transitions"
        )
        if self.step_size is not None:
            text += "; step sizes " + ", ".join(
                f"{s:.3g}" for s in self.step_size.tolist()
            )
        text += ")"
        if self.divergent_chains:
            text += f" [unreliable chains: {self.divergent_chains}]"
        return text


def _by_chain(value: Tensor, shape: tuple[int, int], name: str) -> Tensor:
    """Draws ``(chains, draws, ...)`` or ``(chains * draws, ...)`` as the former."""
    if tuple(value.shape[:2]) == shape:
        return value
    if value.shape[:1] == (shape[0] * shape[1],):
        return value.reshape(*shape, *value.shape[1:])
    raise ValueError(
        f"posterior_predictive['{name}'] has shape {tuple(value.shape)}: expected "
        f"{shape[0]} chains x {shape[1]} draws first, as (chains, draws, ...) or "
        "(chains * draws, ...)"
    )


def _numpy(tensor: Tensor) -> Any:
    return tensor.detach().cpu().numpy()


__all__ = ["ARVIZ_NAMES", "DIVERGENT_CHAIN_FRACTION", "MCMCResult", "import_arviz"]
