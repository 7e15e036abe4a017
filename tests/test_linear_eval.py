"""The L-BFGS linear probe reaches the optimum of its objective: a toy whose optimum solves a one-line equation, the
first-order condition on random data, and the validation choice of the L2 strength."""

from __future__ import annotations

import math

import pytest
import torch

from sskt.sources.linear_eval import choose_l2, fit_logistic, objective


def _root(l2: float) -> float:
    """The u > 0 with sigmoid(-2u) = l2 u (bisection): the optimum of the separable toy below."""
    lo, hi = 0.0, 1.0 / l2
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if 1 / (1 + math.exp(2 * mid)) > l2 * mid else (lo, mid)
    return (lo + hi) / 2


@pytest.mark.parametrize("l2", [0.01, 0.1, 1.0])
def test_a_separable_toy_reaches_its_closed_form_optimum(l2: float) -> None:
    # x = +1 is class 1, x = -1 class 0. By symmetry b = 0 and W = [-u, u], so J = log(1 + e^{-2u}) + l2 u^2,
    # minimal where sigmoid(-2u) = l2 u. Without the penalty the data are separable and no optimum exists.
    features, labels = torch.tensor([[1.0], [-1.0]]), torch.tensor([1, 0])
    weight, bias = fit_logistic(features, labels, 2, l2)
    u = _root(l2)
    assert weight[:, 0].tolist() == pytest.approx([-u, u], abs=1e-5)
    assert bias.abs().max().item() < 1e-5


def test_the_gradient_vanishes_at_the_fit_on_random_data() -> None:
    gen = torch.Generator().manual_seed(0)
    features, labels = torch.randn(200, 16, generator=gen), torch.randint(0, 4, (200,), generator=gen)
    weight, bias = fit_logistic(features, labels, 4, l2=1e-3)
    w, b = weight.double().requires_grad_(), bias.double().requires_grad_()
    objective(w, b, features.double(), labels, 1e-3).backward()
    assert max(w.grad.abs().max().item(), b.grad.abs().max().item()) < 1e-5


def test_validation_chooses_the_l2_strength() -> None:
    # Two informative dimensions and 50 of noise, 20 training rows: a weak penalty fits the noise.
    gen = torch.Generator().manual_seed(1)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, 2, (n,), generator=gen)
        x = torch.randn(n, 52, generator=gen)
        x[:, :2] += 1.5 * (2 * y[:, None] - 1)
        return x, y

    fit = choose_l2(draw(20), draw(2000), 2, grid=(1e-6, 1e-1))
    assert set(fit.val_acc) == {1e-6, 1e-1}
    assert fit.l2 == max(fit.val_acc, key=fit.val_acc.get)
    assert fit.val_acc[1e-1] > 85.0, fit.val_acc
