"""Two heads of one target fused into one prediction (DHO, Kang et al. 2025, arXiv 2505.07675; ../docs METHOD.md
section 13): the primary head ``z_ce`` learned the labels, an auxiliary head ``z_kd`` learned an adapted teacher's
distribution over the same classes, and the prediction is

    p = (1 - a) softmax(z_ce) + a softmax(z_kd / beta)

with ``a`` and ``beta`` chosen on the validation split after training. The module returns ``log p`` as its logits
(computed as a log-sum-exp of the two weighted log-softmaxes, so ``a`` = 0 or 1 stays finite): argmax, accuracy and
cross-entropy read it as they read any logits, and ``softmax(log p) = p``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sskt.models.base import TargetOutput


def fuse(z_ce: Tensor, z_kd: Tensor, a: float | Tensor, beta: float | Tensor) -> Tensor:
    """``log((1 - a) softmax(z_ce) + a softmax(z_kd / beta))`` [B, C] for logits [B, C]."""
    a = a.to(z_ce) if isinstance(a, Tensor) else z_ce.new_tensor(a)
    weights = torch.stack([torch.log1p(-a), torch.log(a)])  # log(1 - a), log(a): -inf at the ends, never NaN
    parts = torch.stack([F.log_softmax(z_ce, 1), F.log_softmax(z_kd / beta, 1)])
    return torch.logsumexp(parts + weights.view(2, 1, 1), 0)


class FusedHeads(nn.Module):
    """A target whose prediction fuses its primary head with its auxiliary head ``head``; ``a`` and ``beta`` are
    buffers, so they travel with the weights."""

    def __init__(self, target: nn.Module, head: str, a: float = 0.0, beta: float = 1.0) -> None:
        super().__init__()
        self.target, self.head = target, head
        self.register_buffer("a", torch.tensor(float(a)))
        self.register_buffer("beta", torch.tensor(float(beta)))

    def heads(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(z_ce, z_kd)`` [B, C] each, from one pass through the backbone."""
        stages, pooled = self.target.features(x)
        return self.target.fc(pooled), self.target.aux[self.target.aux_keys[self.head]](stages, pooled)

    def forward(self, x: Tensor, with_aux: bool = False) -> TargetOutput:
        z_ce, z_kd = self.heads(x)
        return TargetOutput(fuse(z_ce, z_kd, self.a, self.beta), {})

    def card_fields(self) -> dict:
        """What ``model.json`` needs to rebuild this module around a saved target (``sskt.trained``)."""
        return {"fusion": {"head": self.head, "a": float(self.a), "beta": float(self.beta)}}


def choose_fusion(
    z_ce: Tensor, z_kd: Tensor, labels: Tensor, alphas: list[float], betas: list[float]
) -> tuple[float, float, float]:
    """``(a, beta, accuracy %)`` with the best accuracy of the fused prediction on ``labels``; ties keep the
    smaller ``a`` (the label head alone wins a tie) and then the smaller ``beta``."""
    best = (-math.inf, 0.0, 1.0)
    for a in sorted(alphas):
        for beta in sorted(betas):
            acc = 100.0 * (fuse(z_ce, z_kd, a, beta).argmax(1) == labels).float().mean().item()
            if acc > best[0]:
                best = (acc, a, beta)
    return best[1], best[2], best[0]
