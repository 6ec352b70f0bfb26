"""The shapes a Laplace posterior's precision can take, one block of parameters each.

A block collects the Gauss-Newton curvature of its parameters from Jacobian pieces
(:mod:`borch.infer.laplace.curvature`), adds a prior precision, and then gives draws,
the log determinant of its precision (for the marginal likelihood) and the covariance
of the model's outputs under the linearised model (for the GLM predictive).

* :class:`DenseBlock`: the full ``P x P`` matrix of any parameters;
* :class:`DiagonalLinearBlock`: the diagonal, for the weight and bias of a linear layer;
* :class:`KroneckerLinearBlock`: ``G (x) A / N`` for a linear layer (KFAC: Martens
  and Grosse, 2015), ``A`` from the layer's inputs, ``G`` from the backpropagated
  Fisher factors, ``N`` the rows seen;
* :class:`LowRankBlock`: the top eigenpairs of the full matrix of any parameters,
  found from matrix products without forming it.

The prior precision of a block is a scalar (isotropic Gaussian prior), or, from the
model's own priors, a vector (its diagonal) or a matrix (dense blocks only).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

#: Bytes a dense block may need (its matrix and an eigendecomposition, float64).
FULL_MEMORY_LIMIT = 4 * 2**30


def dense_bytes(size: int) -> int:
    """What a dense ``size x size`` float64 precision and its eigenvectors need."""
    return 3 * 8 * size * size


class LinearPiece:
    """The Jacobian rows of one linear layer for one backpropagated direction:
    ``grad`` ``(R, out)`` at the layer's output and its inputs ``(R, in)``."""

    __slots__ = ("grad", "inputs")

    def __init__(self, grad: Tensor, inputs: Tensor) -> None:
        self.grad = grad
        self.inputs = inputs


def linear_rows(
    piece: LinearPiece | None, bias: bool, size: int, count: int, like: Tensor
) -> Tensor:
    """A linear layer's Jacobian rows ``(B, out*in [+ out])``, weight then bias."""
    if piece is None:
        return torch.zeros(count, size, dtype=like.dtype, device=like.device)
    inputs = piece.inputs.to(piece.grad.dtype)
    weight = torch.einsum("bo,bi->boi", piece.grad, inputs)
    parts = [weight.reshape(count, -1)]
    if bias:
        parts.append(piece.grad)
    return torch.cat(parts, dim=1)


def _augmented(inputs: Tensor, bias: bool) -> Tensor:
    if not bias:
        return inputs
    return torch.cat([inputs, torch.ones_like(inputs[:, :1])], dim=1)


class Block:
    """Shared bookkeeping: the names, unconstrained parameters and their mode."""

    def __init__(self, names: list[str], params: list[Tensor]) -> None:
        self.names = names
        self.params = params
        self.mean = [p.detach().clone() for p in params]
        self.size = sum(p.numel() for p in params)

    def squared_norm(self) -> Tensor:
        return sum(m.double().pow(2).sum() for m in self.mean)

    def split(self, flat: Tensor) -> list[Tensor]:
        """``(n, P)`` into tensors ``(n, *shape)`` of the parameters."""
        sizes = [p.numel() for p in self.params]
        return [
            part.reshape(flat.shape[:1] + p.shape).to(p.dtype)
            for part, p in zip(flat.split(sizes, dim=-1), self.params)
        ]


