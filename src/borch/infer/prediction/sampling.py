"""Posterior predictive sampling: run a model under many posterior draws.

``predictive(model, x)`` runs ``model(x)`` once per posterior draw and returns, for
every random variable the model used, its values stacked along a new leading sample
dimension; observed variables are drawn from their likelihood (the data stay as they
are). The draws come from the model's approximating distributions (variational
inference, point estimates) or, with ``posterior_samples=``, from the samples of an
MCMC run, one run per sample.

``vectorize=True`` draws every sample in one pass: each latent variable gets a leading
sample dimension, placed left of ``batch_dims`` batch dimensions (as Pyro does with
``max_plate_nesting``), so the model's code must broadcast over it. The looped result
of a first run fixes the shape every site must have; a model that fails or gives other
shapes falls back to the loop with a :class:`VectorizationWarning`. ``torch.func.vmap``
cannot do this job: ``torch.distributions`` draws its Normal, Exponential, Laplace,
Cauchy and multivariate Normal noise in place into fresh unbatched tensors, which
``vmap(randomness="different")`` rejects (torch 2.13).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping, Sequence
from numbers import Number
from typing import Any

import torch
from torch import Tensor, nn

from borch.conditioning import condition, resolve_variable, simulate_observed
from borch.module import borch_modules
from borch.random_variable import particles
from borch.sites import sites
from borch.traversal import sample
from borch.validation import check_count

#: The key of the model's stacked return value in the result of :func:`predictive`.
RETURN = "_return"


class VectorizationWarning(UserWarning):
    """``predictive(vectorize=True)`` could not batch the draws and looped instead."""


def predictive(
    model: nn.Module,
    *args: Any,
    num_samples: int | None = 100,
    posterior_samples: Any = None,
    return_sites: Sequence[str] | None = None,
    vectorize: bool = False,
    batch_dims: int = 1,
    **kwargs: Any,
) -> dict[str, Tensor | Any]:
    """Draws of every random variable and of the return value of ``model(*args)``.

    Each run draws the latent variables anew from the posterior and the observed
    variables from their likelihood given those latents, so the observed sites are
    posterior predictive draws for the inputs ``args``. The runs happen under
    ``torch.no_grad()`` with the model in eval mode. Afterwards observed values,
    parameters, buffers and training flags are as before; the current draws are new
    and nothing is marked used (as after ``borch.sample(model, prior=True)``), so run
    the model again before computing a loss.

    Args:
        model: a module whose forward assigns random variables.
        *args: the model's positional inputs.
        **kwargs: the model's keyword inputs.
        num_samples: the number of draws. With ``posterior_samples`` it is the most
            to use: more samples are thinned evenly across all chains, ``None`` uses
            them all.
        posterior_samples: draws of the latent variables to condition on instead of
            drawing from the approximations: a dict ``{qualified name: tensor of shape
            (chains, draws, *shape)}`` (the ``.samples`` of an MCMC result, or any
            object with such a ``samples`` attribute). Qualified names are those of
            :func:`borch.condition`. Latent variables missing from it are drawn from
            their approximations.
        return_sites: the names to return (qualified names and ``"_return"``); all
            by default.
        vectorize: draw all samples in one batched pass (see the module docstring);
            the loop is the fallback, with a :class:`VectorizationWarning` saying why.
        batch_dims: with ``vectorize``, how many batch dimensions the model's
            variables use; the sample dimension goes left of them.

    Returns:
        ``{qualified name: tensor (num_samples, *shape)}`` for every random variable
        the model used, in the order of first use, and ``"_return"``: the return
        value with every tensor (also inside tuples, lists and dicts) stacked the same
        way; a model returning ``None`` has no ``"_return"``.

    Example:
        >>> import torch
        >>> import borch
        >>> from borch import distributions as dist
        >>> torch.manual_seed(0)
        <torch._C.Generator object at ...>
        >>> class Regression(borch.Module):
        ...     def forward(self, x):
        ...         self.slope = dist.Normal(0.0, 1.0)
        ...         self.y = dist.Normal(self.slope * x, 0.1)
        ...         return self.slope * x
        >>> model = Regression()
        >>> model.observe(y=torch.tensor([1.0, 2.0]))
        >>> draws = predictive(model, torch.tensor([1.0, 2.0, 3.0]), num_samples=50)
        >>> {name: tuple(value.shape) for name, value in draws.items()}
        {'slope': (50,), 'y': (50, 3), '_return': (50, 3)}
        >>> model.observed.y
        tensor([1., 2.])
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"predictive: model must be a torch.nn.Module, got {type(model).__name__}"
        )
    draws, count = _posterior_draws(posterior_samples, num_samples)
    wanted = _check_return_sites(return_sites)
    batch_dims = check_count("batch_dims", batch_dims, minimum=0)
    run = _Runner(model, args, kwargs, draws, wanted)
    with _prediction_mode(model):
        result = None
        if vectorize:
            result, reason = run.vectorized(count, batch_dims)
            if result is None:
                warnings.warn(
                    f"predictive(vectorize=True) fell back to one run per draw: "
                    f"{reason}",
                    VectorizationWarning,
                    stacklevel=2,
                )
        if result is None:
            result = run.looped(count)
    return result


