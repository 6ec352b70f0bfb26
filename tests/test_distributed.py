"""Data-parallel training: the loss on a shard, seeding, and the DDP wrapper.

The two-process test runs real gloo processes on loopback; the others use a
one-process group in the test process, which exercises the same DDP code paths
(construction-time broadcast, forward hooks) without spawning.
"""

import datetime
import socket
import time

import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp
from torch.nn import functional as F

import borch
from borch import distributed, posterior
from borch import distributions as dist

N, FEATURES, HIDDEN = 8, 3, 4
SEED = 11


class TinyBNN(borch.Module):
    """A one-hidden-layer Bayesian regression net with a constrained noise scale."""

    def __init__(self):
        super().__init__(
            posterior=posterior.Normal(log_scale=-1.0, loc_at_prior_mean=False)
        )
        kw = {"dtype": torch.float64}
        self.w1 = dist.Normal(torch.zeros(HIDDEN, FEATURES, **kw), 1.0)
        self.b1 = dist.Normal(torch.zeros(HIDDEN, **kw), 1.0)
        self.w2 = dist.Normal(torch.zeros(1, HIDDEN, **kw), 1.0)
        self.noise = dist.LogNormal(torch.tensor(0.0, **kw), 1.0)

    def forward(self, x):
        hidden = torch.tanh(F.linear(x, self.w1, self.b1))
        self.y = dist.Normal(F.linear(hidden, self.w2).squeeze(-1), self.noise)
        return self.y


def make_data():
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(N, FEATURES, generator=generator, dtype=torch.float64)
    y = torch.randn(N, generator=generator, dtype=torch.float64)
    return x, y


def train_steps(model, x, y, steps, loss_fn, wrapper=None):
    """``steps`` SGD steps; returns the gradients (by name) and losses of each."""
    runner = wrapper if wrapper is not None else model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    grads, losses = [], []
    for _ in range(steps):
        borch.sample(runner)
        model.observe(y=y)
        runner(x)
        loss = loss_fn(borch.pq_to_infer(runner))
        optimizer.zero_grad()
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
        losses.append(loss.detach())
        optimizer.step()
    return grads, losses


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _init_group(rank, world, port):
    tdist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=30),
    )


def _worker(rank, port, out_dir):
    """One rank: DDP training on its shard, plus what plain DDP does to its data."""
    _init_group(rank, 2, port)
    try:
        x, y = make_data()
        shard = slice(rank * N // 2, (rank + 1) * N // 2)
        distributed.seed(SEED)
        model = TinyBNN()
        model.observe(y=y[shard])  # observed before wrapping: the dangerous case
        wrapper = distributed.data_parallel(model)
        grads, losses = train_steps(
            model,
            x[shard],
            y[shard],
            steps=2,
            loss_fn=lambda pq: distributed.sharded_vi_loss(
                **pq, dataset_size=N, batch_size=N // 2
            ),
            wrapper=wrapper,
        )
        distributed.check_draws_agree(wrapper)
        own_data_kept = torch.equal(model.observed.y, y[shard])

        # Plain DDP on the same kind of model broadcasts rank 0's observed values
        # into every rank's data tensor.
        plain = TinyBNN()
        data = y[shard].clone()
        plain.observe(y=data)
        plain_wrapper = torch.nn.parallel.DistributedDataParallel(plain)
        plain_wrapper(x[shard])
        plain_kept = torch.equal(data, y[shard])

        independent = distributed.seed(SEED, same_draws=False)
        torch.save(
            {
                "grads": grads,
                "losses": losses,
                "own_data_kept": own_data_kept,
                "plain_kept": plain_kept,
                "independent_seed": independent,
            },
            f"{out_dir}/rank{rank}.pt",
        )
    finally:
        tdist.destroy_process_group()


def _spawn(fn, args, nprocs, timeout):
    context = mp.spawn(fn, args=args, nprocs=nprocs, join=False)
    deadline = time.monotonic() + timeout
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"distributed workers did not finish in {timeout} s")


