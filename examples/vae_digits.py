"""A variational autoencoder with plates
=====================================

An amortised variational autoencoder on handwritten digits, in borch, in plain torch
and in Pyro.

The encoder (64 -> 128 -> 2 x latent, tanh) maps an image to the loc and log-scale
of a Normal over its latent code ``z``; the decoder (latent -> 128 -> 64, tanh) maps
``z`` to one logit per pixel. In borch the per-image latent and the observation are
assigned inside ``borch.plate("data", N, subsample=index)``: the latent as
``borch.RVPair(Normal(0, 1), Normal(loc, scale))`` with the approximation computed
from the batch by the encoder (amortised inference), so the plate scales both the
likelihood and the divergence of the batch by ``N / B`` and the loss is an unbiased
estimate of the whole training set's negative ELBO. The networks are plain
``torch.nn`` layers inside a ``borch.Module``: their weights are ordinary
parameters, learned by maximum likelihood (of the ELBO) as in any VAE.

Likelihood. scikit-learn's digits are 32x32 binary bitmaps of which each 8x8 pixel
counts the "on" bits of a 4x4 block, an integer in 0..16. A Binomial(16, logits) on
these counts is therefore the exact likelihood of a Bernoulli VAE on the underlying
bitmaps with one probability per block, and it is a normalised discrete distribution,
so the ELBO is a bound on log p(x) in nats, comparable with the literature. (A
Bernoulli on intensity / 16 is not a distribution for fractional targets, and borch
rejects it as outside the support; a ContinuousBernoulli on the [0, 1] intensities is
a density whose normaliser is ill-conditioned near 0.5.) Images are shown as
intensities, ``count / 16``.

The same model is written three times, with the same initial weights, data split,
seeds, optimiser (Adam), epochs and batch size:

* ``borch``: the plate, ``RVPair`` and ``vi_loss`` (its default ``elbo_loss``
  estimator: ``log q(z) - log p(z)`` at the reparameterised draw);
* ``torch``: by hand with ``torch.distributions`` and the same estimator;
* ``pyro``: ``pyro.plate(..., subsample=index)``, ``Trace_ELBO`` (the same
  estimator), when Pyro is installed (skipped with a message otherwise).

All three draw the latent noise from torch's generator in the same order, so from
the same seed they follow the same trajectory: their test ELBOs agree to float
rounding (borch - torch is 0.0 nats to the printed precision with the defaults), far inside the training
noise between seeds, which is what a borch VAE written independently would have to
match.

Each trained VAE is scored by one shared function: the test ELBO per image, the mean
over the test images of the ELBO averaged over ``--draws`` draws of ``z`` per image,
with two standard errors: ``s.e. test`` (the spread over test images / sqrt(n), how
well 450 images pin the expected ELBO down) and ``s.e. seed`` (over ``--seeds``
training seeds, the training noise: what "the same within noise" is checked
against). The importance-weighted bound on log p(x) from the same draws is printed
too. ``results/vae_reconstructions.png`` shows test digits and their reconstructions
by each VAE; ``results/vae_latent_grid.png`` decodes a grid over the 2-d latent space
(the first two dimensions if ``--latent`` is larger) at the Normal quantiles.

With the defaults (50 epochs of batches of 128, three seeds, latent 2, 64 draws):
test ELBO -175.0 nats per image for each of the three (s.e. test 2.3, s.e. seed 1.3;
importance-weighted bound -171.5), from -544 at initialisation.

Run ``python examples/vae_digits.py`` (about 20 s on two slow cores, Pyro being half
of it); ``--quick`` for a short run, ``--help`` for the options.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import pathlib
import statistics
import time

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.distributions import Binomial, Normal

import borch
from borch import distributions as dist
from borch.infer import vi_loss

PIXELS = 64
HIDDEN = 128
COUNT = 16  # each pixel counts the "on" bits of a 4x4 block
RESULTS = pathlib.Path("results")  # beside the other examples' figures


# ------------------------------------------------------------------------ data
def load_data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The digits' pixel counts (0..16, float) split 75/25, stratified by label."""
    digits = load_digits()
    counts = torch.tensor(digits.data, dtype=torch.float32)
    train, test = train_test_split(
        counts, test_size=0.25, random_state=seed, stratify=digits.target
    )
    return train, test


def batches(size: int, batch: int, generator: torch.Generator):
    """The index batches of one epoch: a permutation cut into ``batch``-sized pieces
    (the last one smaller)."""
    return torch.randperm(size, generator=generator).split(batch)


