"""The traced potential equals the eager model on generated models (hypothesis).

Each example is a model of one to three latent variables, each of any continuous
family borch supports (constrained or unconstrained support), scalar or batched,
optionally pushed through a chain of transforms, optionally with an observed
likelihood on the latent values. The potential is traced at one point and its value
and gradient compared with the eager model's at other random points, with the
criterion the sampler itself uses (``disagreement``: relative ``sqrt(eps)``).
Families whose log density branches on tensor values must be refused at trace time.
"""

import numpy as np
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch.distributions import transforms as T

import borch
from borch import distributions as dist
from borch.infer.hmc.traced.tracing import disagreement
from tests.distributions.examples import EXAMPLES
from tests.infer.hmc.test_model_conversion import CONTINUOUS
from tests.infer.hmc.test_tracing import UNTRACEABLE, model_potential, traced_and_eager

TRANSFORMS = {
    "exp": lambda: T.ExpTransform(),
    "affine": lambda: T.AffineTransform(0.5, 2.0),
    "sigmoid": lambda: T.SigmoidTransform(),
    "tanh": lambda: T.TanhTransform(),
    "softplus": lambda: T.SoftplusTransform(),
    "negate": lambda: T.AffineTransform(0.0, -1.0),
}


def scalar_arguments(name):
    """The example's arguments with batch dimension 2 reduced to a scalar, or None
    when the family has an event shape or no batch to reduce."""
    arguments = EXAMPLES[name]()
    reduced, changed = {}, False
    for key, value in arguments.items():
        if isinstance(value, torch.Tensor) and value.shape == (2,):
            value, changed = value[0], True
        reduced[key] = value
    if not changed:
        return None
    try:
        prior = getattr(dist, name)(**reduced).distribution
    except (ValueError, RuntimeError, TypeError):
        return None
    return reduced if prior.batch_shape == () and prior.event_shape == () else None


SCALAR = sorted(name for name in CONTINUOUS if scalar_arguments(name) is not None)


@st.composite
def latent(draw):
    kind = draw(st.sampled_from(["family", "transformed"]))
    if kind == "transformed":
        batched = draw(st.booleans())
        chain = draw(
            st.lists(st.sampled_from(sorted(TRANSFORMS)), min_size=1, max_size=3)
        )
        return ("transformed", batched, tuple(chain))
    name = draw(st.sampled_from(CONTINUOUS))
    scalar = name in SCALAR and draw(st.booleans())
    return ("family", name, scalar)


def build(spec):
    if spec[0] == "transformed":
        _, batched, chain = spec
        loc = torch.zeros(3) if batched else torch.tensor(0.0)
        return dist.TransformedDistribution(
            dist.Normal(loc, 1.0), [TRANSFORMS[name]() for name in chain]
        )
    _, name, scalar = spec
    arguments = scalar_arguments(name) if scalar else EXAMPLES[name]()
    return getattr(dist, name)(**arguments)


class Generated(borch.Module):
    def __init__(self, specs, observed):
        super().__init__()
        self.specs, self.with_likelihood = specs, observed is not None
        if observed is not None:
            self.observe(y=observed)

    def forward(self):
        total = 0.0
        for index, spec in enumerate(self.specs):
            setattr(self, f"z{index}", build(spec))
            value = getattr(self, f"z{index}")
            total = total + torch.tanh(value).sum()  # bounded: any support is fine
        if self.with_likelihood:
            self.y = dist.Normal(total, 1.5)


@settings(
    max_examples=15,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    specs=st.lists(latent(), min_size=1, max_size=3),
    observed=st.one_of(st.none(), st.floats(-3, 3)),
    seed=st.integers(0, 2**16),
)
def test_traced_potential_equals_the_eager_model(specs, observed, seed):
    observed = None if observed is None else torch.tensor([observed, -observed])
    model = Generated(specs, observed)
    potential = model_potential(model)
    rng = np.random.default_rng(seed)
    points = [rng.uniform(-2, 2, potential.dim).astype(np.float32) for _ in range(4)]
    families = {spec[1] for spec in specs if spec[0] == "family"}
    for (energy, grad), (expected_energy, expected_grad) in traced_and_eager(
        potential, points, refused=bool(families & UNTRACEABLE)
    ):
        assume(np.isfinite(expected_energy))
        difference = disagreement(
            energy, grad, expected_energy, expected_grad, np.float32
        )
        assert difference is None, f"{specs}: {difference}"