def test_two_gloo_ranks_average_to_the_single_process_gradient(tmp_path):
    """DDP over two shards, same seed on both ranks, equals one process on the
    union batch: gradients after averaging agree to float64 rounding (the sums are
    only reordered), in two consecutive steps."""
    _spawn(_worker, (_free_port(), str(tmp_path)), nprocs=2, timeout=90)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]

    x, y = make_data()
    distributed.seed(SEED)
    model = TinyBNN()
    expected, _ = train_steps(
        model, x, y, steps=2, loss_fn=lambda pq: borch.infer.vi_loss(**pq)
    )
    for step, grads in enumerate(expected):
        for name, grad in grads.items():
            for rank in ranks:
                torch.testing.assert_close(
                    rank["grads"][step][name],
                    grad,
                    rtol=1e-11,
                    atol=1e-13,
                    msg=lambda m, n=name, s=step: f"step {s}, {n}: {m}",
                )
    assert ranks[0]["own_data_kept"] and ranks[1]["own_data_kept"]
    # plain DDP overwrote rank 1's data with rank 0's: the trap data_parallel avoids
    assert ranks[0]["plain_kept"] and not ranks[1]["plain_kept"]
    assert ranks[0]["independent_seed"] != ranks[1]["independent_seed"]


# ------------------------------------------------------------- one process
@pytest.fixture
def group():
    _init_group(0, 1, _free_port())
    yield
    tdist.destroy_process_group()


def test_data_parallel_needs_a_process_group():
    with pytest.raises(RuntimeError, match="init_process_group"):
        distributed.data_parallel(TinyBNN())


@pytest.mark.usefixtures("group")
def test_model_never_run_is_refused():
    class Lazy(borch.Module):
        def forward(self, x):
            self.w = dist.Normal(torch.zeros(FEATURES), 1.0)
            return x @ self.w

    model = Lazy()
    with pytest.raises(
        RuntimeError, match="no random variables yet.*forward pass first"
    ):
        distributed.data_parallel(model)
    model(torch.ones(2, FEATURES))
    wrapper = distributed.data_parallel(model)
    borch.sample(wrapper)
    wrapper(torch.ones(2, FEATURES)).sum().backward()
    assert next(model.posterior.w.parameters()).grad is not None


@pytest.mark.usefixtures("group")
def test_loaded_state_waiting_for_creation_is_refused():
    class Late(borch.Module):
        def forward(self):
            self.w = dist.Normal(0.0, 1.0)
            return self.w

    source = Late()
    source()
    fresh = Late()
    fresh.load_state_dict(source.state_dict())
    with pytest.raises(RuntimeError, match="'posterior.w'.*first forward pass"):
        distributed.data_parallel(fresh)


@pytest.mark.usefixtures("group")
def test_variables_created_after_wrapping_are_an_error():
    class Growing(borch.Module):
        def __init__(self):
            super().__init__()
            self.a = dist.Normal(0.0, 1.0)

        def forward(self, extra=False):
            if extra:
                self.b = dist.Normal(0.0, 1.0)
                return self.a + self.b
            return self.a

    wrapper = distributed.data_parallel(Growing())
    wrapper()
    with pytest.raises(
        RuntimeError, match=r"created approximating variables 'posterior\.b'"
    ):
        wrapper(extra=True)


@pytest.mark.usefixtures("group")
def test_observed_values_are_not_ddp_buffers_but_others_are():
    model = TinyBNN()
    model.register_buffer("counter", torch.zeros(()))
    model.observe(y=torch.zeros(N, dtype=torch.float64))
    wrapper = distributed.data_parallel(model)
    model.observe(z=torch.zeros(2))  # observed after wrapping: excluded at forward
    wrapper(make_data()[0])
    assert set(wrapper.parameters_to_ignore) == {"observed.y", "observed.z"}
    assert list(wrapper.named_module_buffers) == ["counter"]