# -------------------------------------------------------------------- networks
def make_networks(latent: int, seed: int) -> tuple[nn.Module, nn.Module]:
    """Encoder (image -> loc and log-scale of z) and decoder (z -> pixel logits)."""
    torch.manual_seed(seed)
    encoder = nn.Sequential(
        nn.Linear(PIXELS, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, 2 * latent)
    )
    decoder = nn.Sequential(
        nn.Linear(latent, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, PIXELS)
    )
    return encoder, decoder


def copies(encoder: nn.Module, decoder: nn.Module) -> tuple[nn.Module, nn.Module]:
    """Independent copies with the same weights (every variant starts alike)."""
    new_encoder, new_decoder = make_networks(encoder[-1].out_features // 2, 0)
    new_encoder.load_state_dict(encoder.state_dict())
    new_decoder.load_state_dict(decoder.state_dict())
    return new_encoder, new_decoder


def encode(encoder: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """loc and scale of q(z | x); the encoder sees intensities in [0, 1]."""
    loc, log_scale = encoder(x / COUNT).chunk(2, dim=-1)
    return loc, log_scale.exp()


# ----------------------------------------------------------------- the models
class VAE(borch.Module):
    """The borch VAE: per-image latents and observations inside one plate."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, size: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.size = size

    def forward(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        loc, scale = encode(self.encoder, x)
        with borch.plate("data", self.size, subsample=index, dim=-2):
            self.z = borch.RVPair(
                dist.Normal(0.0, 1.0),
                dist.Normal(loc, scale),
            )
            logits = self.decoder(self.z)
            self.x = dist.Binomial(COUNT, logits=logits)
        return logits


def borch_loss(model: VAE, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The negative ELBO estimate of one batch: new draws, forward, ``vi_loss``."""
    borch.sample(model)
    model.observe(x=x)
    model(x, index)
    return vi_loss(**borch.pq_to_infer(model))


def torch_loss(
    encoder: nn.Module, decoder: nn.Module, x: torch.Tensor, size: int
) -> torch.Tensor:
    """The same estimate by hand: ``N / B`` times the batch's negative log
    likelihood plus ``log q(z) - log p(z)`` at the reparameterised draw."""
    loc, scale = encode(encoder, x)
    q = Normal(loc, scale)
    z = q.rsample()
    log_likelihood = Binomial(COUNT, logits=decoder(z)).log_prob(x).sum()
    divergence = (q.log_prob(z) - Normal(0.0, 1.0).log_prob(z)).sum()
    return size / len(x) * (divergence - log_likelihood)


def pyro_svi(encoder: nn.Module, decoder: nn.Module, size: int, lr: float):
    """Pyro's model, guide and SVI with ``Trace_ELBO`` (the same estimator)."""
    import pyro
    import pyro.distributions as pdist
    from pyro.infer import SVI, Trace_ELBO

    pyro.clear_param_store()
    latent = encoder[-1].out_features // 2

    def model(x, index):
        pyro.module("decoder", decoder)
        with pyro.plate("data", size, subsample=index):
            prior = pdist.Normal(x.new_zeros(()), 1.0).expand([len(x), latent])
            z = pyro.sample("z", prior.to_event(1))
            likelihood = pdist.Binomial(COUNT, logits=decoder(z))
            pyro.sample("x", likelihood.to_event(1), obs=x)

    def guide(x, index):
        pyro.module("encoder", encoder)
        with pyro.plate("data", size, subsample=index):
            loc, scale = encode(encoder, x)
            pyro.sample("z", pdist.Normal(loc, scale).to_event(1))

    return SVI(model, guide, pyro.optim.Adam({"lr": lr}), Trace_ELBO())


# -------------------------------------------------------------------- training
def train(
    variant: str,
    networks: tuple[nn.Module, nn.Module],
    x_train: torch.Tensor,
    epochs: int,
    batch: int,
    lr: float,
    seed: int,
) -> tuple[nn.Module, nn.Module, float]:
    """Trains a copy of ``networks`` with ``variant``; returns the trained encoder,
    decoder and the seconds per step. The draws and the batch order come from the
    same seed for every variant."""
    encoder, decoder = copies(*networks)
    size = len(x_train)
    order = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    if variant == "borch":
        model = VAE(encoder, decoder, size)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)

        def step(index):
            loss = borch_loss(model, x_train[index], index)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()

    elif variant == "torch":
        parameters = [*encoder.parameters(), *decoder.parameters()]
        optimizer = torch.optim.Adam(parameters, lr=lr)

        def step(index):
            loss = torch_loss(encoder, decoder, x_train[index], size)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()

    elif variant == "pyro":
        svi = pyro_svi(encoder, decoder, size, lr)

        def step(index):
            svi.step(x_train[index], index)

    else:
        raise ValueError(f"unknown variant {variant!r}")
    steps, start = 0, time.perf_counter()
    for _ in range(epochs):
        for index in batches(size, batch, order):
            step(index)
            steps += 1
    return encoder, decoder, (time.perf_counter() - start) / max(steps, 1)


# ------------------------------------------------------------------ evaluation
@torch.no_grad()
def elbo_per_image(
    encoder: nn.Module,
    decoder: nn.Module,
    x: torch.Tensor,
    draws: int,
    seed: int = 1234,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: the ELBO averaged over ``draws`` draws of z from q(z | x), and the
    importance-weighted bound ``log mean_k p(x, z_k) / q(z_k | x)`` from the same
    draws. One function for every variant, with its own fixed seed."""
    generator = torch.Generator().manual_seed(seed)
    loc, scale = encode(encoder, x)
    noise = torch.randn((draws, *loc.shape), generator=generator)
    z = loc + scale * noise
    log_likelihood = Binomial(COUNT, logits=decoder(z)).log_prob(x).sum(-1)
    log_weight = (
        log_likelihood
        + Normal(0.0, 1.0).log_prob(z).sum(-1)
        - Normal(loc, scale).log_prob(z).sum(-1)
    )
    return log_weight.mean(0), log_weight.logsumexp(0) - math.log(draws)


@torch.no_grad()
def borch_test_elbo(
    encoder: nn.Module, decoder: nn.Module, x: torch.Tensor, draws: int
) -> float:
    """The same test ELBO per image from borch itself: ``-vi_loss`` of the whole
    test set (one plate over all of it, so no scaling), averaged over ``draws``
    runs."""
    model = VAE(encoder, decoder, len(x))
    index = torch.arange(len(x))
    total = sum(float(borch_loss(model, x, index)) for _ in range(draws))
    return -total / draws / len(x)


# ----------------------------------------------------------------------- plots
def plot_reconstructions(x, reconstructions: dict, path: pathlib.Path) -> None:
    """Test digits (top row) and each VAE's reconstruction (decoder mean at the
    encoder's loc) as intensities."""
    rows = {"data": x / COUNT, **reconstructions}
    figure, axes = plt.subplots(
        len(rows), len(x), figsize=(0.8 * len(x), 0.9 * len(rows)), squeeze=False
    )
    for row, (name, images) in zip(axes, rows.items()):
        for axis, image in zip(row, images):
            axis.imshow(image.reshape(8, 8).numpy(), cmap="gray_r", vmin=0, vmax=1)
            axis.set_xticks([])
            axis.set_yticks([])
        row[0].set_ylabel(name, rotation=0, ha="right", va="center")
    figure.suptitle("test digits and their reconstructions")
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)


def plot_latent_grid(decoder: nn.Module, latent: int, path: pathlib.Path) -> None:
    """Decoded means over a 15x15 grid of the first two latent dimensions at the
    Normal quantiles 0.03 .. 0.97 (other dimensions at 0)."""
    side = 15
    quantiles = Normal(0.0, 1.0).icdf(torch.linspace(0.03, 0.97, side))
    grid = torch.zeros(side, side, latent)
    grid[..., 0] = quantiles.view(1, -1)
    grid[..., 1] = quantiles.flip(0).view(-1, 1)
    with torch.no_grad():
        images = torch.sigmoid(decoder(grid)).reshape(side, side, 8, 8)
    # a light grey line between the cells: the digits' own edges are blank
    images = torch.nn.functional.pad(images, (0, 1, 0, 1), value=0.2)
    canvas = images.permute(0, 2, 1, 3).reshape(side * 9, side * 9)[:-1, :-1]
    figure, axis = plt.subplots(figsize=(6, 6))
    extent = (0, side, 0, side)
    axis.imshow(canvas.numpy(), cmap="gray_r", vmin=0, vmax=1, extent=extent)
    ticks = np.arange(side) + 0.5
    labels = [f"{value:.1f}" for value in quantiles.tolist()]
    axis.set_xticks(ticks[::2], labels[::2])
    axis.set_yticks(ticks[::2], labels[::2])  # the bottom row has the lowest z[1]
    axis.set_xlabel("z[0]")
    axis.set_ylabel("z[1]")
    axis.set_title("borch VAE: decoded latent grid")
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)


