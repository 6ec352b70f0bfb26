"""The numba-compiled traced potential agrees with the numpy replay and with torch
autograd, on every operation it compiles (one by one in float32, a few at a time
in float64), on the benchmark models and on generated chains of operations
(hypothesis); what it cannot compile, or what disagrees with the model, falls
back to the numpy replay."""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings

from borch.infer.hmc.traced import numba_program
from borch.infer.hmc.traced.tracing import (
    compile_graph,
    record_value_and_grad,
    tolerance,
    traced_potential,
)
from tests.infer.hmc.test_inlined_replay import CHAINS, chain

pytest.importorskip("numba")

aten = torch.ops.aten
F = torch.nn.functional
WEIGHTS = torch.linspace(-1.0, 2.0, 12, dtype=torch.float64).reshape(4, 3)
TARGET = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0, 0.0], dtype=torch.float64)

#: A function of a 6-vector per operation the numba program compiles, with the ATen
#: operation its trace (forward or backward) must contain.
OPERATIONS = {
    "add": (lambda q: (q + q.flip(0)).exp().sum(), aten.add.Tensor),
    "add alpha": (lambda q: torch.add(q, q.exp(), alpha=2).sum(), aten.add.Tensor),
    "sub": (lambda q: (q - q.exp()).sum(), aten.sub.Tensor),
    "rsub": (lambda q: (2.0 - q).exp().sum(), aten.rsub.Scalar),
    "mul": (lambda q: (q * q.sin()).sum(), aten.mul.Tensor),
    "div": (lambda q: (q / (q.exp() + 1)).sum(), aten.div.Tensor),
    "neg": (lambda q: (-q).exp().sum(), aten.neg.default),
    "reciprocal": (lambda q: (q.exp() + 1).reciprocal().sum(), aten.reciprocal.default),
    "square": (lambda q: q.pow(2).sum() * 1.5, aten.pow.Tensor_Scalar),
    "cube": (lambda q: q.pow(3).sum(), aten.pow.Tensor_Scalar),
    "power": (lambda q: (q.exp() ** q).sum(), aten.pow.Tensor_Tensor),
    "scalar power": (lambda q: (2.0**q).sum(), aten.pow.Scalar),
    "expm1": (lambda q: q.expm1().sum(), aten.expm1.default),
    "log": (lambda q: (q.exp() + 1).log().sum(), aten.log.default),
    "log1p": (lambda q: (q * q).log1p().sum(), aten.log1p.default),
    "sqrt": (lambda q: (q * q + 1).sqrt().sum(), aten.sqrt.default),
    "rsqrt": (lambda q: (q * q + 1).rsqrt().sum(), aten.rsqrt.default),
    "abs": (lambda q: (q.abs() * q).sum(), aten.sgn.default),
    "sign": (lambda q: (q.sign() * q).sum(), aten.sign.default),
    "cos": (lambda q: q.cos().sum(), aten.sin.default),
    "tanh": (lambda q: q.tanh().sum(), aten.tanh_backward.default),
    "floor": (lambda q: (q.floor() * q).sum(), aten.floor.default),
    "sigmoid": (lambda q: q.sigmoid().sum(), aten.sigmoid_backward.default),
    "softplus": (lambda q: F.softplus(3 * q).sum(), aten.softplus.default),
    "softplus beta": (
        lambda q: F.softplus(q, beta=2.0, threshold=1.0).sum(),
        aten.softplus.default,
    ),
    "relu": (lambda q: (F.relu(q) * q).sum(), aten.relu.default),
    "clamp_min": (lambda q: (q.clamp_min(0.1) * q).sum(), aten.clamp_min.default),
    "clamp_max": (lambda q: (q.clamp_max(0.1) * q).sum(), aten.clamp_max.default),
    "where": (
        lambda q: torch.where(q >= 0, q.exp(), q * q).sum(),
        aten.where.self,
    ),
    "scalar where": (
        lambda q: torch.where(q[0] > 0, q[1], -q[2]) * q.sum(),
        aten.gt.Scalar,
    ),
    "logical": (
        lambda q: torch.where(
            torch.logical_and(q > -0.5, torch.logical_not(q > 0.5)), q, 2 * q
        ).sum(),
        aten.logical_not.default,
    ),
    "compare tensors": (
        lambda q: torch.where(q < q.flip(0), q, q.sin()).sum(),
        aten.lt.Tensor,
    ),
    "sum over a dim": (
        lambda q: q.reshape(2, 3).exp().sum(1).square().sum(),
        aten.sum.dim_IntList,
    ),
    "sum keepdim": (
        lambda q: (q.reshape(2, 3).sum(0, keepdim=True) * q.reshape(2, 3)).sum(),
        aten.sum.dim_IntList,
    ),
    "mean": (lambda q: q.exp().mean() * q.sum(), aten.mean.default),
    "mean over a dim": (
        lambda q: q.reshape(3, 2).mean(0).square().sum(),
        aten.mean.dim,
    ),
    "matrix-vector": (
        lambda q: (WEIGHTS.to(q.dtype) @ q[:3]).sigmoid().sum() + q.sum(),
        aten.mv.default,
    ),
    "matrix-matrix": (
        lambda q: (WEIGHTS.to(q.dtype) @ q.reshape(3, 2)).tanh().sum(),
        aten.mm.default,
    ),
    "dot": (lambda q: torch.dot(q, q.exp()), aten.dot.default),
    "transpose": (
        lambda q: (q.reshape(2, 3).transpose(0, 1) @ q[:2].reshape(2, 1)).sum(),
        aten.transpose.int,
    ),
    "permute": (
        lambda q: (
            q.reshape(1, 2, 3).permute(2, 1, 0).exp() * q.reshape(3, 2, 1)
        ).sum(),
        aten.permute.default,
    ),
    "unsqueeze": (
        lambda q: (q.unsqueeze(0) * q.unsqueeze(1)).sum(),
        aten.unsqueeze.default,
    ),
    "scalar reshape": (
        lambda q: q[2:3].reshape(()).exp() * q.sum(),
        aten.view.default,
    ),
    "expand": (lambda q: q[0].expand(5).sin().sum() + q.sum(), aten.expand.default),
    "expand rows": (
        lambda q: (q[:3].reshape(1, 3).expand(4, 3) * WEIGHTS.to(q.dtype)).exp().sum(),
        aten.expand.default,
    ),
    "select": (lambda q: q.reshape(2, 3)[:, 1].exp().sum() + q.sum(), aten.select.int),
    "slice": (lambda q: q[1:4].exp().sum() + q[-2:].sum(), aten.slice.Tensor),
    "split rows": (
        lambda q: sum(
            (part.exp() * i).sum()
            for i, part in enumerate(q.reshape(2, 3).split([1, 2], 1))
        ),
        aten.split_with_sizes.default,
    ),
    "cat": (lambda q: torch.cat([q.exp(), q[:2] * 3]).square().sum(), aten.cat.default),
    "stack": (
        lambda q: (
            (torch.stack([q, q.exp()], 1) * torch.arange(12.0).reshape(6, 2))
            .square()
            .sum()
        ),
        aten.stack.default,
    ),
    "bce with logits": (
        lambda q: F.binary_cross_entropy_with_logits(
            3 * q, TARGET.to(q.dtype), reduction="sum"
        ),
        aten.binary_cross_entropy_with_logits.default,
    ),
    "lgamma": (lambda q: (q.exp() + 0.5).lgamma().sum(), aten.digamma.default),
    "scalar lgamma": (
        lambda q: (q[0].exp() + 0.5).lgamma() * q.sum(),
        aten.lgamma.default,
    ),
    "erf": (lambda q: q.erf().sum() + q.erfc().square().sum(), aten.erfc.default),
    "another dtype": (
        lambda q: (
            ((q.double() if q.dtype == torch.float32 else q.float()) * 2)
            .to(q.dtype)
            .square()
            .sum()
        ),
        aten._to_copy.default,
    ),
}


