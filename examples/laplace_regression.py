"""The Laplace approximation
=========================

Fit a model by maximum a posteriori (a :class:`borch.posterior.PointMass`
posterior and LBFGS), then approximate its posterior by a Gaussian at the optimum
with the inverse Hessian of the loss as covariance
(:func:`borch.infer.laplace_posterior`).

The model is Bayesian linear regression with a known noise scale, whose posterior is
Gaussian with a closed form: there the Laplace approximation is exact, which the
script checks. A second model with a logistic likelihood, where the posterior is not
Gaussian, shows the predictive probabilities that the Laplace draws give.

Run ``python examples/laplace_regression.py`` (a few seconds).
"""

import torch

import borch
from borch import distributions as dist

torch.manual_seed(0)
NOISE = 0.5
PRIOR_SCALE = 2.0

x = torch.linspace(-3, 3, 40)
features = torch.stack([torch.ones_like(x), x], dim=1)  # intercept and slope
y = features @ torch.tensor([0.5, -1.2]) + NOISE * torch.randn(40)


class Regression(borch.Module):
    def __init__(self, likelihood, **kwargs):
        super().__init__(**kwargs)
        self.likelihood = likelihood

    def forward(self, features):
        self.weights = dist.Normal(torch.zeros(2), PRIOR_SCALE)
        self.y = self.likelihood(features @ self.weights)
        return self.y


def fit_map(model, features):
    """LBFGS on the negative log joint; returns the loss closure for the Hessian."""

    def loss_closure():
        borch.sample(model)
        model(features)
        return borch.infer.vi_loss(**borch.pq_to_infer(model))

    loss_closure()  # the first run creates the point masses
    optimizer = torch.optim.LBFGS(model.parameters(), max_iter=100)

    def step():
        optimizer.zero_grad()
        loss = loss_closure()
        loss.backward()
        return loss

    optimizer.step(step)
    return loss_closure


# %%
# MAP, then Laplace
# -----------------
# The point mass sits at the MAP estimate; ``laplace_posterior`` takes the Hessian of
# the same loss there.

model = Regression(
    lambda mean: dist.Normal(mean, NOISE), posterior=borch.posterior.PointMass()
)
model.observe(y=y)
loss_closure = fit_map(model, features)
approx = borch.infer.laplace_posterior(model, loss_closure)
print("MAP weights:          ", approx.laplace.mean)
print("Laplace covariance:\n", approx.laplace.covariance)

# %%
# The exact posterior of this model: precision ``X'X / noise^2 + I / prior^2``, mean
# ``covariance @ X'y / noise^2``. The Laplace approximation matches it.

precision = features.T @ features / NOISE**2 + torch.eye(2) / PRIOR_SCALE**2
covariance = torch.linalg.inv(precision)
mean = covariance @ features.T @ y / NOISE**2
print("exact mean:           ", mean)
print("exact covariance:\n", covariance)
print(
    "largest difference of the covariances:",
    (approx.laplace.covariance - covariance).abs().max().item(),
)

# %%
# Draws by name, and the model running on one draw at a time.

draws = approx.samples(2000)["weights"]
print("mean and sd of 2000 draws:", draws.mean(0), draws.std(0))
with approx.drawn():
    print("one draw of the weights inside drawn():", model.weights)
print("after it, the MAP values again:", model.weights)

# %%
# A logistic likelihood
# ---------------------
# For a non-Gaussian posterior the approximation is no longer exact, but it still
# widens the predictions where the data say little, which the MAP estimate alone
# cannot.

labels = torch.bernoulli(torch.sigmoid(2.0 * x))
classifier = Regression(
    lambda logits: dist.Bernoulli(logits=logits),
    posterior=borch.posterior.PointMass(),
)
classifier.observe(y=labels)
approx = borch.infer.laplace_posterior(classifier, fit_map(classifier, features))
new = torch.tensor([[1.0, 0.0], [1.0, 1.0], [1.0, 6.0]])  # x = 0, 1 and 6
weights = approx.samples(4000)["weights"]
probabilities = torch.sigmoid(weights @ new.T)
map_probability = torch.sigmoid(new @ approx.laplace.mean)
for point, p_map, p in zip([0, 1, 6], map_probability, probabilities.T):
    low, high = torch.quantile(p, torch.tensor([0.05, 0.95]))
    print(
        f"x = {point}: MAP p(y=1) {p_map:.3f}, Laplace mean {p.mean():.3f}, "
        f"90% interval [{low:.3f}, {high:.3f}]"
    )