class DenseBlock(Block):
    """The full Gauss-Newton matrix of some parameters (any kind of variable)."""

    def __init__(self, names: list[str], params: list[Tensor], members: list) -> None:
        super().__init__(names, params)
        self.members = members
        self.curvature = torch.zeros(self.size, self.size, dtype=torch.float64)
        self._cache = None
        self._row_factors: Tensor | None = None
        self._row_inputs: Tensor | None = None

    def other_params(self) -> list[Tensor]:
        """The parameters outside linear layers, whose rows come per element."""
        found = []
        index = 0
        for member in self.members:
            if member.record is None:
                found.append(self.params[index])
            index += len(member.names)
        return found

    def rows(
        self,
        pieces: dict[str, LinearPiece | None],
        other_rows: dict[int, Tensor],
        count: int,
        like: Tensor,
    ) -> Tensor:
        """The block's Jacobian rows ``(B, P)`` in the order of its parameters, from
        the linear layers' pieces (by path) and the other parameters' rows (by
        ``id``)."""
        parts = []
        index = 0
        for member in self.members:
            width = len(member.names)
            params = self.params[index : index + width]
            if member.record is None:
                parts.append(other_rows[id(params[0])])
            else:
                size = sum(p.numel() for p in params)
                piece = pieces.get(member.record.path)
                parts.append(linear_rows(piece, width == 2, size, count, like))
            index += width
        return torch.cat(parts, dim=1)

    def add_pieces(
        self,
        pieces: dict[str, LinearPiece | None],
        other_rows: dict[int, Tensor],
        count: int,
        like: Tensor,
    ) -> None:
        """Add one direction's curvature. A block that is one linear layer with no
        more outputs than inputs (a last layer) keeps ``sum g g^T`` per row instead
        of rows ``g (x) a``: :meth:`finish` then forms ``sum_rows G (x) a a^T`` once,
        ``out`` times fewer operations than ``rows^T rows`` per direction."""
        (member, *rest) = self.members
        record = member.record
        if (
            rest
            or record is None
            or record.module.out_features > record.module.in_features + 1
        ):
            self.add_rows(self.rows(pieces, other_rows, count, like))
            return
        piece = pieces.get(record.path)
        if piece is None:
            return
        grad = piece.grad.double()
        outer = grad[:, :, None] * grad[:, None, :]
        self._row_factors = (
            outer if self._row_factors is None else self._row_factors + outer
        )
        self._row_inputs = piece.inputs

    def finish(self) -> None:
        """Fold the per-row factors of :meth:`add_pieces` into the matrix."""
        if self._row_factors is None:
            return
        bias = len(self.params) == 2
        inputs = _augmented(self._row_inputs.double(), bias)
        out, columns = self._row_factors.shape[1], inputs.shape[1]
        matrix = torch.einsum("bop,bi,bj->oipj", self._row_factors, inputs, inputs)
        matrix = matrix.reshape(out * columns, out * columns)
        index = torch.arange(out * columns).reshape(out, columns)
        width = columns - int(bias)
        order = torch.cat([index[:, :width].reshape(-1), index[:, width:].reshape(-1)])
        self.curvature = self.curvature.to(matrix.device) + matrix[order][:, order]
        self._row_factors = self._row_inputs = None

    def add_rows(self, rows: Tensor) -> None:
        """Add ``rows^T rows`` for Jacobian rows ``(M, P)``."""
        rows = rows.double()
        self.curvature = self.curvature.to(rows.device)
        self.curvature.addmm_(rows.T, rows)

    def _eigen(self, prior: Tensor) -> tuple[Tensor, Tensor]:
        """Eigenvalues and vectors of curvature + prior (isotropic priors share the
        curvature's eigenvectors, so tuning them costs one decomposition)."""
        if prior.dim() == 0:
            if self._cache is None:
                self._cache = torch.linalg.eigh(self.curvature)
            values, vectors = self._cache
            return values.clamp(min=0) + prior, vectors
        matrix = torch.diag(prior) if prior.dim() == 1 else prior
        return torch.linalg.eigh(self.curvature + matrix)

    def log_det(self, prior: Tensor) -> Tensor:
        return self._eigen(prior)[0].log().sum()

    def noise(self, prior: Tensor, count: int, generator) -> list[Tensor]:
        values, vectors = self._eigen(prior)
        z = torch.randn(count, self.size, dtype=torch.float64, generator=generator).to(
            vectors.device
        )
        return self.split((z * values.rsqrt()) @ vectors.T)

    def covariance(self, prior: Tensor) -> Tensor:
        values, vectors = self._eigen(prior)
        return (vectors / values) @ vectors.T

    def output_covariance(self, rows: Tensor, prior: Tensor) -> Tensor:
        """``(B, K, K)`` from Jacobian rows ``(B, K, P)``."""
        values, vectors = self._eigen(prior)
        rotated = rows.double() @ vectors
        return torch.einsum("bkp,blp->bkl", rotated / values, rotated)


