"""``NormalizingFlow``: latent variables as one normalizing flow, through zuko (the
optional extra ``borch[flows]``).

The variables a model call creates are drawn from a plain Gaussian while the call
runs (no flow knows their number yet); when the outermost call returns, one flow
over all of them is built (a *segment*, kept on the first of them as
``posterior.<name>.segment``) and the call is re-run through it, so the call's
result and the parameters an optimiser is given afterwards are the flow's.
Variables that first appear in a later call get a segment of their own, conditioned
on the values of the segments before it.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Independent, Normal
from torch.func import functional_call
from torch.nn import functional as F

from borch.compiling import compiling
from borch.fastpath.memo import keep, kept
from borch.posterior.joint import (
    Block,
    JointPosterior,
    JointRun,
    JointSlice,
    spread_evenly,
)
from borch.posterior.laplace_start import await_start, in_model_call, laplace_fit
from borch.validation import check_count

__all__ = ["NormalizingFlow"]

_HALF_LOG_TWO_PI = 0.5 * math.log(2 * math.pi)


class NormalizingFlow(JointPosterior):
    """Approximate all latent variables together by a normalizing flow in
    unconstrained space.

    The variables of a model's first call share one flow ``f`` (a zuko flow over
    all their unconstrained coordinates), placed in a fixed frame:
    ``u = origin + basis @ f``. Variables that first appear in a later call share
    a flow of their own, whose context is the values of the variables before them,
    so the joint is a chain of flows and adding variables leaves what was learned
    untouched. Each segment's log-density is spread evenly over its coordinates
    (the terms of all variables add up to ``log q`` of the draw). Constrained
    variables go through ``biject_to(support)``, with the log-det-Jacobian.

    How the flow is built (see :mod:`borch.posterior.flow`): during the call
    that creates the variables they are drawn from the frame alone,
    ``origin + basis @ noise``; when the outermost call returns the segment is
    made and the call re-run. A variable assigned outside any model call gets a
    segment of its own at once.

    Initialisation: the output layers of the flow's networks start at zero. For
    zuko's autoregressive flows (``MAF``, ``NSF``, the default) and ``BPF`` this
    makes every transform the identity, so the flow starts as its standard Normal
    base and the joint as the Gaussian of its frame (coupling, neural and
    sum-of-squares flows start near it, where zuko's parameterisation puts zeros).
    With ``init="laplace"`` (the default) that Gaussian is the Laplace
    approximation of the posterior: ``origin`` the mode in unconstrained space and
    ``basis`` the Cholesky factor of the inverse Hessian there, as
    :class:`MultivariateNormal` starts (:mod:`borch.posterior.laplace_start`, with
    the same conditions, and the call re-run a few hundred times to find the
    mode). The flow then only has to learn how the posterior departs from that
    Gaussian, in units of its own scales: from the prior's centre a flow spends
    most of its steps moving there. Where the fit is not made (later variables,
    no data in the call, more than ``laplace_dimension`` coordinates, a fit that
    fails) and with ``init="prior"``, ``origin`` is the prior's mean (median where
    the mean is infinite) and ``basis`` is ``init_scale`` times the identity.

    Parameters: a segment's flow keeps its parameters in one vector,
    ``segment.numbers``, and its modules read views of it (Adam's cost is per
    tensor, and the flow's networks have a dozen); an autoregressive flow's
    masked layers then take their weights masked in one product over that vector
    per draw, not one per layer. Flows whose modules hand their
    own parameters to an implicit gradient (zuko's ``NAF``, ``UNAF`` and ``CNF``)
    keep them as zuko made them, under ``segment.flow``. Outside the segment's own
    draws and densities those views are detached (``segment.flow`` called
    directly gives current values but no gradient). State dicts saved with the
    parameters apart load into the vector.

    Drawing direction: zuko's flows are built for density estimation: their
    transform maps values to noise in one pass and an autoregressive one (MAF,
    NSF) needs one pass per coordinate the other way. Variational inference
    draws, and scores its own draws, so with ``invert=True`` (the default) the
    posterior draws through that one-pass direction (for MAF this is an inverse
    autoregressive flow) and the log-density of its own draw comes with it. Only
    the log-density of any other value (a score-function estimator's, data, the
    path-derivative loss's) needs the slow direction.

    Args:
        flow: a zuko flow class (or any callable ``flow(features=, context=,
            **options)`` returning a zuko ``LazyDistribution``); default
            ``zuko.flows.NSF`` (neural spline flow).
        init: ``"laplace"`` or ``"prior"`` (see above).
        init_scale: the scale of every unconstrained coordinate where the frame is
            not a Laplace fit.
        laplace_dimension: the largest segment the Laplace start fits.
        invert: draw through the inverse of the flow's transform (see above); a
            ``flow`` that is not a ``zuko.lazy.Flow`` needs ``invert=False``.
        **options: passed to ``flow`` (``transforms``, ``hidden_features``, ...).

    Example:
        >>> import torch
        >>> import borch
        >>> from borch import distributions as dist
        >>> class Banana(borch.Module):
        ...     def forward(self):
        ...         self.x = dist.Normal(0.0, 1.0)
        ...         self.y = dist.Normal(self.x**2, 0.5)
        >>> model = Banana(posterior=NormalizingFlow(transforms=2))
        >>> model()
        >>> segment = model.posterior.x.segment  # one flow over x and y
        >>> type(segment.flow).__name__, segment.origin.shape
        ('Flow', torch.Size([2]))
        >>> loss = borch.infer.vi_loss(**borch.pq_to_infer(model))
        >>> loss.backward()
    """

    def __init__(
        self,
        flow: Callable[..., nn.Module] | None = None,
        init: str = "laplace",
        init_scale: float = 1.0,
        laplace_dimension: int = 1000,
        invert: bool = True,
        **options: Any,
    ) -> None:
        super().__init__(init_scale=init_scale)
        if flow is None:
            flow = _zuko().flows.NSF
        if not callable(flow):
            raise TypeError(f"flow must be a zuko flow class, got {flow!r}")
        if init not in ("laplace", "prior"):
            raise ValueError(f"init must be 'laplace' or 'prior', got {init!r}")
        if not isinstance(invert, bool):
            raise TypeError(f"invert must be True or False, got {invert!r}")
        self._flow = flow
        self._options = options
        self._init = init
        self._invert = invert
        self._laplace_dimension = check_count(
            "laplace_dimension", laplace_dimension, minimum=1
        )
        # Loaded segment state of variables not created yet, by first variable.
        self.__dict__["_loaded_segments"] = {}
        self.__dict__["_layout"] = None

    # ------------------------------------------------------------- segments
    def register_random_variable(self, name, prior):
        approximation = super().register_random_variable(name, prior)
        if in_model_call():
            await_start(self)  # its segment is made when the call returns
        return approximation

    def set_approximation(self, name: str, approximation) -> None:
        super().set_approximation(name, approximation)
        if isinstance(approximation, JointSlice) and not in_model_call():
            self.start(None, None)  # no call whose end would make its segment

    def load_pending(self, name: str, approximation, state: dict) -> None:
        prefix = "segment."
        segment = {
            k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)
        }
        rest = {k: v for k, v in state.items() if not k.startswith(prefix)}
        super().load_pending(name, approximation, rest)
        if segment:  # applied when the segment is made (start)
            self.__dict__["_loaded_segments"][name] = segment

    def block_parameters(self, position: int, block: Block, start: Tensor) -> dict:
        return {"start": start.clone()}

    def start(self, model: nn.Module | None, run: Callable | None) -> None:
        """Give the variables that have no segment yet one flow (see the class
        docstring); ``run()`` re-runs ``model``'s call for the Laplace start."""
        slices = self.blocks()
        pending = _first_pending(self.layout(slices))
        while pending is not None:  # a loaded flow may cover only some of them
            self._make_segment(slices, pending, model, run)
            pending = _first_pending(self.layout(slices))
        self.forget_run()

    def _make_segment(self, slices, span: _Span, model, run) -> None:
        first = slices[span.first]
        name = first.__dict__["_name"]
        start = torch.cat([slices[p].state("start") for p in span.positions()])
        loaded = self.__dict__["_loaded_segments"].pop(name, None)
        origin, basis = start, start.new_full(start.shape, self._init_scale)
        if loaded is None and self._fits(model, span, len(slices)):
            fit = laplace_fit(self, model, run, start)
            if fit is not None:
                origin, basis = fit.mode.to(start), fit.scale_tril.to(start)
        if loaded is not None:
            size = _loaded_size(name, loaded)
            span = self._span_of(slices, span.first, size)
            origin = start.new_zeros(size)
            basis = loaded["basis"].new_zeros(loaded["basis"].shape).to(start)
        segment = _Segment(self._new_flow(span.size, span.offset), origin, basis)
        segment = segment.to(start)
        if loaded is not None:
            try:
                segment.load_state_dict(loaded, strict=True)
            except RuntimeError as error:
                raise RuntimeError(
                    f"the loaded flow of '{name}' does not fit the one the posterior "
                    f"made over {span.size} coordinates: {error}"
                ) from None
        first.register_param_or_buffer("segment", segment)
        self.__dict__["_layout"] = None

    def _fits(self, model, span: _Span, count: int) -> bool:
        """Whether the segment starts at a Laplace fit: the first one, over every
        variable, within ``laplace_dimension``."""
        return (
            self._init == "laplace"
            and model is not None
            and span.offset == 0
            and span.end == count
            and span.size <= self._laplace_dimension
        )

    def _span_of(self, slices, first: int, size: int) -> _Span:
        offset = slices[first].block.offset
        end, covered = first, 0
        while covered < size and end < len(slices):
            covered += slices[end].block.size
            end += 1
        if covered != size:
            names = [rv.__dict__["_name"] for rv in slices[first:end]]
            raise RuntimeError(
                f"the loaded flow of '{slices[first].__dict__['_name']}' covers "
                f"{size} coordinates but the variables from it, {names}, have "
                f"{covered}: the model assigns other variables than the one saved"
            )
        return _Span(None, first, end, offset, size)

    def _new_flow(self, size: int, context: int) -> nn.Module:
        flow = self._flow(features=size, context=context, **self._options)
        if not isinstance(flow, nn.Module):
            raise TypeError(
                f"flow(features={size}, context={context}) must return a torch "
                f"module, got {type(flow).__name__}"
            )
        _start_as_identity(flow)
        if not self._invert:
            return flow
        lazy = _zuko().lazy
        if not isinstance(flow, lazy.Flow):
            raise TypeError(
                f"invert=True draws through the inverse of a zuko Flow's transform, "
                f"but flow(...) returned a {type(flow).__name__}; pass invert=False"
            )
        return lazy.Flow(flow.transform.inv, flow.base)

    def layout(self, slices: list[JointSlice]) -> list[_Span]:
        """The segments of ``slices`` in chain order (a run of variables without one
        yet as a span whose ``segment`` is ``None``)."""
        key = tuple((id(rv), id(_segment(rv))) for rv in slices)
        cached = self.__dict__["_layout"]
        if cached is not None and cached[0] == key:
            return cached[1]
        spans: list[_Span] = []
        position = 0
        while position < len(slices):
            segment = _segment(slices[position])
            if segment is None:
                end = position + 1
                while end < len(slices) and _segment(slices[end]) is None:
                    end += 1
                size = sum(rv.block.size for rv in slices[position:end])
                span = _Span(None, position, end, slices[position].block.offset, size)
            else:
                span = self._span_of(slices, position, segment.size)
                span.segment = segment
                for rv in slices[position + 1 : span.end]:
                    if _segment(rv) is not None:
                        raise RuntimeError(
                            f"the flow of '{slices[position].__dict__['_name']}' "
                            f"covers '{rv.__dict__['_name']}', which has a flow of "
                            "its own"
                        )
            spans.append(span)
            position = span.end
        self.__dict__["_layout"] = (key, spans)
        return spans

    # ----------------------------------------------------------------- runs
    def assemble(self, slices) -> tuple:
        return (slices[0].state("start"), self.layout(slices))

    def draw_joint(self, run: JointRun) -> Tensor:
        leading = run.leading()
        values: list[Tensor] = []
        terms: list[Tensor] = []
        for span in run.parts[1]:
            if span.segment is None:
                start = _pending_start(run, span)
                noise = torch.randn(
                    (*leading, span.size), dtype=start.dtype, device=start.device
                )
                value = start + self._init_scale * noise
                terms.append(self._pending_terms(noise))
            else:
                context = _joined(values) if values else None
                value, log_density = span.segment.draw(context, leading)
                terms.append(spread_evenly(log_density, span.size))
            values.append(value)
        run.shared["flow_terms"] = _joined(terms)
        return _joined(values)

    def draw_block(self, run: JointRun, position: int) -> Tensor:
        # Only a variable created during this run, after its joint draw: it has
        # no segment yet.
        start = run.slices[position].state("start")
        noise = torch.randn(
            (*run.leading(), start.shape[0]), dtype=start.dtype, device=start.device
        )
        return start + self._init_scale * noise

    def _pending_terms(self, noise: Tensor) -> Tensor:
        return -0.5 * noise.square() - (_HALF_LOG_TWO_PI + math.log(self._init_scale))

    def block_parts(self, run: JointRun, position: int) -> tuple:
        spans = run.parts[1]
        tensors = tuple(
            () if span.segment is None else span.segment.tensors() for span in spans
        )
        return (run.parts[0], run, position, spans, tensors)

    def joint_log_density(self, parts, values, blocks):
        anchor, run, _, spans, tensors = parts
        drawn = run.shared.get("flow_terms")
        if anchor is run.parts[0] and drawn is not None:
            count = values.shape[-1]
            if drawn.shape[-1] == count:
                return drawn
            if drawn.shape[-1] > count:
                return drawn[..., :count]
        return self._terms(run, spans, tensors, values)

    def _terms(self, run, spans, tensors, values: Tensor) -> Tensor:
        """Elementwise log-density terms of the first ``values.shape[-1]``
        coordinates, every segment computed at ``values`` with ``tensors``."""
        count = values.shape[-1]
        terms = []
        for span, parameters in zip(spans, tensors):
            if span.offset >= count:
                break
            own = values[..., span.offset : span.offset + span.size]
            if span.segment is None:
                start = _pending_start(run, span)[: own.shape[-1]]
                terms.append(self._pending_terms((own - start) / self._init_scale))
                continue
            context = values[..., : span.offset] if span.offset else None
            log_density = functional_call(
                span.segment,
                dict(zip(span.segment.names(), parameters)),
                (own, context),
            )
            terms.append(spread_evenly(log_density, span.size))
        return _joined(terms)

    def block_log_density(self, parts, prefix, value):
        _, run, position, spans, tensors = parts
        index = next(i for i, s in enumerate(spans) if s.first <= position < s.end)
        span = spans[index]
        block = run.slices[position].block
        # The segment's density needs all of its coordinates: the run's values of
        # its other variables, with this one's at ``value``.
        later = []
        for j in range(position + 1, span.end):
            other = run.value(j)
            if not value.requires_grad:
                other = other.detach()
            later.append(other.expand(*value.shape[:-1], other.shape[-1]))
        values = torch.cat([prefix, value, *later], dim=-1)
        terms = self._terms(run, spans[: index + 1], tensors, values)
        return terms[..., block.offset : block.offset + block.size]

    def block_entropy(self, parts):
        raise NotImplementedError(
            "a normalizing flow has no closed-form entropy; use a divergence that "
            "estimates it from draws (borch.infer.elbo_loss)"
        )

    def extra_repr(self) -> str:
        name = getattr(self._flow, "__name__", repr(self._flow))
        options = "".join(f", {key}={value!r}" for key, value in self._options.items())
        return (
            f"flow={name}, init={self._init!r}, init_scale={self._init_scale}, "
            f"invert={self._invert}{options}"
        )

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_layout"] = None
        return state


class _Segment(nn.Module):
    """One flow over consecutive blocks' coordinates, in a fixed frame:
    ``u = origin + basis @ f`` with ``f`` the flow's draw given the context (the
    values before the segment); ``basis`` is a vector (a diagonal) or a
    lower-triangular matrix with a positive diagonal."""

    def __init__(self, flow: nn.Module, origin: Tensor, basis: Tensor) -> None:
        super().__init__()
        self.flow = flow
        self.register_buffer("origin", origin.detach().clone())
        self.register_buffer("basis", basis.detach().clone())
        self.__dict__["_tensors"] = None
        self.__dict__["_standard"] = _standard_base(flow)
        self.__dict__["_slots"] = _flat_slots(flow)
        if self.__dict__["_slots"]:
            self._flatten()

    def _flatten(self) -> None:
        """Move the flow's parameters into one vector, ``numbers``: Adam's cost is
        per tensor, and a flow of two transforms has a dozen (a tenth of a step).
        The flow's modules hold views of it as plain attributes (:meth:`_bound`)."""
        owners, parts = [], []
        for qualified, _ in self.__dict__["_slots"]:
            path, _, name = qualified.rpartition(".")
            owner = self.flow.get_submodule(path)
            parts.append(getattr(owner, name).detach().reshape(-1))
            delattr(owner, name)  # no longer a parameter of the flow's
            owners.append((owner, name))
        self.numbers = nn.Parameter(torch.cat(parts))
        self.__dict__["_owners"] = owners
        self.__dict__["_sizes"] = [part.numel() for part in parts]
        self.__dict__["_resting"] = None
        self._mask_once(owners)
        self._rest()

    def _mask_once(self, owners: list) -> None:
        """Make the flow's masked linear layers (zuko's ``MaskedLinear``, of every
        autoregressive flow) :class:`_MaskedOnce` and keep their masks in one
        vector beside ``numbers``, ``weight_mask``: a draw then masks all of
        their weights in one product, not one a layer both ways (a tenth of a
        MAF step). The layers are kept as ``_masked``."""
        layers = [
            owner
            for owner, name in owners
            if type(owner) is _zuko().nn.MaskedLinear and name == "weight"
        ]
        self.__dict__["_masked"] = layers
        if not layers:
            return
        for layer in layers:
            layer.__class__ = _MaskedOnce  # the same state, its own forward
        self.register_buffer("weight_mask", self._flat_mask(), persistent=False)
        # zuko saves the masks: a load may bring others (another random order)
        self.register_load_state_dict_post_hook(_remask)

    def _flat_mask(self) -> Tensor:
        """The layers' masks where their weights sit in ``numbers``, ones
        elsewhere."""
        numbers = self.numbers
        parts = [
            owner.mask.reshape(-1).to(numbers)
            if name == "weight" and isinstance(owner, _MaskedOnce)
            else numbers.new_ones(size)
            for (owner, name), size in zip(
                self.__dict__["_owners"], self.__dict__["_sizes"]
            )
        ]
        return torch.cat(parts)

    def _give(self, numbers: Tensor) -> list[Tensor]:
        """Give the flow's modules views of ``numbers``; returns them."""
        views = []
        parts = numbers.split(self.__dict__["_sizes"])
        for (owner, name), (_, shape), part in zip(
            self.__dict__["_owners"], self.__dict__["_slots"], parts
        ):
            # A vector (a bias) is its part as split: a view op fewer, each step.
            views.append(part if len(shape) == 1 else part.view(shape))
            owner.__dict__[name] = views[-1]
        return views

    @contextmanager
    def _bound(self) -> Iterator[nn.Module]:
        """The flow, its modules given views of ``numbers`` in the graph (made
        now: under ``functional_call`` or after ``.to()`` ``numbers`` is another
        tensor; masked by ``weight_mask`` for the masked layers, which are told
        so), and given detached ones again afterwards."""
        if self.__dict__["_slots"]:
            numbers = self.numbers
            masked = self.__dict__.get("_masked", ())  # () if pickled before
            if masked:
                numbers = numbers * self.weight_mask
                for layer in masked:
                    layer.__dict__["premasked"] = True
            self._give(numbers)
        try:
            yield self.flow
        finally:
            self._rest()

    def _rest(self) -> None:
        """Give the modules views of ``numbers`` outside any graph: the values
        stay current (the views share its memory) and a deep copy can copy them,
        as it cannot a tensor in a graph. Made again only when ``numbers`` is
        another tensor."""
        if not self.__dict__["_slots"]:
            return
        for layer in self.__dict__.get("_masked", ()):
            layer.__dict__["premasked"] = False
        numbers = self.numbers
        resting = self.__dict__["_resting"]
        # A compiled step cannot read the vector's storage: it gives back the
        # views its first call (eager) made.
        if resting is None or (
            not compiling() and resting[0] != (id(numbers), numbers.data_ptr())
        ):
            key = (id(numbers), numbers.data_ptr())
            self.__dict__["_resting"] = (key, self._give(numbers.detach()))
            return
        for (owner, name), view in zip(self.__dict__["_owners"], resting[1]):
            owner.__dict__[name] = view

    @property
    def size(self) -> int:
        return self.origin.shape[0]

    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.named_parameters())

    def tensors(self) -> tuple[Tensor, ...]:
        """The flow's parameters (remembered: a run reads them every step)."""
        tensors = self.__dict__["_tensors"]
        if tensors is None:
            tensors = tuple(self.parameters())
            self.__dict__["_tensors"] = tensors
        return tensors

    def _apply(self, fn, recurse=True):
        self.__dict__["_tensors"] = None
        applied = super()._apply(fn, recurse)
        self._rest()  # the modules' views, of the moved vector
        return applied

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self.__dict__["_tensors"] = None  # load_state_dict(assign=True) replaces them
        slots = self.__dict__["_slots"]
        separate = [f"{prefix}flow.{qualified}" for qualified, _ in slots or ()]
        if (
            slots
            and prefix + "numbers" not in state_dict
            and all(k in state_dict for k in separate)
        ):
            # Saved before the flow's parameters were one vector.
            state_dict[prefix + "numbers"] = torch.cat(
                [state_dict.pop(key).reshape(-1) for key in separate]
            )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_tensors"] = None
        state["_resting"] = None
        state.pop("_log_det_entry", None)
        return state

    def _log_det(self) -> float | Tensor:
        """``log |det basis|``, which the frame adds to every log-density: a number
        remembered while ``basis`` (a buffer) is the same, unmodified tensor (a
        load or ``.to()`` changes it); a tensor of the graph in a compiled step."""
        basis = self.basis
        log_det = (
            None if compiling() else kept(self.__dict__.get("_log_det_entry"), basis)
        )
        if log_det is None:
            diagonal = basis if basis.dim() == 1 else basis.diagonal()
            log_det = diagonal.log().sum()
            if not compiling():
                log_det = float(log_det)
                self.__dict__["_log_det_entry"] = keep(log_det, basis)
        return log_det

    def _normaliser(self) -> float | Tensor:
        """What the frame and the standard Normal base take off every log-density."""
        return self.size * _HALF_LOG_TWO_PI + self._log_det()

    def _flow_draw(self, flow, context: Tensor | None, leading: tuple):
        if not self.__dict__["_standard"]:
            distribution = flow() if context is None else flow(context)
            noise, log_density = distribution.rsample_and_log_prob(
                leading if context is None else ()
            )
            return noise, log_density - self._log_det()
        # A standard Normal base (zuko's flows have one): its draw and density
        # written out cost a tenth of building and using the base distribution.
        shape = (*(leading if context is None else context.shape[:-1]), self.size)
        noise = torch.randn(shape, dtype=self.origin.dtype, device=self.origin.device)
        pieces = _one_pass_pieces(flow)
        if pieces is None:
            transform = flow.transform(context)
            value, ladj = transform.inv.call_and_ladj(noise)
            if transform.codomain.event_dim == 0:  # an elementwise transform's
                ladj = ladj.sum(-1)
        else:
            value, ladj = _through(pieces, context, noise)
        squares = (
            torch.dot(noise, noise) if noise.dim() == 1 else noise.square().sum(-1)
        )
        return value, -self._normaliser() - ladj.add(squares, alpha=0.5)

    def draw(self, context: Tensor | None, leading: tuple) -> tuple[Tensor, Tensor]:
        """A draw ``(*leading, size)`` and its log-density."""
        with self._bound() as flow:
            noise, log_density = self._flow_draw(flow, context, leading)
        if self.basis.dim() == 1:
            value = torch.addcmul(self.origin, self.basis, noise)
        elif noise.dim() == 1:
            value = torch.addmv(self.origin, self.basis, noise)
        else:
            value = torch.addmm(self.origin, noise, self.basis.T)
        return value, log_density

    def forward(self, values: Tensor, context: Tensor | None) -> Tensor:
        """The log-density of ``values`` ``(..., size)``."""
        centred = values - self.origin
        if self.basis.dim() == 1:
            noise = centred / self.basis
        else:
            noise = torch.linalg.solve_triangular(
                self.basis, centred.unsqueeze(-1), upper=False
            ).squeeze(-1)
        with self._bound() as flow:
            pieces = _one_pass_pieces(flow)
            if pieces is None or not self.__dict__["_standard"]:
                distribution = flow() if context is None else flow(context)
                return distribution.log_prob(noise) - self._log_det()
            # the draw's pieces undone: the noise the values came from
            noise, ladj = _through(pieces, context, noise, undo=True)
        return ladj.sub(noise.square().sum(-1), alpha=0.5) - self._normaliser()

    def extra_repr(self) -> str:
        frame = "diagonal" if self.basis.dim() == 1 else "triangular"
        return f"size={self.size}, basis={frame}"


def _remask(segment: _Segment, incompatible_keys) -> None:
    """After a load into ``segment``: its layers' masks may be the saved ones."""
    segment.weight_mask = segment._flat_mask()


class _MaskedOnce(nn.Linear):
    """A zuko ``MaskedLinear`` (``F.linear(x, mask * weight, bias)``) of a flat
    segment: while the segment draws it is given its weight masked already
    (``premasked``, set by the segment), otherwise it masks it itself."""

    premasked = False

    def forward(self, x: Tensor) -> Tensor:
        weight = self.weight if self.premasked else self.mask * self.weight
        return F.linear(x, weight, self.bias)


#: Where the classes live whose modules read their parameters only as attributes,
#: while they run: such a flow can be given views of one vector. Left out:
#: ``zuko.flows.neural`` and ``zuko.flows.continuous`` hand ``self.parameters()``
#: to the implicit gradient of their inverse or ODE solve, which would miss the
#: views and lose the gradient silently; ``zuko.lazy.Unconditional`` reads
#: ``self._parameters``.
_FLATTENABLE = {
    "zuko.lazy",
    "zuko.nn",
    "zuko.flows.autoregressive",
    "zuko.flows.coupling",
    "zuko.flows.gaussianization",
    "zuko.flows.polynomial",
    "zuko.flows.spline",
}


def _flat_slots(flow: nn.Module) -> tuple | None:
    """``(qualified name, shape)`` of each of ``flow``'s parameters, when all of
    its modules are of :data:`_FLATTENABLE` or ``torch.nn``'s classes (else
    ``None``)."""
    for module in flow.modules():
        home = type(module).__module__
        if home.startswith("torch.nn.modules."):
            continue
        if home not in _FLATTENABLE or type(module).__name__ == "Unconditional":
            return None
    found = list(flow.named_parameters(remove_duplicate=False))
    if not found or len({id(p) for _, p in found}) < len(found):
        return None  # nothing to move, or a parameter shared by two modules
    return tuple((qualified, parameter.shape) for qualified, parameter in found)


class _Span:
    """Consecutive blocks ``first .. end - 1`` (``size`` coordinates from
    ``offset``) and their segment (``None`` before it is made)."""

    __slots__ = ("end", "first", "offset", "segment", "size")

    def __init__(self, segment, first: int, end: int, offset: int, size: int):
        self.segment, self.first, self.end = segment, first, end
        self.offset, self.size = offset, size

    def positions(self) -> range:
        return range(self.first, self.end)


def _standard_base(flow: nn.Module) -> bool:
    """Whether ``flow`` is a zuko ``Flow`` whose base is a fixed standard Normal over
    its features with independent coordinates."""
    lazy = _zuko().lazy
    if not isinstance(flow, lazy.Flow) or any(True for _ in flow.base.parameters()):
        return False
    try:
        base = flow.base()
    except TypeError:  # a base that needs the context
        return False
    return (
        isinstance(base, Independent)
        and base.reinterpreted_batch_ndims == 1
        and isinstance(base.base_dist, Normal)
        and bool((base.base_dist.loc == 0).all())
        and bool((base.base_dist.scale == 1).all())
    )


def _one_pass_pieces(flow: nn.Module) -> Sequence[nn.Module] | None:
    """The lazy transforms a draw of ``flow`` goes through, in order, when its
    transform is the inverse of a composition (as ``invert=True`` builds it);
    else ``None``. Applied one by one (undone last first, for a density) they
    give the composition's value and log-det-Jacobian without building it (a
    compiled step cannot trace zuko's composition of transforms whose modules
    were given their parameters)."""
    lazy = _zuko().lazy
    transform = flow.transform
    if not isinstance(transform, lazy.LazyInverse):
        return None
    inner = transform.transform
    if not isinstance(inner, lazy.LazyComposedTransform):
        return (inner,)
    return inner.transforms if len(inner.transforms) else None


def _through(
    pieces: Sequence[nn.Module], context: Tensor | None, value: Tensor, undo=False
) -> tuple[Tensor, Tensor]:
    """``value`` ``(..., size)`` through the lazy transforms ``pieces`` in order
    (with ``undo``, their inverses, the last first), and the log-det-Jacobian of
    the whole, one per draw."""
    ladj = None
    for piece in reversed(pieces) if undo else pieces:
        transform = piece(context)
        value, term = (transform.inv if undo else transform).call_and_ladj(value)
        if term.dim() == value.dim():  # an elementwise transform's
            term = term.sum(-1)
        ladj = term if ladj is None else ladj + term
    return value, ladj


def _segment(rv: JointSlice) -> _Segment | None:
    return rv._modules.get("segment")


def _first_pending(spans: list[_Span]) -> _Span | None:
    return next((span for span in spans if span.segment is None), None)


def _pending_start(run: JointRun, span: _Span) -> Tensor:
    starts = [run.slices[p].state("start") for p in span.positions()]
    return starts[0] if len(starts) == 1 else torch.cat(starts)


def _joined(tensors: list[Tensor]) -> Tensor:
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors, dim=-1)


def _loaded_size(name: str, state: dict) -> int:
    origin = state.get("origin")
    if origin is None or "basis" not in state:
        raise RuntimeError(
            f"the loaded flow of '{name}' has no 'origin' and 'basis' (a state dict "
            f"of an older NormalizingFlow?): got keys {sorted(state)}"
        )
    return origin.shape[0]


def _start_as_identity(flow: nn.Module) -> None:
    """Zero what makes each transform's parameters: the output layer of its
    hyper-network (zuko's ``hyper``), or the parameters themselves where it has
    none (``phi``: an element-wise transform without context, which zuko uses for
    one feature). zuko's affine, spline and Bernstein transforms are then the
    identity, so such a flow starts as its standard Normal base whatever its
    context: a randomly initialised one starts far from the frame's Gaussian and
    learns slowly from there."""
    with torch.no_grad():
        for module in flow.modules():
            phi = getattr(module, "phi", None)
            if isinstance(phi, nn.ParameterList):
                for parameter in phi:
                    parameter.zero_()
            hyper = getattr(module, "hyper", None)
            if not isinstance(hyper, nn.Sequential):
                continue
            linear = [layer for layer in hyper if isinstance(layer, nn.Linear)]
            if linear:
                linear[-1].weight.zero_()
                if linear[-1].bias is not None:
                    linear[-1].bias.zero_()


def _zuko():
    if _ZUKO:  # imported once (a compiled step cannot trace an import)
        return _ZUKO[0]
    try:
        _ZUKO.append(importlib.import_module("zuko"))
    except ImportError:
        raise ImportError(
            "posterior.NormalizingFlow needs zuko: pip install 'borch[flows]'"
        ) from None
    return _ZUKO[0]


_ZUKO: list = []
