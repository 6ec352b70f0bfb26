"""The amortised VAE example: borch's plate loss is the hand-written one, training
with it matches the hand-written VAE, and the example runs and writes its plots."""

import contextlib
import importlib.util
import io
import math
import pathlib
import runpy

import pytest
import torch

import borch

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def example():
    return runpy.run_path(str(ROOT / "examples" / "vae_digits.py"), run_name="ex")


@pytest.fixture(scope="module")
def data(example):
    return example["load_data"]()


def test_parameters_are_the_networks(example, data):
    """The torch layers inside the borch.Module are its parameters, and the
    per-run approximations computed by the encoder add none."""
    x_train, _ = data
    encoder, decoder = example["make_networks"](2, 0)
    model = example["VAE"](encoder, decoder, len(x_train))
    index = torch.arange(8)
    example["borch_loss"](model, x_train[index], index)
    expected = {*encoder.parameters(), *decoder.parameters()}
    assert set(model.parameters()) == expected
    assert len(list(model.parameters())) == len(expected)


def test_plate_loss_is_the_hand_written_formula(example, data):
    """For one fixed draw, borch's vi_loss inside the plate is exactly ``N / B``
    times the batch's ``log q(z) - log p(z) - log p(x | z)`` (in float64, where
    only the order of the sums can differ)."""
    x_train = data[0].double()
    encoder, decoder = (net.double() for net in example["make_networks"](2, 0))
    size = len(x_train)
    model = example["VAE"](encoder, decoder, size)
    index = torch.tensor([3, 14, 15, 92, 65, 35, 89, 79, 323, 846])
    x = x_train[index]
    loss = example["borch_loss"](model, x, index)
    z = model.z  # the draw that loss used
    site = next(site for site in borch.sites(model) if site.name == "z")
    assert site.scale == size / len(index)
    loc, scale = example["encode"](encoder, x)
    logits = decoder(z)
    log_likelihood = torch.distributions.Binomial(16, logits=logits).log_prob(x)
    q = torch.distributions.Normal(loc, scale)
    divergence = q.log_prob(z) - torch.distributions.Normal(0.0, 1.0).log_prob(z)
    by_hand = size / len(index) * (divergence.sum() - log_likelihood.sum())
    torch.testing.assert_close(loss, by_hand, rtol=1e-12, atol=0)
    # and the gradients with respect to the networks' weights agree
    loss.backward(retain_graph=True)  # by_hand shares the encoder's graph
    borch_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    by_hand.backward()
    for got, want in zip(borch_grads, (p.grad for p in model.parameters())):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_training_follows_the_hand_written_vae(example, data):
    """With the same seed, borch draws the same noise in the same order as the
    hand-written step, so two epochs of training end at the same weights (up to
    float rounding)."""
    x_train, _ = data
    networks = example["make_networks"](2, 1)
    trained = {
        variant: example["train"](variant, networks, x_train, 2, 128, 3e-3, 1)
        for variant in ("borch", "torch")
    }
    for mine, theirs in zip(trained["borch"][:2], trained["torch"][:2]):
        for got, want in zip(mine.parameters(), theirs.parameters()):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def run(example, tmp_path_factory):
    folder = tmp_path_factory.mktemp("results")
    printed = io.StringIO()
    variants = ["borch", "torch"]
    if importlib.util.find_spec("pyro") is not None:
        variants.append("pyro")
    with contextlib.redirect_stdout(printed):
        summary = example["main"](
            ["--quick", "--draws=16", f"--results={folder}", "--variants", *variants]
        )
    return summary, printed.getvalue(), folder


def test_same_test_elbo_as_the_hand_written_vae(run):
    """Within three standard errors of the difference, from the seed standard
    errors (the training noise) as printed. Both VAEs are scored on the same test
    images with the same draws, so the test-set s.e. does not enter a difference."""
    summary, text, _ = run
    rows = summary["rows"]
    assert "test ELBO per image" in text
    for variant in (name for name in rows if name != "torch"):
        noise = math.hypot(rows[variant]["se_seed"], rows["torch"]["se_seed"])
        assert abs(rows[variant]["mean"] - rows["torch"]["mean"]) < 3 * noise


def test_training_improves_the_elbo(run):
    summary, *_ = run
    for row in summary["rows"].values():
        assert row["mean"] > summary["initial"] + 10 * row["se_test"]
        assert row["log_px_bound"] >= row["mean"]  # the IW bound is tighter


def test_plots_are_written(run):
    *_, folder = run
    for name in ("vae_reconstructions.png", "vae_latent_grid.png"):
        path = folder / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size > 10_000