class LinearBlock(Block):
    """A linear layer's weight ``(out, in)`` and optional bias ``(out,)``."""

    def __init__(self, names: list[str], params: list[Tensor]) -> None:
        super().__init__(names, params)
        self.bias = len(params) == 2
        self.out_features, self.in_features = params[0].shape

    def _split_matrix(self, matrix: Tensor) -> list[Tensor]:
        """``(n, out, in [+1])`` into weight and bias draws."""
        weight = matrix[..., : self.in_features].to(self.params[0].dtype)
        if not self.bias:
            return [weight]
        return [weight, matrix[..., self.in_features].to(self.params[1].dtype)]


class DiagonalLinearBlock(LinearBlock):
    """The diagonal of a linear layer's Gauss-Newton matrix: with per-row gradients
    ``g`` and inputs ``a`` it is ``sum_rows g^2 (a^2)^T`` (and ``sum g^2`` for the
    bias)."""

    def __init__(self, names: list[str], params: list[Tensor]) -> None:
        super().__init__(names, params)
        columns = self.in_features + int(self.bias)
        self.curvature = torch.zeros(self.out_features, columns, dtype=torch.float64)

    def add(self, piece: LinearPiece) -> None:
        grad = piece.grad.double()
        inputs = _augmented(piece.inputs.double(), self.bias)
        self.curvature = self.curvature.to(grad.device)
        self.curvature.addmm_(grad.pow(2).T, inputs.pow(2))

    def _precision(self, prior: Tensor) -> Tensor:
        if prior.dim() == 1:  # the model's own diagonal, weight then bias
            weight = prior[: self.out_features * self.in_features]
            parts = [weight.reshape(self.out_features, self.in_features)]
            if self.bias:
                parts.append(prior[weight.numel() :].reshape(-1, 1))
            prior = torch.cat(parts, dim=1)
        return self.curvature + prior

    def log_det(self, prior: Tensor) -> Tensor:
        return self._precision(prior).log().sum()

    def noise(self, prior: Tensor, count: int, generator) -> list[Tensor]:
        precision = self._precision(prior)
        z = torch.randn(
            (count, *precision.shape), dtype=torch.float64, generator=generator
        )
        return self._split_matrix(z.to(precision.device) * precision.rsqrt())

    def output_covariance(self, grads: Tensor, inputs: Tensor, prior: Tensor) -> Tensor:
        """``(B, K, K)`` from gradients ``(B, K, out)`` and inputs ``(B, in)``."""
        variance = self._precision(prior).reciprocal()
        inputs = _augmented(inputs.double(), self.bias)
        per_output = inputs.pow(2) @ variance.T
        grads = grads.double()
        return torch.einsum("bko,blo,bo->bkl", grads, grads, per_output)


