"""MAXL: the masked softmax, focal loss, entropy regulariser and the meta-gradient of the label generator."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from sskt.losses.maxl import PAPER_MASK_FLOOR, class_mask, focal_to_probs, label_entropy_penalty, masked_softmax
from sskt.methods.maxl import AUX_HEAD, meta_gradient
from sskt.models.base import TargetOutput

CLASSES, PSI = 3, 2


class TinyMultiTask(nn.Module):
    """conv -> BN -> ReLU -> pool, a primary head and a MAXL auxiliary head: the smallest net with BN statistics."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.fc = nn.Linear(4, CLASSES)
        self.aux = nn.Linear(4, CLASSES * PSI)

    def forward(self, x: Tensor) -> TargetOutput:
        h = self.body(x).flatten(1)
        return TargetOutput(self.fc(h), {AUX_HEAD: self.aux(h)})


def tiny_generator() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 2, 1), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 16, CLASSES * PSI)
    )


@pytest.fixture
def problem() -> tuple[nn.Module, nn.Module, Tensor, Tensor]:
    torch.manual_seed(0)
    net, gen = TinyMultiTask().double().train(), tiny_generator().double().train()
    images = torch.randn(6, 3, 4, 4, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    return net, gen, images, labels


def test_class_mask_layout() -> None:
    mask = class_mask(torch.tensor([2, 0]), num_classes=3, psi=2)
    assert mask.shape == (2, 6)
    assert mask.tolist() == [[0, 0, 0, 0, 1, 1], [1, 1, 0, 0, 0, 0]]
    paper = class_mask(torch.tensor([1]), num_classes=3, psi=2, floor=PAPER_MASK_FLOOR)
    assert paper[0].tolist() == pytest.approx([1e-8, 1e-8, 1.0, 1.0, 1e-8, 1e-8])


def test_masked_softmax_has_no_mass_outside_true_class_slots() -> None:
    torch.manual_seed(1)
    labels = torch.randint(0, 10, (64,))
    probs = masked_softmax(3 * torch.randn(64, 10 * 5), labels, psi=5)
    owned = class_mask(labels, 10, 5) == 1
    assert probs.sum(1).tolist() == pytest.approx([1.0] * 64)
    assert probs[~owned].max() < 1e-6
    assert probs[owned].min() > 0
    # the released code's 1e-8 floor also keeps the leak below 1e-6 for logits of moderate spread
    paper = masked_softmax(torch.randn(64, 10 * 5), labels, psi=5, floor=PAPER_MASK_FLOOR)
    assert paper[~owned].max() < 1e-6
    assert (paper * owned).sum(1).tolist() == pytest.approx([1.0] * 64, abs=1e-6)


def test_masked_softmax_rejects_width_not_multiple_of_psi() -> None:
    with pytest.raises(ValueError, match="psi=4"):
        masked_softmax(torch.zeros(2, 10), torch.zeros(2, dtype=torch.long), psi=4)


def test_focal_golden_values() -> None:
    # q = (1/2, 1/2), true class 0: -(1 - 1/2)^2 * ln(1/2) = ln(2) / 4.
    assert focal_to_probs(torch.zeros(1, 2), torch.tensor([0])).item() == pytest.approx(math.log(2) / 4)
    # soft target p = (1/4, 3/4), q = softmax(0, ln 3) = (1/4, 3/4):
    # -(1/4 (3/4)^2 ln(1/4) + 3/4 (1/4)^2 ln(3/4)) = (9/64) ln 4 + (3/64) ln(4/3)
    logits = torch.tensor([[0.0, math.log(3)]])
    expected = 9 / 64 * math.log(4) + 3 / 64 * math.log(4 / 3)
    assert focal_to_probs(logits, torch.tensor([[0.25, 0.75]])).item() == pytest.approx(expected, rel=1e-6)
    # gamma 0 is cross-entropy
    z, y = torch.randn(5, 4), torch.randint(0, 4, (5,))
    assert focal_to_probs(z, y, gamma=0.0).item() == pytest.approx(nn.functional.cross_entropy(z, y).item(), rel=1e-6)


def test_entropy_penalty_is_lowest_for_spread_labels() -> None:
    uniform = torch.full((4, 8), 1 / 8)
    collapsed = torch.zeros(4, 8)
    collapsed[:, 3] = 1
    assert label_entropy_penalty(uniform).item() == pytest.approx(-math.log(8))
    assert label_entropy_penalty(collapsed).item() == pytest.approx(0.0, abs=1e-12)


def _meta_objective(net: nn.Module, gen: nn.Module, images: Tensor, labels: Tensor) -> float:
    # Same objective as meta_gradient's, evaluated at the generator's current parameters (loss only).
    _, loss = meta_gradient(net, gen, images, labels, PSI, inner_lr=0.5, entropy_weight=0.2)
    return loss.item()


def test_second_order_meta_gradient_matches_finite_differences(problem) -> None:
    net, gen, images, labels = problem
    grads, _ = meta_gradient(net, gen, images, labels, PSI, inner_lr=0.5, entropy_weight=0.2, second_order=True)
    h = 1e-6
    for p, g in zip(gen.parameters(), grads, strict=True):
        numeric = torch.zeros_like(p)
        for i in range(p.numel()):
            with torch.no_grad():
                p.view(-1)[i] += h
            up = _meta_objective(net, gen, images, labels)
            with torch.no_grad():
                p.view(-1)[i] -= 2 * h
            down = _meta_objective(net, gen, images, labels)
            with torch.no_grad():
                p.view(-1)[i] += h
            numeric.view(-1)[i] = (up - down) / (2 * h)
        torch.testing.assert_close(g, numeric, rtol=1e-5, atol=1e-8)
    assert any(g.abs().max() > 1e-6 for g in grads)


def test_first_order_estimate_approximates_second_order(problem) -> None:
    net, gen, images, labels = problem
    exact, loss_exact = meta_gradient(net, gen, images, labels, PSI, 0.5, 0.2, second_order=True)
    approx, loss_approx = meta_gradient(net, gen, images, labels, PSI, 0.5, 0.2, second_order=False)
    assert loss_exact.item() == pytest.approx(loss_approx.item())
    for a, e in zip(approx, exact, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-3, atol=1e-7)


@pytest.mark.parametrize("second_order", [True, False])
def test_meta_step_moves_generator_only(problem, second_order: bool) -> None:
    net, gen, images, labels = problem
    net_state = {k: v.clone() for k, v in net.state_dict().items()}
    gen_before = [p.detach().clone() for p in gen.parameters()]
    grads, _ = meta_gradient(net, gen, images, labels, PSI, 0.5, 0.2, second_order=second_order)
    opt = torch.optim.SGD(gen.parameters(), lr=0.1)
    for p, g in zip(gen.parameters(), grads, strict=True):
        p.grad = g
    opt.step()
    for key, value in net.state_dict().items():  # weights and BN running statistics, num_batches_tracked too
        assert torch.equal(value, net_state[key]), key
    assert all(p.grad is None for p in net.parameters())
    assert any(not torch.equal(p, b) for p, b in zip(gen.parameters(), gen_before, strict=True))
