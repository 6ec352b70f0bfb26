"""A Laplace posterior over a model's point masses, block by block; made by
:func:`borch.infer.laplace_posterior`.

Draws (by name, for :func:`borch.infer.predictive`), the linearised (GLM)
predictive, the log marginal likelihood and the tuning of the prior precision by it
or by a validation set.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from borch.conditioning import simulate_observed
from borch.infer.laplace.approximation import Laplace, _count
from borch.infer.laplace.curvature import check_rows, jacobian_pieces, watching
from borch.infer.laplace.likelihood import OutputParameters, output_parameters
from borch.infer.laplace.structures import (
    DenseBlock,
    scalar_prior_term,
)
from borch.infer.laplace.validation import VALIDATION_GRID, check_rule, choose
from borch.sites import sites
from borch.traversal import sample


class LaplacePosterior:
    """A Gaussian over some of a model's latent variables (unconstrained values),
    made of independent blocks; see :func:`borch.infer.laplace_posterior`.

    Attributes:
        names: the approximated latent variables.
        structure: ``"full"``, ``"diag"``, ``"kfac"`` or ``"lowrank"``.
        blocks: one per linear layer (``"diag"``, ``"kfac"``) or other variable, or
            a single one (``"full"``, ``"lowrank"``).
        log_likelihood: the log likelihood of the data at the mode.
    """

    def __init__(
        self,
        model: nn.Module,
        blocks: list,
        transforms: dict,
        structure: str,
        log_likelihood: float,
        model_priors: Callable[[], list],
        min_eigenvalue: float | None,
    ) -> None:
        self.model = model
        self.blocks = blocks
        self.structure = structure
        self.names = [name for block in blocks for name in block.names]
        self.log_likelihood = log_likelihood
        self._transforms = transforms
        self._model_prior_function = model_priors
        self._model_prior_cache: list | None = None
        self._min_eigenvalue = min_eigenvalue
        self._priors: list[Tensor] | None = None  # None: the model's own

    # ------------------------------------------------------------------ prior
    @property
    def prior_precision(self) -> list[Tensor] | None:
        """One precision per block (``None`` while the model's own priors are used).
        Set a number or one per block."""
        return None if self._priors is None else list(self._priors)

    @prior_precision.setter
    def prior_precision(self, value: float | Sequence[float] | Tensor | None) -> None:
        self._priors = None if value is None else self._per_block(value)

    def _per_block(self, value: Any) -> list[Tensor]:
        values = torch.as_tensor(value, dtype=torch.float64).reshape(-1)
        if values.numel() == 1:
            values = values.expand(len(self.blocks))
        if values.numel() != len(self.blocks):
            raise ValueError(
                f"prior_precision: one number or one per block ({len(self.blocks)}: "
                f"{[b.names for b in self.blocks]}), got {values.numel()}"
            )
        if not bool((values > 0).all()) or not bool(torch.isfinite(values).all()):
            raise ValueError(
                f"prior_precision must be positive and finite, got {values.tolist()}"
            )
        return list(values.unbind())

    @property
    def _model_priors(self) -> list:
        """Per block: the curvature of the model's own prior and its log density at
        the mode (computed when first needed)."""
        if self._model_prior_cache is None:
            self._model_prior_cache = self._model_prior_function()
        return self._model_prior_cache

    def _block_priors(self) -> list[Tensor]:
        if self._priors is not None:
            return self._priors
        return [curvature for curvature, _ in self._model_priors]

    # ---------------------------------------------------------------- evidence
    def log_marginal_likelihood(
        self, prior_precision: float | Sequence[float] | Tensor | None = None
    ) -> Tensor:
        """The Laplace estimate of the log evidence ``log p(data)``: the log joint at
        the mode plus ``P/2 log 2 pi - 1/2 log det(precision)``.

        Args:
            prior_precision: evaluate at this Gaussian prior (a number or one per
                block; differentiable when a tensor) instead of the current one.
        """
        if prior_precision is None and self._priors is None:
            priors = self._block_priors()
            log_prior = sum(log_density for _, log_density in self._model_priors)
        else:
            if prior_precision is None:
                priors = self._priors
            elif isinstance(prior_precision, Tensor) and prior_precision.requires_grad:
                priors = list(prior_precision.reshape(-1).expand(len(self.blocks)))
            else:
                priors = self._per_block(prior_precision)
            log_prior = sum(
                scalar_prior_term(block, prior)
                for block, prior in zip(self.blocks, priors)
            )
        size = sum(block.size for block in self.blocks)
        log_det = sum(block.log_det(prior) for block, prior in zip(self.blocks, priors))
        return (
            self.log_likelihood
            + log_prior
            + 0.5 * size * math.log(2 * math.pi)
            - 0.5 * log_det
        )

    def optimize_prior_precision(
        self,
        method: str = "marginal_likelihood",
        per_layer: bool = False,
        validation: tuple | None = None,
        steps: int = 200,
        num_samples: int = 100,
        rule: str = "one_standard_error",
        link: str = "mc",
    ) -> list[Tensor]:
        """Tune the Gaussian prior precision and keep it; returns it per block.

        Args:
            method: ``"marginal_likelihood"`` (Adam on the log precision, maximising
                :meth:`log_marginal_likelihood`) or ``"validation"`` (a value of
                :data:`~borch.infer.laplace.validation.VALIDATION_GRID` chosen by
                ``rule`` from the log predictive densities of ``validation``
                under the linearised predictive).
            per_layer: one precision per block (marginal likelihood only).
            validation: ``(args, targets)``: the model's inputs (a tuple) and
                ``{observed name: values}``.
            steps: Adam steps for the marginal likelihood.
            num_samples: Monte Carlo draws of the validation predictive.
            rule: ``"one_standard_error"``: the widest prior whose validation log
                density is within one standard error (of the per-point
                differences) of the best one; ``"best"``: the best one. See
                :mod:`borch.infer.laplace.validation`.
            link: the predictive scored: ``"mc"`` or ``"probit"``, as in
                :meth:`predictive`.
        """
        if method == "marginal_likelihood":
            count = len(self.blocks) if per_layer else 1
            log_precision = torch.zeros(count, dtype=torch.float64, requires_grad=True)
            optimizer = torch.optim.Adam([log_precision], lr=0.1)
            for _ in range(steps):
                optimizer.zero_grad()
                loss = -self.log_marginal_likelihood(log_precision.exp())
                loss.backward()
                optimizer.step()
            self.prior_precision = log_precision.detach().exp()
        elif method == "validation":
            if per_layer:
                raise ValueError("per_layer=True needs method='marginal_likelihood'")
            check_rule(rule)
            log_densities = self._validation_log_densities(
                validation, _count(num_samples), link
            )
            self.prior_precision = VALIDATION_GRID[choose(log_densities, rule)]
        else:
            raise ValueError(
                f"method must be 'marginal_likelihood' or 'validation', got {method!r}"
            )
        return self.prior_precision

    def _validation_log_densities(
        self, validation: Any, num_samples: int, link: str
    ) -> Tensor:
        """``(grid, points)``: every validation value's log predictive density
        under every value of the grid."""
        if not (isinstance(validation, tuple) and len(validation) == 2):
            raise TypeError(
                "validation must be (args, targets): the model's inputs as a tuple "
                "and {observed name: values}"
            )
        args, targets = validation
        if not isinstance(targets, Mapping):
            raise TypeError(
                f"validation targets must be {{observed name: values}}, got "
                f"{type(targets).__name__}"
            )
        if link not in ("mc", "probit"):
            raise ValueError(f"link must be 'mc' or 'probit', got {link!r}")
        linearised = self.linearise(*args)
        for name in targets:
            if name not in linearised:
                raise ValueError(
                    f"validation targets name '{name}', which is not an observed "
                    f"variable of this run; they are {list(linearised)}"
                )
        rows = []
        for value in VALIDATION_GRID:
            priors = self._per_block(value)
            per_point = []
            for name, target in targets.items():
                output = linearised[name]
                target = target.to(output.mean.device)
                if link == "probit":
                    per_point.append(output.probit(priors).log_prob(target).reshape(-1))
                    continue
                predictive = output.sample_distribution(
                    priors, num_samples, torch.Generator().manual_seed(0)
                )
                log_density = predictive.log_prob(target).reshape(num_samples, -1)
                per_point.append(log_density.logsumexp(0) - math.log(num_samples))
            rows.append(torch.cat(per_point).double().cpu())
        return torch.stack(rows)

    # ------------------------------------------------------------------ draws
    def samples(
        self, n: int, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """``{name: (n, *shape)}`` draws of the latent values; the model is unchanged."""
        return self._constrained(self._unconstrained(_count(n), generator))

    def posterior_samples(
        self, n: int, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """Draws shaped ``(1, n, *shape)`` as :func:`borch.infer.predictive`'s
        ``posterior_samples=`` takes them (latent variables outside the
        approximation keep their point values)."""
        return {k: v.unsqueeze(0) for k, v in self.samples(n, generator).items()}

    def _unconstrained(self, n: int, generator) -> dict[str, Tensor]:
        draws = {}
        for block, prior in zip(self.blocks, self._block_priors()):
            noise = block.noise(prior, n, generator)
            for name, mean, part in zip(block.names, block.mean, noise):
                draws[name] = mean + part.to(mean.device)
        return draws

    def _constrained(self, draws: dict[str, Tensor]) -> dict[str, Tensor]:
        with torch.no_grad():
            return {
                name: self._transforms[name](value) for name, value in draws.items()
            }

    def mode(self) -> dict[str, Tensor]:
        """``{name: value}`` at the mode the approximation was built at."""
        return self._constrained(
            {n: m for block in self.blocks for n, m in zip(block.names, block.mean)}
        )

    def draw(self, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Set the model's latent variables to one joint draw; return their values.
        :meth:`restore` puts the mode back."""
        draws = {k: v[0] for k, v in self._unconstrained(1, generator).items()}
        self._write(draws)
        return self._constrained(draws)

    def restore(self) -> None:
        """Put the point masses back at the mode the approximation was built at."""
        self._write(
            {n: m for block in self.blocks for n, m in zip(block.names, block.mean)}
        )

    @contextlib.contextmanager
    def drawn(self, generator: torch.Generator | None = None) -> Iterator[dict]:
        """A ``with`` block in which the model uses one joint draw (restored after)."""
        try:
            yield self.draw(generator)
        finally:
            self.restore()

    def _write(self, values: dict[str, Tensor]) -> None:
        with torch.no_grad():
            for block in self.blocks:
                for name, param in zip(block.names, block.params):
                    param.copy_(values[name])

    @property
    def laplace(self) -> Laplace:
        """``structure="full"``: the dense :class:`Laplace` (mean, covariance, ...)."""
        if self.structure != "full":
            raise AttributeError(
                f"laplace: only structure='full' has a dense Laplace, this is "
                f"{self.structure!r}"
            )
        (block,) = self.blocks
        (prior,) = self._block_priors()
        matrix = torch.diag(prior) if prior.dim() == 1 else prior
        if prior.dim() == 0:
            matrix = prior * torch.eye(block.size, dtype=torch.float64)
        precision = block.curvature + matrix.to(block.curvature.device)
        return Laplace.from_precision(precision, block.params, self._min_eigenvalue)

    # ------------------------------------------------------------- predictive
    def linearise(self, *args: Any, **kwargs: Any) -> dict[str, LinearisedOutput]:
        """Run ``model(*args, **kwargs)`` at the mode and linearise every observed
        site's output parameters in the approximated variables."""
        records_of = [
            block.record for block in self.blocks if hasattr(block, "record")
        ] + [
            member.record
            for block in self.blocks
            if isinstance(block, DenseBlock)
            for member in block.members
            if member.record is not None
        ]
        paths = [record.path for record in records_of]
        sample(self.model)
        try:
            with watching(self.model, paths) as records, simulate_observed(self.model):
                with torch.enable_grad():
                    self.model(*args, **kwargs)
                run_sites = sites(self.model)
            new_records = [records[path] for path in paths]
            outputs = {}
            for site in run_sites:
                if site.observed:
                    outputs[site.name] = self._linearise_site(site, new_records)
        finally:
            sample(self.model)
        return outputs

    def _linearise_site(self, site, records) -> LinearisedOutput:
        parameters = output_parameters(site)
        if not parameters.varying:
            empty = torch.zeros(parameters.count, 0)
            return LinearisedOutput(parameters, empty, self.blocks, [])
        used = [r for r in records if r.calls]
        check_rows(used, parameters)
        flat = parameters.unconstrained_flat()
        count, size = flat.shape
        others = [p for block in self.blocks for p in _other_params(block)]
        per_direction = []
        for k in range(size):
            direction = torch.zeros_like(flat)
            direction[:, k] = 1
            pieces, rows = jacobian_pieces(flat, direction, used, others)
            per_direction.append(
                (
                    dict(zip([r.path for r in used], pieces)),
                    dict(zip(map(id, others), rows)),
                )
            )
        jacobians = []  # per block
        for block in self.blocks:
            if isinstance(block, DenseBlock):
                stacked = [
                    block.rows(pieces, other_rows, count, flat)
                    for pieces, other_rows in per_direction
                ]
                jacobians.append(("dense", torch.stack(stacked, dim=1)))
                continue
            grads = [pieces.get(block.record.path) for pieces, _ in per_direction]
            if any(g is None for g in grads):
                jacobians.append(None)
                continue
            stacked = torch.stack([g.grad for g in grads], dim=1)
            jacobians.append(("linear", stacked, grads[0].inputs))
        return LinearisedOutput(parameters, flat.detach(), self.blocks, jacobians)

    def predictive(
        self,
        *args: Any,
        num_samples: int = 100,
        link: str = "mc",
        generator: torch.Generator | None = None,
        **kwargs: Any,
    ) -> dict[str, Distribution]:
        """The linearised (GLM) predictive of every observed site at the inputs.

        Args:
            *args, **kwargs: the model's inputs.
            num_samples: draws of the output parameters for ``link="mc"``.
            link: ``"mc"``: the likelihood at ``num_samples`` draws of its
                parameters from their Gaussian under the linearised model (a
                distribution with a leading sample dimension; average its
                ``probs`` or draw from it); ``"probit"``: for ``Categorical`` and
                ``Bernoulli`` logits, the probit approximation of the mean
                probabilities (MacKay, 1992), a distribution without a sample
                dimension.

        Returns:
            ``{observed name: torch distribution}``.
        """
        priors = self._block_priors()
        outputs = self.linearise(*args, **kwargs)
        if link == "mc":
            return {
                name: output.sample_distribution(priors, _count(num_samples), generator)
                for name, output in outputs.items()
            }
        if link == "probit":
            return {name: output.probit(priors) for name, output in outputs.items()}
        raise ValueError(f"link must be 'mc' or 'probit', got {link!r}")


def _other_params(block) -> list[Tensor]:
    return block.other_params() if isinstance(block, DenseBlock) else []


class LinearisedOutput:
    """The output parameters of one likelihood at new inputs, linearised: their
    value at the mode (off their constraints, see
    :meth:`~borch.infer.laplace.likelihood.OutputParameters.unconstrained_flat`) and
    their Jacobians, to be combined with any prior."""

    def __init__(
        self, parameters: OutputParameters, mean: Tensor, blocks: list, jacobians: list
    ):
        self.parameters = parameters
        self.mean = mean
        self._blocks = blocks
        self._jacobians = jacobians

    def covariance(self, priors: list[Tensor]) -> Tensor:
        """``(B, K, K)``: the covariance of the output parameters."""
        count, size = self.mean.shape
        total = torch.zeros(
            count, size, size, dtype=torch.float64, device=self.mean.device
        )
        for block, prior, jacobian in zip(self._blocks, priors, self._jacobians):
            if jacobian is None:
                continue
            if jacobian[0] == "dense":
                total = total + block.output_covariance(jacobian[1], prior)
            else:
                total = total + block.output_covariance(jacobian[1], jacobian[2], prior)
        return total

    def sample_distribution(
        self, priors: list[Tensor], num_samples: int, generator
    ) -> Distribution:
        if not self.parameters.varying:  # the latents do not reach this likelihood
            return self.parameters.distribution
        covariance = self.covariance(priors)
        values, vectors = torch.linalg.eigh(covariance)
        root = vectors * values.clamp(min=0).sqrt().unsqueeze(-2)
        noise = torch.randn(
            (num_samples, *self.mean.shape), dtype=torch.float64, generator=generator
        ).to(self.mean.device)
        draws = self.mean + torch.einsum("bkl,sbl->sbk", root, noise).to(
            self.mean.dtype
        )
        return self.parameters.rebuild(self.parameters.constrained(draws))

    def probit(self, priors: list[Tensor]) -> Distribution:
        kind = type(self.parameters.distribution).__name__
        if set(self.parameters.varying) != {"logits"} or kind not in (
            "Categorical",
            "Bernoulli",
        ):
            raise ValueError(
                f"link='probit' needs a Categorical or Bernoulli likelihood given by "
                f"logits; '{self.parameters.name}' is {kind} with "
                f"{list(self.parameters.varying)}"
            )
        variance = self.covariance(priors).diagonal(dim1=-2, dim2=-1)
        scaled = self.mean / (1 + math.pi / 8 * variance).sqrt().to(self.mean.dtype)
        return self.parameters.rebuild(self.parameters.constrained(scaled))


__all__ = ["VALIDATION_GRID", "LaplacePosterior", "LinearisedOutput"]