def _posterior_draws(
    posterior_samples: Any, num_samples: int | None
) -> tuple[dict[str, Tensor] | None, int]:
    """The draws to condition on, flattened over chains and thinned, and their count."""
    num_samples = check_count("num_samples", num_samples, minimum=1, allow_none=True)
    if posterior_samples is None:
        if num_samples is None:
            raise ValueError(
                "predictive: num_samples=None (use every sample) needs posterior_samples"
            )
        return None, num_samples
    samples = getattr(posterior_samples, "samples", posterior_samples)
    if not isinstance(samples, Mapping):
        raise TypeError(
            "predictive: posterior_samples must be a dict {name: tensor (chains, "
            "draws, *shape)} or have such a .samples attribute, got "
            f"{type(posterior_samples).__name__}"
        )
    if not samples:
        raise ValueError("predictive: posterior_samples is empty")
    leading = None
    for key, value in samples.items():
        if not isinstance(key, str):
            raise TypeError(
                f"predictive: posterior_samples keys must be variable names, got {key!r}"
            )
        if not isinstance(value, Tensor):
            raise TypeError(
                f"predictive: posterior_samples['{key}'] must be a tensor, got "
                f"{type(value).__name__}"
            )
        if value.dim() < 2:
            raise ValueError(
                f"predictive: posterior_samples['{key}'] must have shape (chains, "
                f"draws, *shape), got {tuple(value.shape)}"
            )
        if leading is None:
            leading = (key, value.shape[:2])
        elif value.shape[:2] != leading[1]:
            raise ValueError(
                f"predictive: posterior_samples['{key}'] has (chains, draws) = "
                f"{tuple(value.shape[:2])} but posterior_samples['{leading[0]}'] has "
                f"{tuple(leading[1])}"
            )
    total = leading[1].numel()
    if total == 0:
        raise ValueError(
            f"predictive: posterior_samples has no draws (chains, draws) = "
            f"{tuple(leading[1])}"
        )
    count = total if num_samples is None else min(num_samples, total)
    index = torch.arange(count) * total // count  # evenly spaced, chain after chain
    flat = {
        key: value.reshape(total, *value.shape[2:])[index.to(value.device)]
        for key, value in samples.items()
    }
    return flat, count


def _check_return_sites(return_sites: Sequence[str] | None) -> list[str] | None:
    if return_sites is None:
        return None
    if isinstance(return_sites, str) or not all(
        isinstance(name, str) for name in return_sites
    ):
        raise TypeError(
            "predictive: return_sites must be a sequence of names, got "
            f"{return_sites!r}"
        )
    return list(return_sites)


@contextlib.contextmanager
def _prediction_mode(model: nn.Module) -> Iterator[None]:
    """No gradients, eval mode, observed variables simulated; restore afterwards."""
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.no_grad(), simulate_observed(model):
            yield
    finally:
        # Draws made here (some with a sample dimension) must not outlive the call.
        sample(model, posterior=True, prior=True)
        for module, flag in flags:
            module.training = flag