@pytest.fixture(autouse=True)
def _cache_in(tmp_path_factory, monkeypatch):
    """Compiled programs go to a temporary directory, not the user's cache."""
    monkeypatch.setenv("BORCH_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "c"))


def programs(function, example):
    """The numba program and the numpy replay of one recorded graph."""
    graph = record_value_and_grad(function, example)
    compiled = compile_graph(graph, example, numpy_input=True, numba=True)
    replayed = compile_graph(graph, example, numpy_input=True)
    return compiled, replayed, graph


def eager(function, position):
    position = torch.from_numpy(position).requires_grad_(True)
    value = function(position)
    (grad,) = torch.autograd.grad(value, position)
    return value.item(), grad.numpy()


def assert_agree(function, compiled, replayed, points):
    """Value and gradient of ``compiled`` as those of the numpy replay and of torch
    autograd, within :func:`tolerance` of the dtype (relative to ``max(1, size)``),
    and the gradient in the position's dtype."""
    for point in points:
        rtol = tolerance(point.dtype)
        energy, grad = compiled(point)
        assert grad.dtype == point.dtype and grad.shape == point.shape
        for expected_energy, expected_grad in (replayed(point), eager(function, point)):
            expected_energy = float(expected_energy)
            scale = max(1.0, abs(expected_energy))
            assert abs(float(energy) - expected_energy) <= rtol * scale
            scale = max(1.0, float(np.abs(expected_grad).max()))
            np.testing.assert_allclose(grad, expected_grad, rtol=0, atol=rtol * scale)


def check_operations(function, targets, dtype):
    example = torch.linspace(-0.9, 1.3, 6, dtype=dtype)
    compiled, replayed, graph = programs(function, example)
    assert set(targets) <= {node.target for node in graph.graph.nodes}
    assert compiled.backend == "numba", compiled.source
    rng = np.random.default_rng(0)
    points = [rng.uniform(-2, 2, 6).astype(example.numpy().dtype) for _ in range(5)]
    assert_agree(function, compiled, replayed, points)


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_compiled_operations_agree_with_the_replay_and_torch(name):
    """One program per operation, in float32 (where numbers written in the wrong
    dtype show)."""
    function, target = OPERATIONS[name]
    check_operations(function, [target], torch.float32)


#: The operations in groups of a few, one float64 program each: one program per
#: operation costs a compilation each (about 1.5 s), one program of all of them
#: compiles for over a minute.
GROUPS = [sorted(OPERATIONS)[i : i + 6] for i in range(0, len(OPERATIONS), 6)]


@pytest.mark.parametrize("names", GROUPS, ids=lambda names: names[0])
def test_operations_in_float64_programs(names):
    """A wrong form of any of them changes the sum's value or gradient."""

    def together(q):
        return sum(OPERATIONS[name][0](q) for name in names)

    check_operations(together, [OPERATIONS[name][1] for name in names], torch.float64)


@pytest.mark.parametrize("tail", [-60.0, 60.0])
def test_stable_formulas_hold_in_the_tails(tail):
    """sigmoid, softplus and the BCE loss far from the traced point: no overflow to
    inf or NaN where torch has finite values."""

    def function(q):
        return (
            q.sigmoid().sum()
            + F.softplus(q).sum()
            + F.binary_cross_entropy_with_logits(q, TARGET.to(q.dtype), reduction="sum")
        )

    example = torch.linspace(-0.9, 1.3, 6, dtype=torch.float32)
    compiled, replayed, _ = programs(function, example)
    assert compiled.backend == "numba"
    point = np.full(6, tail, dtype=np.float32) + np.arange(6, dtype=np.float32)
    assert_agree(function, compiled, replayed, [point])


def test_an_operation_without_a_numba_form_runs_the_numpy_replay():
    """``cumsum`` has no numba form here (nor a numpy one): the program is today's
    replay, with the same values."""
    example = torch.linspace(-0.9, 1.3, 6, dtype=torch.float64)
    function = lambda q: q.cumsum(0).exp().sum()  # noqa: E731
    compiled, replayed, _ = programs(function, example)
    assert compiled.backend == "numpy" and replayed.backend == "numpy"
    point = np.linspace(-1.0, 1.0, 6)
    assert float(compiled(point)[0]) == float(replayed(point)[0])
    np.testing.assert_array_equal(compiled(point)[1], replayed(point)[1])


def model_potential(workload):
    from benchmarks.nuts_numpyro import borch_model
    from borch.infer.hmc.initialization import initial_point
    from borch.infer.hmc.model_conversion import ModelPotential, sampling_copy

    model, x = borch_model(workload)
    potential = ModelPotential(sampling_copy(model), (x,), {})
    points = [initial_point(potential, "uniform", seed).position for seed in range(4)]
    return potential, points


@pytest.mark.parametrize("workload", ["logistic", "kidiq", "mesquite"])
def test_the_benchmark_models_compile_and_agree(workload):
    eager, points = model_potential(workload)
    args = (eager.evaluate, eager, points[:2], eager.device, eager.dtype)
    compiled = traced_potential(*args, numba=True)
    replayed = traced_potential(*args, numba=False)
    assert (compiled.backend, replayed.backend) == ("numba", "numpy")
    for point in points:
        rtol = tolerance(eager.dtype)
        energy, grad = compiled(point)
        assert grad.dtype == compiled.numpy_dtype
        for expected_energy, expected_grad in (replayed(point), eager(point)):
            assert abs(energy - expected_energy) <= rtol * max(1, abs(expected_energy))
            scale = max(1.0, float(np.abs(expected_grad).max()))
            np.testing.assert_allclose(grad, expected_grad, rtol=0, atol=rtol * scale)


def test_a_numba_program_that_disagrees_gives_way_to_the_replay(monkeypatch):
    """A wrong numba form (exp off by a factor) is caught by the check against the
    model, and the numpy replay is used instead."""
    monkeypatch.setitem(
        numba_program.EXPRESSIONS,
        aten.exp.default,
        lambda node, w: f"(np.exp({w.node(node.args[0])}) * 1.5)",
    )
    eager, points = model_potential("kidiq")
    args = (eager.evaluate, eager, points[:2], eager.device, eager.dtype)
    assert traced_potential(*args, numba=True).backend == "numpy"


def test_borch_numba_0_turns_it_off(monkeypatch):
    monkeypatch.setenv("BORCH_NUMBA", "0")
    assert not numba_program.numba_enabled()
    eager, points = model_potential("mesquite")
    args = (eager.evaluate, eager, points[:2], eager.device, eager.dtype)
    assert traced_potential(*args).backend == "numpy"
    monkeypatch.setenv("BORCH_NUMBA", "1")
    assert traced_potential(*args).backend == "numba"


def test_the_source_is_cached_by_its_hash(tmp_path, monkeypatch):
    """One file per program in the cache directory, written once; an unusable cache
    directory (here a file) compiles without the cache."""
    monkeypatch.setenv("BORCH_CACHE_DIR", str(tmp_path / "cache"))
    source = "def program(position, c0):\n    return position[0] * c0[0], position\n"
    compiled = numba_program.compile_source(source)
    (written,) = (tmp_path / "cache" / "numba").glob("*.py")
    assert written.read_text() == source
    assert compiled(np.ones(2), np.full(1, 3.0))[0] == 3.0
    assert numba_program.compile_source(source) is compiled
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("BORCH_CACHE_DIR", str(tmp_path / "file"))
    other = source.replace("* c0[0]", "* c0[0] + 1")
    assert numba_program.compile_source(other)(np.ones(2), np.full(1, 3.0))[0] == 4.0


@settings(
    max_examples=12,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(**CHAINS)
def test_generated_chains_agree_with_the_replay_and_torch(
    left, right, combine, reduce, dtype, seed
):
    function = chain(left, right, combine, reduce)
    example = torch.linspace(-1.0, 1.0, 8, dtype=dtype)
    compiled, replayed, _ = programs(function, example)
    assert compiled.backend == "numba", compiled.source
    rng = np.random.default_rng(seed)
    points = [rng.uniform(-1.5, 1.5, 8).astype(example.numpy().dtype) for _ in range(3)]
    assert_agree(function, compiled, replayed, points)