class KroneckerLinearBlock(LinearBlock):
    """KFAC: the layer's Gauss-Newton block as ``G (x) A / N``, exact for one row.

    With the eigendecompositions ``A = Q_A diag(a) Q_A^T`` and ``G = Q_G diag(g)
    Q_G^T`` the precision ``G (x) A / N + delta I`` has eigenvalues ``g a^T / N +
    delta`` in the basis ``Q_G (x) Q_A``: draws, log determinants and output
    covariances never form the ``P x P`` matrix.
    """

    def __init__(self, names: list[str], params: list[Tensor]) -> None:
        super().__init__(names, params)
        columns = self.in_features + int(self.bias)
        self.input_factor = torch.zeros(columns, columns, dtype=torch.float64)
        self.gradient_factor = torch.zeros(
            self.out_features, self.out_features, dtype=torch.float64
        )
        self.rows = 0
        self._eigen = None

    def set_inputs(self, inputs: Tensor) -> None:
        inputs = _augmented(inputs.double(), self.bias)
        self.input_factor = inputs.T @ inputs
        self.rows = inputs.shape[0]

    def add(self, piece: LinearPiece) -> None:
        grad = piece.grad.double()
        self.gradient_factor = self.gradient_factor.to(grad.device)
        self.gradient_factor.addmm_(grad.T, grad)

    def _eigenvalues(self, prior: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if self._eigen is None:
            a_values, a_vectors = torch.linalg.eigh(self.input_factor)
            g_values, g_vectors = torch.linalg.eigh(self.gradient_factor)
            self._eigen = (
                a_values.clamp(min=0),
                a_vectors,
                g_values.clamp(min=0),
                g_vectors,
            )
        a_values, a_vectors, g_values, g_vectors = self._eigen
        if prior.dim() != 0:
            raise ValueError(
                f"structure='kfac' needs one prior precision per layer, but the model's "
                f"priors of {self.names} differ between elements; pass prior_precision="
            )
        values = torch.outer(g_values, a_values) / max(self.rows, 1) + prior
        return values, a_vectors, g_vectors

    def log_det(self, prior: Tensor) -> Tensor:
        return self._eigenvalues(prior)[0].log().sum()

    def noise(self, prior: Tensor, count: int, generator) -> list[Tensor]:
        values, a_vectors, g_vectors = self._eigenvalues(prior)
        z = torch.randn(
            (count, *values.shape), dtype=torch.float64, generator=generator
        )
        z = z.to(values.device) * values.rsqrt()
        return self._split_matrix(g_vectors @ z @ a_vectors.T)

    def output_covariance(self, grads: Tensor, inputs: Tensor, prior: Tensor) -> Tensor:
        values, a_vectors, g_vectors = self._eigenvalues(prior)
        inputs = _augmented(inputs.double(), self.bias) @ a_vectors
        grads = grads.double() @ g_vectors
        per_output = inputs.pow(2) @ values.reciprocal().T
        return torch.einsum("bko,blo,bo->bkl", grads, grads, per_output)


class LowRankBlock(DenseBlock):
    """The Gauss-Newton matrix of any parameters as ``U diag(lam) U^T``, its top
    ``rank`` eigenpairs, plus a diagonal prior precision ``D``.

    The block keeps each direction's Jacobian pieces (per row: ``g`` and ``a`` of a
    linear layer, dense rows for other variables; ``O(B (out + in))`` a layer, never
    ``O(P^2)``) and multiplies the matrix by ``P x m`` blocks of vectors from them.
    :meth:`finish` runs randomized subspace iteration (Halko, Martinsson and Tropp,
    2011): ``m = rank + OVERSAMPLING`` Gaussian vectors (a fixed seed, the global
    generator untouched), ``POWER_ITERATIONS`` products each re-orthonormalised, and
    the eigendecomposition of the ``m x m`` projection; memory ``O(P m)``. It is
    exact when the matrix's rank is at most ``m``.

    With ``W = U diag(lam)^(1/2)`` and ``C = I + W^T D^-1 W`` (``rank x rank``) the
    precision ``D + W W^T`` has log determinant ``sum log D + log det C`` (the
    matrix determinant lemma) and covariance ``D^-1 - D^-1 W C^-1 W^T D^-1``
    (Woodbury); draws are ``D^-1/2 (z + V ((1 + s^2)^-1/2 - 1) V^T z)`` with
    ``D^-1/2 W = V diag(s) R^T`` a thin SVD: exact for "low rank + diagonal".
    """

    OVERSAMPLING = 10
    POWER_ITERATIONS = 2

    def __init__(
        self, names: list[str], params: list[Tensor], members: list, rank: int
    ) -> None:
        Block.__init__(self, names, params)
        self.members = members
        self.rank = rank
        self.eigenvalues: Tensor | None = None
        self.eigenvectors: Tensor | None = None
        self._directions: list[tuple[dict, dict]] = []

    def add_pieces(
        self,
        pieces: dict[str, LinearPiece | None],
        other_rows: dict[int, Tensor],
        count: int,
        like: Tensor,
    ) -> None:
        """Keep one direction's pieces for the products of :meth:`finish`."""
        self._directions.append((pieces, other_rows))

    def _product(self, vectors: Tensor) -> Tensor:
        """The Gauss-Newton matrix times ``vectors`` ``(P, m)``. A linear layer's
        rows along every direction share its inputs ``a``: ``a`` is contracted
        with the vectors once, and with the backpropagated ``sum g y^T`` once, so
        the cost is ``O(B P m)`` whatever the number of directions. Both
        contractions run over :attr:`ROWS_PER_CHUNK` output rows at a time and the
        result is allocated after ``a . vectors`` is freed: besides ``vectors``
        and the result, memory ``O(B out m)`` for the layers' ``a . vectors``."""
        sizes = [self._member_size(i) for i in range(len(self.members))]
        parts = vectors.split(sizes)
        linear = {}  # position -> a . vectors (B, out, m)
        for j, (member, part) in enumerate(zip(self.members, parts)):
            if member.record is not None:
                linear[j] = self._inputs_times(member, part)
        pairs = {j: [] for j in linear}  # position -> [(g, y) per direction]
        others = {}  # position -> its rows of the product
        for pieces, other_rows in self._directions:
            projected = 0
            used = []
            for j, member in enumerate(self.members):
                if member.record is None:
                    index = sum(len(m.names) for m in self.members[:j])
                    rows = other_rows[id(self.params[index])].double()
                    projected = projected + rows @ parts[j]
                    used.append((j, rows))
                    continue
                piece = pieces.get(member.record.path)
                if piece is not None:
                    grad = piece.grad.double()
                    projected = projected + torch.einsum("bo,bom->bm", grad, linear[j])
                    used.append((j, piece.grad))  # float64 again chunk by chunk
            for j, factor in used:
                if j in linear:
                    pairs[j].append((factor, projected))
                else:
                    others[j] = others.get(j, 0) + factor.T @ projected
        del linear
        result = torch.zeros_like(vectors)
        targets = result.split(sizes)
        for j, rows in others.items():
            targets[j].add_(rows)
        for j, pair in pairs.items():
            if pair:
                self._add_backward(self.members[j], pair, targets[j])
        return result

    #: Output rows of a linear layer per step of :meth:`_product`'s contractions.
    ROWS_PER_CHUNK = 128

    def _chunks(self, member: Any) -> Iterator[tuple[slice, Tensor, bool]]:
        """The output-row slices of a linear layer, its float64 inputs and whether
        it has a bias."""
        out = member.record.module.out_features
        inputs = member.record.inputs.double()
        for start in range(0, out, self.ROWS_PER_CHUNK):
            yield (
                slice(start, start + self.ROWS_PER_CHUNK),
                inputs,
                len(member.names) == 2,
            )

    def _inputs_times(self, member: Any, part: Tensor) -> Tensor:
        """``a . vectors`` of a linear layer: ``(B, out, m)``."""
        out = member.record.module.out_features
        batch, width = member.record.inputs.shape
        weight = part[: out * width].view(out, width, -1)
        result = part.new_empty(batch, out, part.shape[-1])
        for rows, inputs, bias in self._chunks(member):
            result[:, rows] = torch.einsum("bi,oim->bom", inputs, weight[rows])
            if bias:
                result[:, rows] += part[out * width :][rows]
        return result

    def _add_backward(self, member: Any, pairs: list, target: Tensor) -> None:
        """Add ``sum_b a_b (x) sum_k g_bk y_bk^T`` over the directions ``k`` to a
        linear layer's rows of the product."""
        out = member.record.module.out_features
        width = member.record.inputs.shape[1]
        weight = target[: out * width].view(out, width, -1)
        ys = torch.stack([y for _, y in pairs], dim=1)  # (B, K, m)
        for rows, inputs, bias in self._chunks(member):
            grads = torch.stack([g[:, rows].double() for g, _ in pairs], dim=2)
            backward = torch.bmm(grads, ys)  # (B, c, m)
            weight[rows].add_(torch.einsum("bi,bom->oim", inputs, backward))
            if bias:
                target[out * width :][rows].add_(backward.sum(0))

    def _member_size(self, position: int) -> int:
        start = sum(len(m.names) for m in self.members[:position])
        width = len(self.members[position].names)
        return sum(p.numel() for p in self.params[start : start + width])

    def finish(self) -> None:
        """Find the top eigenpairs; the stored pieces are then dropped."""
        columns = min(self.rank + self.OVERSAMPLING, self.size)
        generator = torch.Generator().manual_seed(0)
        device = self.mean[0].device
        basis = torch.randn(
            self.size, columns, dtype=torch.float64, generator=generator
        )
        basis = basis.to(device)
        for _ in range(self.POWER_ITERATIONS + 1):
            product = self._product(basis)
            del basis  # one P x m matrix fewer at the QR's peak
            basis = torch.linalg.qr(product)[0]
            del product
        projection = basis.T @ self._product(basis)
        values, vectors = torch.linalg.eigh(0.5 * (projection + projection.T))
        values, vectors = values.flip(0)[: self.rank], vectors.flip(1)[:, : self.rank]
        self.eigenvalues = values.clamp(min=0)
        self.eigenvectors = basis @ vectors
        self._directions = []

    def _parts(self, prior: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``D`` (a vector), ``W`` and the Cholesky factor of ``C``."""
        if prior.dim() == 2:
            raise ValueError(
                f"structure='lowrank' needs a diagonal prior precision for {self.names}"
            )
        diagonal = prior.to(self.eigenvectors.device).expand(self.size)
        root = self.eigenvectors * self.eigenvalues.sqrt()
        inner = root.T @ (root / diagonal[:, None])
        eye = torch.eye(self.rank, dtype=torch.float64, device=root.device)
        return diagonal, root, torch.linalg.cholesky(eye + inner)

    def log_det(self, prior: Tensor) -> Tensor:
        diagonal, _, cholesky = self._parts(prior)
        return diagonal.log().sum() + 2 * cholesky.diagonal().log().sum()

    def noise(self, prior: Tensor, count: int, generator) -> list[Tensor]:
        diagonal, root, _ = self._parts(prior)
        scale = diagonal.rsqrt()
        left, singular, _ = torch.linalg.svd(root * scale[:, None], full_matrices=False)
        z = torch.randn(count, self.size, dtype=torch.float64, generator=generator)
        z = z.to(root.device)
        shrink = (1 + singular.pow(2)).rsqrt() - 1
        return self.split((z + ((z @ left) * shrink) @ left.T) * scale)

    def _correction(self, rows: Tensor, prior: Tensor) -> tuple[Tensor, Tensor]:
        """``rows D^-1`` and ``rows D^-1 W L^-T`` (``C = L L^T``), rows ``(..., P)``."""
        diagonal, root, cholesky = self._parts(prior)
        scaled = rows.double() / diagonal
        solved = torch.linalg.solve_triangular(
            cholesky, (scaled @ root).transpose(-1, -2), upper=False
        )
        return scaled, solved.transpose(-1, -2)

    def covariance(self, prior: Tensor) -> Tensor:
        eye = torch.eye(self.size, dtype=torch.float64, device=self.eigenvectors.device)
        scaled, solved = self._correction(eye, prior)
        return scaled - solved @ solved.T

    def output_covariance(self, rows: Tensor, prior: Tensor) -> Tensor:
        scaled, solved = self._correction(rows, prior)
        return torch.einsum("bkp,blp->bkl", scaled, rows.double()) - (
            solved @ solved.transpose(-1, -2)
        )


def scalar_prior_term(block: Block, precision: Tensor) -> Tensor:
    """``log N(mode | 0, precision^-1 I)`` of a block (the prior of the evidence)."""
    return 0.5 * (
        block.size * (precision.log() - math.log(2 * math.pi))
        - precision * block.squared_norm()
    )


__all__ = [
    "FULL_MEMORY_LIMIT",
    "DenseBlock",
    "DiagonalLinearBlock",
    "KroneckerLinearBlock",
    "LinearPiece",
    "LowRankBlock",
    "dense_bytes",
    "scalar_prior_term",
]