# ------------------------------------------------------------------------ main
def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0, help="first training seed")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--latent", type=int, default=2)
    parser.add_argument("--draws", type=int, default=64, help="z draws per image")
    parser.add_argument(
        "--variants", nargs="*", default=["borch", "torch", "pyro"], help="to train"
    )
    parser.add_argument("--results", type=pathlib.Path, default=RESULTS)
    parser.add_argument("--quick", action="store_true", help="a short run")
    options = parser.parse_args(argv)
    if options.quick:
        options.epochs, options.seeds = min(options.epochs, 15), min(options.seeds, 2)
    if "pyro" in options.variants and importlib.util.find_spec("pyro") is None:
        print("skipping pyro: not installed (pip install pyro-ppl)")
        options.variants = [v for v in options.variants if v != "pyro"]
    return options


def summarise(per_seed: list[torch.Tensor]) -> dict:
    """Mean test ELBO per image over the seeds, its test-set and seed s.e."""
    means = [float(values.mean()) for values in per_seed]
    test_se = statistics.mean(
        float(values.std() / math.sqrt(len(values))) for values in per_seed
    )
    seed_se = (
        statistics.stdev(means) / math.sqrt(len(means)) if len(means) > 1 else math.nan
    )
    return {"mean": statistics.mean(means), "se_test": test_se, "se_seed": seed_se}


