"""Converting a trained torch network
==================================

A network trained in plain torch becomes Bayesian with
:func:`borch.nn.borchify_network`: every layer with parameters is replaced by its
``borch.nn`` twin, whose weights are random variables with the default priors and a
Normal posterior whose means start at the trained weights. The copy predicts like the
original at first; a few epochs of variational inference then widen the posterior
where the data allow, and the predictions average over weight draws.

The data is scikit-learn's bundled 8x8 digits. Run
``python examples/borchify_trained.py`` (a few seconds).
"""

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

import borch
from borch import distributions as dist
from borch import metrics
from borch import nn as bnn

torch.manual_seed(0)
images, labels = load_digits(return_X_y=True)
images = torch.tensor(images / 16.0, dtype=torch.float32)
labels = torch.tensor(labels)
order = torch.randperm(len(labels))
train, test = order[:1200], order[1200:]
noise = torch.rand(500, 64)  # inputs unlike any digit

# %%
# Train a torch network
# ---------------------

net = torch.nn.Sequential(
    torch.nn.Linear(64, 64), torch.nn.Tanh(), torch.nn.Linear(64, 10)
)
optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
for _ in range(300):
    optimizer.zero_grad()
    F.cross_entropy(net(images[train]), labels[train]).backward()
    optimizer.step()
with torch.no_grad():
    print(
        "torch accuracy:",
        metrics.accuracy_logit(net(images[test]), labels[test]).item(),
    )

# %%
# Convert it
# ----------
# The Bayesian copy runs the same forward; each run draws new weights. A
# ``borch.Module`` around it adds the likelihood, the observed labels.


class Classifier(borch.Module):
    def __init__(self, network):
        super().__init__()
        self.network = network

    def forward(self, x):
        logits = self.network(x)
        self.label = dist.Categorical(logits=logits)
        return logits


model = Classifier(bnn.borchify_network(net))
print("random variables:", [name for name, _ in borch.named_random_variables(model)])


def predict(model, x, draws=50):
    """Class probabilities averaged over weight draws, shape (draws, N, 10)."""
    model.observe(None)
    with torch.no_grad():
        return torch.stack(
            [(borch.sample(model), model(x).softmax(-1))[1] for _ in range(draws)]
        )


def report(name, model):
    probabilities = predict(model, images[test])
    entropy_test = metrics.predictive_entropy(probabilities).mean()
    entropy_noise = metrics.predictive_entropy(predict(model, noise)).mean()
    accuracy = metrics.accuracy(probabilities.mean(0).argmax(-1), labels[test])
    print(
        f"{name}: accuracy {accuracy:.3f}, mean predictive entropy "
        f"{entropy_test:.3f} on test digits, {entropy_noise:.3f} on noise"
    )


report("converted, before VI", model)

# %%
# Variational inference from the trained weights
# ----------------------------------------------
# The loss is the negative ELBO of the training set.

optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
for _ in range(300):
    model.observe(label=labels[train])
    optimizer.zero_grad()
    borch.sample(model)
    model(images[train])
    loss = borch.infer.vi_loss(**borch.pq_to_infer(model))
    loss.backward()
    optimizer.step()
print(f"negative ELBO after VI: {loss.item():.1f}")
report("after VI", model)
