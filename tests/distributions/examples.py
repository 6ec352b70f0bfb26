"""Valid constructor arguments for every random-variable class in borch.distributions.

A distribution torch adds in a new release is generated automatically; the test that
enumerates torch's list then asks for an entry here, so it gets exercised too.
"""

import torch
from torch.distributions import constraints, transforms

from borch import distributions as dist


def _matrix():
    return torch.tensor([[2.0, 0.3], [0.3, 1.0]])


# name -> function returning keyword arguments (fresh tensors on every call)
EXAMPLES = {
    "Bernoulli": lambda: {"probs": torch.tensor([0.3, 0.6])},
    "Beta": lambda: {"concentration1": torch.tensor([2.0, 3.0]), "concentration0": 2.0},
    "Binomial": lambda: {"total_count": 10, "probs": torch.tensor([0.2, 0.7])},
    "Categorical": lambda: {"probs": torch.tensor([0.2, 0.3, 0.5])},
    "Cauchy": lambda: {"loc": torch.tensor([0.0, 1.0]), "scale": 2.0},
    "Chi2": lambda: {"df": torch.tensor([3.0, 4.0])},
    "ContinuousBernoulli": lambda: {"probs": torch.tensor([0.2, 0.8])},
    "Dirichlet": lambda: {"concentration": torch.tensor([1.5, 2.0, 3.0])},
    "Exponential": lambda: {"rate": torch.tensor([0.5, 2.0])},
    "FisherSnedecor": lambda: {"df1": torch.tensor([5.0, 6.0]), "df2": 8.0},
    "Gamma": lambda: {"concentration": torch.tensor([2.0, 3.0]), "rate": 1.5},
    "GeneralizedPareto": lambda: {"loc": 0.0, "scale": 1.0, "concentration": 0.2},
    "Geometric": lambda: {"probs": torch.tensor([0.3, 0.6])},
    "Gumbel": lambda: {"loc": torch.tensor([0.0, 1.0]), "scale": 2.0},
    "HalfCauchy": lambda: {"scale": torch.tensor([1.0, 2.0])},
    "HalfNormal": lambda: {"scale": torch.tensor([1.0, 2.0])},
    "Independent": lambda: {
        "base_distribution": dist.Normal(torch.zeros(3), 1.0),
        "reinterpreted_batch_ndims": 1,
    },
    "InverseGamma": lambda: {"concentration": torch.tensor([3.0, 4.0]), "rate": 2.0},
    "Kumaraswamy": lambda: {
        "concentration1": torch.tensor([2.0, 3.0]),
        "concentration0": 2.0,
    },
    "LKJCholesky": lambda: {"dim": 3, "concentration": 2.0},
    "Laplace": lambda: {"loc": torch.tensor([0.0, 1.0]), "scale": 2.0},
    "LogNormal": lambda: {"loc": torch.tensor([0.0, 0.5]), "scale": 0.5},
    "LogisticNormal": lambda: {"loc": torch.zeros(2), "scale": torch.ones(2)},
    "LowRankMultivariateNormal": lambda: {
        "loc": torch.zeros(2),
        "cov_factor": torch.tensor([[1.0], [0.5]]),
        "cov_diag": torch.ones(2),
    },
    "MixtureSameFamily": lambda: {
        "mixture_distribution": dist.Categorical(probs=torch.tensor([0.3, 0.7])),
        "component_distribution": dist.Normal(torch.tensor([-1.0, 2.0]), 1.0),
    },
    "Multinomial": lambda: {"total_count": 5, "probs": torch.tensor([0.2, 0.3, 0.5])},
    "MultivariateNormal": lambda: {
        "loc": torch.zeros(2),
        "covariance_matrix": _matrix(),
    },
    "NegativeBinomial": lambda: {"total_count": 4.0, "probs": torch.tensor([0.3, 0.6])},
    "Normal": lambda: {"loc": torch.tensor([0.0, 1.0]), "scale": 2.0},
    "OneHotCategorical": lambda: {"probs": torch.tensor([0.2, 0.3, 0.5])},
    "OneHotCategoricalStraightThrough": lambda: {
        "probs": torch.tensor([0.2, 0.3, 0.5])
    },
    "Pareto": lambda: {"scale": torch.tensor([1.0, 2.0]), "alpha": 3.0},
    "Poisson": lambda: {"rate": torch.tensor([2.0, 5.0])},
    "RelaxedBernoulli": lambda: {
        "temperature": torch.tensor(0.5),
        "probs": torch.tensor([0.3, 0.6]),
    },
    "RelaxedOneHotCategorical": lambda: {
        "temperature": torch.tensor(0.5),
        "probs": torch.tensor([0.2, 0.3, 0.5]),
    },
    "StudentT": lambda: {"df": torch.tensor([3.0, 5.0]), "loc": 0.0, "scale": 1.0},
    "TransformedDistribution": lambda: {
        "base_distribution": dist.Normal(torch.zeros(2), 1.0),
        "transforms": [transforms.ExpTransform()],
    },
    "Uniform": lambda: {"low": torch.tensor([0.0, 1.0]), "high": 3.0},
    "VonMises": lambda: {"loc": torch.tensor([0.0, 1.0]), "concentration": 2.0},
    "Weibull": lambda: {"scale": torch.tensor([1.0, 2.0]), "concentration": 1.5},
    "Wishart": lambda: {"df": 10.0, "covariance_matrix": _matrix()},
    "Delta": lambda: {"value": torch.tensor([1.0, 2.0])},
    "PointMass": lambda: {
        "unconstrained_value": torch.tensor([0.0, 1.0]),
        "support": constraints.positive,
    },
}
