"""Golden values for the losses, worked out by hand from the formulas on 2x3 logits."""

from __future__ import annotations

import math

import pytest
import torch

from sskt.errors import UserError
from sskt.losses import (
    AUX_LOSSES,
    PRIMARY_LOSSES,
    aux_loss,
    bce,
    cross_entropy,
    focal,
    focal_soft,
    kd,
    kd_legacy,
    primary_loss,
    soft_ce,
)

A = [[1.0, 2.0, 0.0], [0.5, -1.0, 2.0]]  # head logits, 2 samples x 3 classes
S = [[2.0, 0.0, 1.0], [0.0, 0.0, 3.0]]  # source logits


def softmax(row: list[float], T: float = 1.0) -> list[float]:
    e = [math.exp(v / T) for v in row]
    return [v / sum(e) for v in e]


def t(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


@pytest.mark.parametrize("T", [1.0, 3.0])
def test_soft_ce_golden(T: float) -> None:
    per_row = []
    for a, s in zip(A, S, strict=True):
        p, q = softmax(s, T), softmax(a, T)
        per_row.append(-sum(pc * math.log(qc) for pc, qc in zip(p, q, strict=True)))
    expected = T * T * sum(per_row) / 2
    assert soft_ce(t(A), t(S), T).item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("T", [1.0, 4.0])
def test_kd_and_legacy_golden(T: float) -> None:
    kl_rows = []
    for a, s in zip(A, S, strict=True):
        p, q = softmax(s, T), softmax(a, T)
        kl_rows.append(sum(pc * (math.log(pc) - math.log(qc)) for pc, qc in zip(p, q, strict=True)))
    assert kd(t(A), t(S), T).item() == pytest.approx(T * T * sum(kl_rows) / 2, rel=1e-12)
    # Released code: elementwise mean over B * C = 6 entries.
    assert kd_legacy(t(A), t(S), T).item() == pytest.approx(T * T * sum(kl_rows) / 6, rel=1e-12)


def test_kd_legacy_is_kd_over_classes() -> None:
    g = torch.Generator().manual_seed(0)
    a, s = torch.randn(5, 365, generator=g), torch.randn(5, 365, generator=g)
    assert kd_legacy(a, s, 1.0).item() == pytest.approx(kd(a, s, 1.0).item() / 365, rel=1e-5)


@pytest.mark.parametrize("T", [1.0, 3.0])
def test_kd_and_ce_have_the_same_gradient(T: float) -> None:
    g = torch.Generator().manual_seed(1)
    s = torch.randn(4, 10, generator=g)
    a1 = torch.randn(4, 10, generator=g, requires_grad=True)
    a2 = a1.detach().clone().requires_grad_(True)
    soft_ce(a1, s, T).backward()
    kd(a2, s, T).backward()
    torch.testing.assert_close(a1.grad, a2.grad)
    # They differ by T^2 times the mean source entropy, a constant.
    p = torch.softmax(s / T, 1)
    entropy = -(p * p.log()).sum(1).mean() * T * T
    assert (soft_ce(a1, s, T) - kd(a1, s, T)).item() == pytest.approx(entropy.item(), rel=1e-5)


def test_focal_soft_golden() -> None:
    rows = []
    for a, s in zip(A, S, strict=True):
        p, q = softmax(s), softmax(a)
        rows.append(-sum(pc * (1 - qc) ** 2 * math.log(qc) for pc, qc in zip(p, q, strict=True)))
    assert focal_soft(t(A), t(S)).item() == pytest.approx(sum(rows) / 2, rel=1e-12)
    # gamma = 0 is the soft cross-entropy.
    assert focal_soft(t(A), t(S), gamma=0.0).item() == pytest.approx(soft_ce(t(A), t(S)).item(), rel=1e-12)


def test_primary_losses_golden() -> None:
    y = torch.tensor([1, 2])
    p_true = [softmax(A[0])[1], softmax(A[1])[2]]
    assert cross_entropy(t(A), y).item() == pytest.approx(-sum(math.log(p) for p in p_true) / 2, rel=1e-12)
    expected_focal = -sum((1 - p) ** 2 * math.log(p) for p in p_true) / 2
    assert focal(t(A), y).item() == pytest.approx(expected_focal, rel=1e-12)
    assert focal(t(A), y, gamma=0.0).item() == pytest.approx(cross_entropy(t(A), y).item(), rel=1e-12)


def test_bce_golden() -> None:
    targets = [[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]]
    terms = []
    for zr, yr in zip(A, targets, strict=True):
        for z, y in zip(zr, yr, strict=True):
            sig = 1 / (1 + math.exp(-z))
            terms.append(-(y * math.log(sig) + (1 - y) * math.log(1 - sig)))
    assert bce(t(A), t(targets)).item() == pytest.approx(sum(terms) / 6, rel=1e-12)


def test_name_tables() -> None:
    assert set(AUX_LOSSES) == {"ce", "kd", "kd_legacy", "focal"}
    assert set(PRIMARY_LOSSES) == {"ce", "focal", "bce"}
    assert aux_loss("kd") is kd and primary_loss("bce") is bce
    # Every aux loss takes the temperature as its third positional argument.
    for fn in AUX_LOSSES.values():
        assert torch.isfinite(fn(t(A), t(S), 2.0))


def test_unknown_loss_names_are_user_errors() -> None:
    with pytest.raises(UserError, match="'mse'.*valid choices: ce, focal, kd, kd_legacy"):
        aux_loss("mse")
    with pytest.raises(UserError, match="'hinge'.*valid choices: bce, ce, focal"):
        primary_loss("hinge")
