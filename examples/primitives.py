"""Random variables and modules
============================

The two primitives of borch: a *random variable* is a torch distribution that also
holds a current value and acts as that value in torch code; a :class:`borch.Module`
is a ``torch.nn.Module`` whose random-variable attributes are priors, each with an
approximating variable that the module's posterior creates for it.

Run ``python examples/primitives.py`` (a few seconds).
"""

import torch

import borch
from borch import distributions as dist

torch.manual_seed(0)

# %%
# A random variable
# -----------------
# Every ``torch.distributions`` class has a twin in ``borch.distributions`` with the
# same arguments. Creating one draws a value; the variable then behaves as that
# tensor, and calling it draws a new one.

x = dist.Normal(0.0, 1.0)
print("value:", x.tensor)
print("x + 1 =", x + 1)
print("log density of the value:", x.log_prob(x.tensor))
x()
print("after a new draw:", x.tensor)
print("the torch distribution it wraps:", x.distribution)

# %%
# Arguments can be other random variables: their current value is used, so a
# hierarchy is written as nested variables.

scale = dist.LogNormal(0.0, 0.5)
y = dist.Normal(torch.zeros(3), scale)
print("scale", float(scale), "-> y", y.tensor)

# %%
# A module: priors and their approximations
# -----------------------------------------
# Assigning a random variable to a :class:`borch.Module` makes it the prior of that
# attribute. The module's posterior (here the default, :class:`borch.posterior.Automatic`)
# creates an approximating variable for it, whose arguments are the learnable
# parameters of the module. Reading the attribute gives a draw from the approximation.

model = borch.Module()
model.weight = dist.Normal(0.0, 1.0)
print("prior:", model.prior.weight.distribution)
print("approximation:", model.posterior.weight.distribution)
print("parameters:", [tuple(p.shape) for p in model.parameters()])
print("current value:", model.weight.item())

# %%
# A model is a module whose ``forward`` assigns its random variables. Observed values
# are given with ``observe``; ``borch.sample`` draws new values of every latent
# variable before a run, and :func:`borch.sites` is the record of what the run used.


class Line(borch.Module):
    def forward(self, x):
        self.slope = dist.Normal(0.0, 3.0)
        self.intercept = dist.Normal(0.0, 3.0)
        self.noise = dist.LogNormal(0.0, 1.0)
        self.y = dist.Normal(self.slope * x + self.intercept, self.noise)
        return self.y


x = torch.linspace(-2, 2, 50)
y = 1.5 * x - 0.5 + 0.3 * torch.randn(50)
line = Line(posterior=borch.posterior.Normal())
line.observe(y=y)
borch.sample(line)
line(x)
for site in borch.sites(line):
    print(f"{site.name:10s} observed={site.observed}")

# %%
# Fitting the approximations
# --------------------------
# The negative ELBO of a run is :func:`borch.infer.vi_loss` of the record; any torch
# optimiser minimises it.

optimizer = torch.optim.Adam(line.parameters(), lr=0.05)
for step in range(600):
    optimizer.zero_grad()
    borch.sample(line)
    line(x)
    loss = borch.infer.vi_loss(**borch.pq_to_infer(line))
    loss.backward()
    optimizer.step()
    if step % 200 == 0:
        print(f"step {step:3d}  negative ELBO {loss.item():8.2f}")

q = line.posterior
print(f"slope     {q.slope.loc.item():.2f} +- {q.slope.scale.item():.2f} (true 1.5)")
print(
    f"intercept {q.intercept.loc.item():.2f} +- {q.intercept.scale.item():.2f} (true -0.5)"
)

# %%
# Predictions
# -----------
# :func:`borch.infer.predictive` runs the model repeatedly with fresh draws from the
# approximations; the draws of the observed variable ``y`` are then posterior
# predictive samples, spread by both the noise and the uncertainty of the line.

draws = borch.infer.predictive(line, x, num_samples=500)
print("predictive draws of y:", tuple(draws["y"].shape))
print("predictive mean at x = -2, 0, 2:", draws["y"].mean(0)[[0, 24, 49]])
print("predictive sd, averaged over x:", draws["y"].std(0).mean().item())
print("posterior mean of the noise:", draws["noise"].mean().item())