class _Runner:
    """Runs the model once per draw (or once for all draws) and records its sites."""

    def __init__(self, model, args, kwargs, draws, wanted) -> None:
        self.model = model
        self.args = args
        self.kwargs = kwargs
        self.draws = draws
        self.wanted = wanted

    # ------------------------------------------------------------------ one run
    def run(self, values: dict[str, Tensor] | None) -> dict[str, Any]:
        """Run the model once, conditioned on ``values``; its sites and return value."""
        with condition(self.model, values or {}):
            sample(self.model, posterior=True, prior=True)
            output = self.model(*self.args, **self.kwargs)
            values = {site.name: site.value for site in sites(self.model)}
        if output is not None:
            values[RETURN] = output
        return values

    def first_run(self) -> dict[str, Any]:
        """The first run, with gradients enabled: approximations the model has not
        created yet are created in it, and a posterior tells arguments that depend on
        other variables from constants by whether they carry gradients."""
        with torch.enable_grad():
            sites = _copy(self.run(self.draw(0)))
        self.check_first_run(sites)
        return self.select(sites)

    def draw(self, index: int) -> dict[str, Tensor] | None:
        if self.draws is None:
            return None
        return {key: value[index] for key, value in self.draws.items()}

    def check_first_run(self, sites: dict[str, Any]) -> None:
        """Names in ``posterior_samples`` and ``return_sites`` must be sites."""
        names = [name for name in sites if name != RETURN]
        for key in self.draws or {}:
            if key not in sites:
                raise ValueError(
                    f"predictive: posterior_samples has '{key}', which the model did "
                    f"not assign in this call; its variables are {names}"
                )
        for name in self.wanted or ():
            if name not in sites:
                raise ValueError(
                    f"predictive: return_sites has '{name}', which is not a variable "
                    f"of the model in this call nor '{RETURN}' of a model that returns "
                    f"something; the variables are {names}"
                )

    def select(self, sites: dict[str, Any]) -> dict[str, Any]:
        if self.wanted is None:
            return sites
        return {name: sites[name] for name in self.wanted}

    # --------------------------------------------------------------------- loop
    def looped(self, count: int) -> dict[str, Any]:
        runs = [self.first_run()]
        runs += [self.select(self.run(self.draw(index))) for index in range(1, count)]
        return {name: _stack([run[name] for run in runs], name) for name in runs[0]}

    # --------------------------------------------------------------- vectorised
    def vectorized(
        self, count: int, batch_dims: int
    ) -> tuple[dict[str, Any] | None, str]:
        """All draws in one pass, or ``(None, reason)`` when the model does not allow it.

        A plain run first creates any approximation the model lacks (it must not be
        made from sample-shaped values) and gives the shape of every site; a plain run
        afterwards links the model to unbatched values again.
        """
        reference = self.first_run()
        approximations = _approximation_state(self.model)
        try:
            values = self._batched_draws(count, batch_dims)
            with particles(count, batch_dims):
                drawn = self.select(self.run(values))
        except Exception as error:  # any failure: the loop gives the exact answer
            return None, (
                f"the model failed with {count} draws in dimension "
                f"{-(batch_dims + 1)}: {type(error).__name__}: {error}"
            )
        finally:
            created = _drop_new_approximations(self.model, approximations)
            self.run(self.draw(0))
        if created:
            return None, (
                f"the model created the approximations {created} only in the batched "
                "pass (random control flow?)"
            )
        result = {}
        for name, value in drawn.items():
            batched = _unbatch(value, reference[name], count)
            if batched is _MISMATCH:
                return None, (
                    f"'{name}' has shape {_shapes(value)} with {count} draws where one "
                    f"draw has {_shapes(reference[name])}; the model does not "
                    f"broadcast over dimension {-(batch_dims + 1)}"
                )
            # Batched draws of point masses can be views of the parameters: copy.
            result[name] = _copy(batched)
        return result, ""

    def _batched_draws(self, count: int, batch_dims: int) -> dict[str, Tensor] | None:
        """``posterior_samples`` laid out with the sample dimension left of the batch
        dimensions of each variable's prior."""
        if self.draws is None:
            return None
        laid_out = {}
        for key, value in self.draws.items():
            owner, name = resolve_variable(self.model, key)
            batch = getattr(owner.prior, name).distribution.batch_shape
            if len(batch) > batch_dims:
                raise ValueError(
                    f"'{key}' has {len(batch)} batch dimensions, more than "
                    f"batch_dims={batch_dims}"
                )
            ones = (1,) * (batch_dims - len(batch))
            laid_out[key] = value.reshape(count, *ones, *value.shape[1:])
        return laid_out


def _approximation_state(model: nn.Module) -> dict[int, tuple[set[str], dict]]:
    """Per borch module: the names of its approximations and the loaded state waiting
    for approximations not created yet."""
    return {
        id(module): (set(module.posterior.names()), module.posterior.pending_state())
        for module in borch_modules(model)
    }