def test_sharded_loss_is_the_whole_data_objective():
    """One shard of an exactly split data set, weighted by the number of shards,
    plus the divergence once: the single-process loss term by term."""
    x, y = make_data()
    model = TinyBNN()
    model.observe(y=y)
    model(x)
    pq = borch.pq_to_infer(model)
    observed = pq["observed"]
    nll = -sum(
        p.log_prob(v).sum()
        for p, v, o in zip(pq["p_dists"], pq["values"], observed)
        if o
    )
    divergence = borch.infer.vi_loss(**pq) - nll
    loss = distributed.sharded_vi_loss(**pq, dataset_size=4 * N, batch_size=N)
    torch.testing.assert_close(loss, 4 * nll + divergence, rtol=1e-12, atol=0)
    assert distributed.kl_scaling(4 * N, N) == 0.25


@pytest.mark.parametrize(
    ("dataset_size", "batch_size", "error", "match"),
    [
        (10, 0, ValueError, "batch_size must be a positive int, got 0"),
        (0, 1, ValueError, "dataset_size must be a positive int, got 0"),
        (10, 20, ValueError, "batch_size=20 exceeds dataset_size=10"),
        (10.0, 2, TypeError, r"dataset_size must be a positive int, got 10\.0"),
        (10, True, TypeError, "batch_size must be a positive int, got True"),
    ],
)
def test_sizes_are_checked(dataset_size, batch_size, error, match):
    with pytest.raises(error, match=match):
        distributed.kl_scaling(dataset_size, batch_size)


def test_seed_outside_a_group():
    assert distributed.seed(5) == 5
    first = torch.rand(())
    assert distributed.seed(5, same_draws=False) != 5  # a derived stream
    assert distributed.rank() == 0 and distributed.world_size() == 1
    distributed.seed(5)
    assert torch.equal(torch.rand(()), first)
    with pytest.raises(TypeError, match="base_seed must be an int"):
        distributed.seed(1.5)


class JointRegression(borch.Module):
    def forward(self, x):
        self.w = dist.Normal(torch.zeros(FEATURES, dtype=torch.float64), 1.0)
        self.noise = dist.HalfNormal(torch.tensor(1.0, dtype=torch.float64))
        self.y = dist.Normal(x @ self.w, self.noise)
        return self.y


@pytest.mark.usefixtures("group")
@pytest.mark.parametrize(
    "family", [posterior.MultivariateNormal, posterior.LowRankMultivariateNormal]
)
def test_a_laplace_start_made_before_wrapping_is_what_every_rank_gets(family):
    """A joint family's Laplace start is made by the first call, on that rank's
    batch; wrapping afterwards broadcasts rank 0's start (its frame buffers and the
    flag that it was made) to every rank, and no rank starts again."""

    x, y = make_data()
    model = JointRegression(posterior=family())
    model.observe(y=y)
    model(x)
    start = {k: v.clone() for k, v in model.posterior.state_dict().items()}
    assert bool(model.posterior._started)
    wrapper = distributed.data_parallel(model)
    broadcast = set(wrapper.named_module_buffers)
    assert "posterior._started" in broadcast
    assert {"posterior.w.origin", "posterior.noise.origin"} <= broadcast
    borch.sample(wrapper)
    wrapper(x)
    borch.infer.vi_loss(**borch.pq_to_infer(model)).backward()
    assert next(model.posterior.w.parameters()).grad is not None
    for key, value in model.posterior.state_dict().items():
        assert torch.equal(value, start[key]), key  # not started again


@pytest.mark.usefixtures("group")
def test_a_flow_made_before_wrapping_is_what_every_rank_gets():
    """The flow is made when the first call returns, on that rank; wrapping
    broadcasts rank 0's flow parameters and frame, and training does not make it
    again."""
    pytest.importorskip("zuko")
    x, y = make_data()
    model = JointRegression(posterior=posterior.NormalizingFlow(transforms=1))
    model.observe(y=y)
    model(x)
    segment = model.posterior.w.segment
    wrapper = distributed.data_parallel(model)
    broadcast = set(wrapper.named_module_buffers)
    assert {"posterior.w.segment.origin", "posterior.w.segment.basis"} <= broadcast
    borch.sample(wrapper)
    wrapper(x)
    borch.infer.vi_loss(**borch.pq_to_infer(model)).backward()
    assert model.posterior.w.segment is segment
    assert all(parameter.grad is not None for parameter in model.parameters())