def main(argv: list[str] | None = None) -> dict:
    options = parse(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small networks: one thread is fastest
    try:
        return run(options)
    finally:
        torch.set_num_threads(threads)


def run(options: argparse.Namespace) -> dict:
    x_train, x_test = load_data()
    print(
        f"digits: {len(x_train)} train / {len(x_test)} test images, latent "
        f"{options.latent}, {options.epochs} epochs of batches of {options.batch}, "
        f"{options.seeds} seed(s), {options.draws} draws per test image"
    )
    elbos = {variant: [] for variant in options.variants}
    bounds = {variant: [] for variant in options.variants}
    seconds = {variant: [] for variant in options.variants}
    initial, trained = [], {}
    for seed in range(options.seed, options.seed + options.seeds):
        networks = make_networks(options.latent, seed)
        initial.append(elbo_per_image(*networks, x_test, options.draws)[0])
        for variant in options.variants:
            encoder, decoder, per_step = train(
                variant,
                networks,
                x_train,
                options.epochs,
                options.batch,
                options.lr,
                seed,
            )
            elbo, bound = elbo_per_image(encoder, decoder, x_test, options.draws)
            elbos[variant].append(elbo)
            bounds[variant].append(bound)
            seconds[variant].append(per_step)
            if seed == options.seed:
                trained[variant] = (encoder, decoder)
    rows = {variant: summarise(values) for variant, values in elbos.items()}
    for variant, row in rows.items():
        row["log_px_bound"] = statistics.mean(float(b.mean()) for b in bounds[variant])
        row["ms_per_step"] = 1e3 * statistics.median(seconds[variant])
    start = summarise(initial)["mean"]
    print(f"\ntest ELBO per image (nats) at initialisation: {start:.2f}")
    print(
        f"{'variant':8s} {'ELBO':>9s} {'s.e. test':>10s} {'s.e. seed':>10s} "
        f"{'IW bound':>9s} {'ms/step':>8s}"
    )
    for variant, row in rows.items():
        print(
            f"{variant:8s} {row['mean']:9.2f} {row['se_test']:10.2f} "
            f"{row['se_seed']:10.2f} {row['log_px_bound']:9.2f} "
            f"{row['ms_per_step']:8.2f}"
        )
    if "torch" in rows:
        for variant in (name for name in rows if name != "torch"):
            difference = rows[variant]["mean"] - rows["torch"]["mean"]
            noise = math.hypot(rows[variant]["se_seed"], rows["torch"]["se_seed"])
            print(
                f"{variant} - torch = {difference:+.1e} nats "
                f"({difference / noise:+.1e} seed standard errors)"
            )
    if "borch" in trained:
        own = borch_test_elbo(*trained["borch"], x_test, options.draws)
        print(
            f"borch's own -vi_loss on the test set (seed {options.seed}): {own:.2f} "
            f"(the shared estimator: {float(elbos['borch'][0].mean()):.2f})"
        )
    options.results.mkdir(parents=True, exist_ok=True)
    shown = x_test[:12]
    with torch.no_grad():
        reconstructions = {
            variant: torch.sigmoid(decoder(encode(encoder, shown)[0]))
            for variant, (encoder, decoder) in trained.items()
        }
    plot_reconstructions(
        shown, reconstructions, options.results / "vae_reconstructions.png"
    )
    first = trained.get("borch") or next(iter(trained.values()))
    plot_latent_grid(first[1], options.latent, options.results / "vae_latent_grid.png")
    print(f"plots written to {options.results}/vae_*.png")
    return {"initial": start, "rows": rows, "elbos": elbos}


if __name__ == "__main__":
    main()