def _drop_new_approximations(
    model: nn.Module, before: dict[int, tuple[set[str], dict]]
) -> list[str]:
    """Remove approximations created since ``before`` (in the batched pass, so from
    sample-shaped values), giving back any loaded state they took; return their
    names."""
    created = []
    for module in borch_modules(model):
        known, pending = before.get(id(module), (set(), {}))
        posterior = module.posterior
        for name in [name for name in posterior.names() if name not in known]:
            posterior.remove_approximation(name, pending.get(name))
            created.append(name)
    return created


def _copy(value: Any) -> Any:
    """``value`` with every tensor in it detached and copied."""
    if isinstance(value, Tensor):
        return value.detach().clone()
    if isinstance(value, Mapping):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, tuple | list):
        parts = [_copy(item) for item in value]
        return type(value)(*parts) if hasattr(value, "_fields") else type(value)(parts)
    return value


def _stack(values: list[Any], name: str) -> Any:
    """Stack a list of (nested) return values along a new leading dimension."""
    first = values[0]
    if isinstance(first, Tensor):
        shapes = {tuple(value.shape) for value in values}
        if len(shapes) > 1:
            raise ValueError(
                f"predictive: '{name}' changes shape between draws ({sorted(shapes)}); "
                "draws are stacked, so shapes must not depend on the draw"
            )
        return torch.stack(values)
    if isinstance(first, bool | Number):
        return torch.as_tensor(values)
    if isinstance(first, Mapping):
        return {key: _stack([value[key] for value in values], name) for key in first}
    if isinstance(first, tuple | list):
        parts = [
            _stack([value[index] for value in values], name)
            for index in range(len(first))
        ]
        if hasattr(first, "_fields"):  # a named tuple
            return type(first)(*parts)
        return type(first)(parts)
    if first is None:
        return None
    raise TypeError(
        f"predictive: cannot stack '{name}' of type {type(first).__name__}; return "
        "tensors, numbers, or tuples, lists and dicts of them, or leave it out with "
        "return_sites"
    )


#: What :func:`_unbatch` gives for a value of the wrong shape.
_MISMATCH = object()


def _unbatch(value: Any, reference: Any, count: int) -> Any:
    """``value`` from the batched pass as ``(count, *reference shape)``, or
    ``_MISMATCH`` if it has another shape. Leading singleton dimensions between the
    sample dimension and the reference's dimensions are dropped; a value without a
    sample dimension is the same for every draw."""
    if isinstance(reference, Tensor):
        if not isinstance(value, Tensor):
            return _MISMATCH
        shape, target = tuple(value.shape), tuple(reference.shape)
        extra = len(shape) - 1 - len(target)
        if (
            extra >= 0
            and shape[0] == count
            and shape[1 + extra :] == target
            and all(size == 1 for size in shape[1 : 1 + extra])
        ):
            return value.reshape(count, *target)
        if shape == target:
            return value.expand(count, *target).clone()
        return _MISMATCH
    if reference is None:
        return None if value is None else _MISMATCH
    if isinstance(reference, bool | Number):
        if not isinstance(value, bool | Number):
            return _MISMATCH
        return torch.as_tensor(value).expand(count).clone()
    if isinstance(reference, Mapping):
        if not isinstance(value, Mapping) or set(value) != set(reference):
            return _MISMATCH
        parts = {key: _unbatch(value[key], reference[key], count) for key in reference}
        return _MISMATCH if any(part is _MISMATCH for part in parts.values()) else parts
    if isinstance(reference, tuple | list):
        if not isinstance(value, tuple | list) or len(value) != len(reference):
            return _MISMATCH
        parts = [_unbatch(v, r, count) for v, r in zip(value, reference)]
        if any(part is _MISMATCH for part in parts):
            return _MISMATCH
        if hasattr(reference, "_fields"):
            return type(reference)(*parts)
        return type(reference)(parts)
    return _MISMATCH


def _shapes(value: Any) -> Any:
    if isinstance(value, Tensor):
        return tuple(value.shape)
    if isinstance(value, Mapping):
        return {key: _shapes(item) for key, item in value.items()}
    if isinstance(value, tuple | list):
        return [_shapes(item) for item in value]
    return type(value).__name__


__all__ = ["RETURN", "VectorizationWarning", "predictive"]
