"""The prior precision by a validation set: the rules on given tables, and the
chosen value against the predictive's own log densities."""

import math

import pytest
import torch

import borch
from borch.infer import laplace_posterior
from borch.infer.laplace.validation import VALIDATION_GRID, choose
from tests.infer.laplace.test_laplace import fit_map
from tests.infer.laplace.test_structures import HEADS, Network, categorical, network


def test_best_takes_the_highest_total():
    scores = torch.tensor([[-3.0, -3.0], [-1.0, -2.0], [-0.5, -0.6], [-1.0, -1.0]])
    assert choose(scores, "best") == 2


def test_one_standard_error_takes_the_widest_prior_within_it():
    # row 2 is best; row 1 differs by (-0.1, 0.05, -0.1, 0.05): total -0.1 against
    # sqrt(4) * std = 0.173, within; row 0 differs by -0.5 everywhere (std 0), not
    points = torch.tensor([-1.0, -2.0, -1.0, -2.0])
    scores = torch.stack(
        [
            points - 0.5,
            points + torch.tensor([-0.1, 0.05, -0.1, 0.05]),
            points,
            points - 0.05,
        ]
    )
    assert choose(scores, "one_standard_error") == 1
    assert choose(scores, "best") == 2


def test_one_standard_error_is_paired():
    """Every point 0.01 worse (0.5 in total, no spread in the differences) is
    outside one standard error of the differences, though far inside the spread
    of the points' own log densities (sqrt(50) * 1.5)."""
    points = torch.linspace(-5.0, 0.0, 50)
    assert choose(torch.stack([points - 0.01, points]), "one_standard_error") == 1


def test_rows_that_are_not_finite_are_never_chosen():
    scores = torch.tensor([[-math.inf, -1.0], [math.nan, -1.0], [-1.0, -1.1]])
    assert choose(scores, "one_standard_error") == 2


def test_bad_tables_and_rules():
    with pytest.raises(ValueError, match="rule must be one of"):
        choose(torch.zeros(2, 2), "widest")
    with pytest.raises(ValueError, match="at least 2 validation points.*got 1"):
        choose(torch.zeros(3, 1), "one_standard_error")
    with pytest.raises(ValueError, match="not finite at any grid value"):
        choose(torch.full((2, 2), -math.inf), "best")


def log_densities(approx, x, targets, precision, link):
    """Per point, from the public predictive (the validation's generator seed)."""
    approx.prior_precision = precision
    predictive = approx.predictive(
        x, link=link, num_samples=100, generator=torch.Generator().manual_seed(0)
    )["y"]
    values = predictive.log_prob(targets).double()
    if link == "probit":
        return values
    return values.logsumexp(0) - math.log(100)


def check_rule(approx, x, targets, link):
    """The value the default rule chooses (returned) is within one standard error
    of the best grid value, the next wider one is not, and it is not narrower than
    the best."""
    validation = ((x,), {"y": targets})
    chosen = approx.optimize_prior_precision(
        "validation", validation=validation, link=link
    )[0]
    best = approx.optimize_prior_precision(
        "validation", validation=validation, rule="best", link=link
    )[0]
    assert chosen <= best
    at_best = log_densities(approx, x, targets, best, link)

    def shortfall(precision):
        difference = log_densities(approx, x, targets, precision, link) - at_best
        return -difference.sum() - difference.std() * math.sqrt(len(difference))

    assert shortfall(chosen) <= 1e-9
    index = int((chosen == VALIDATION_GRID).nonzero())
    if index > 0:
        assert shortfall(VALIDATION_GRID[index - 1]) > 0
    return chosen


def fitted_classifier(count=100, held_out=300):
    """A network fitted (roughly) by MAP to noisy labels, and held-out points:
    its validation log density peaks inside the grid."""
    torch.manual_seed(0)
    model = Network(categorical)
    model.apply(borch.set_posteriors(borch.posterior.PointMass))
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(count + held_out, 4, generator=generator)
    noise = 0.5 * torch.randn(count + held_out, 3, generator=generator)
    y = (x[:, :3] + noise).argmax(-1)
    model.observe(y=y[:count])
    return (
        model,
        fit_map(model, (x[:count],), steps=1, max_iter=20),
        x[count:],
        y[count:],
    )


@pytest.mark.parametrize("structure", ["full", "diag", "kfac", "lowrank"])
def test_the_chosen_precision_obeys_the_rule_for_every_structure(structure):
    model, closure, x, y = fitted_classifier()
    approx = laplace_posterior(model, closure, structure=structure, subset="last_layer")
    check_rule(approx, x, y, "probit")


@pytest.mark.parametrize("head_name", list(HEADS))
def test_the_chosen_precision_obeys_the_rule_for_every_likelihood(head_name):
    """By Monte Carlo, the default of prior_precision='validation'."""
    model, x, closure = network(head_name, count=12)
    approx = laplace_posterior(
        model,
        closure,
        structure="kfac",
        prior_precision="validation",
        validation=((x,), {"y": model.observed.y}),
    )
    default = approx.prior_precision[0]
    assert check_rule(approx, x, model.observed.y, "mc") == default


def test_bad_validation_arguments():
    model, x, closure = network("heteroscedastic normal")
    approx = laplace_posterior(model, closure, structure="kfac", prior_precision=1.0)
    validation = ((x,), {"y": model.observed.y})
    with pytest.raises(ValueError, match="probit.*Normal"):
        approx.optimize_prior_precision(
            "validation", validation=validation, link="probit"
        )
    with pytest.raises(ValueError, match="link must be 'mc' or 'probit', got 'x'"):
        approx.optimize_prior_precision("validation", validation=validation, link="x")
    with pytest.raises(ValueError, match="rule must be one of.*'median'"):
        approx.optimize_prior_precision(
            "validation", validation=validation, rule="median"
        )
