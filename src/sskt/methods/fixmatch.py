"""FixMatch (Sohn et al., "FixMatch: Simplifying Semi-Supervised Learning with Consistency and Confidence",
NeurIPS 2020): a confident prediction on the weak view of an unlabelled image becomes the hard label of its strong
view (RandAugment + Cutout, sskt.data.randaugment).

    q = softmax(f(weak)) (no gradient),  q_hat = argmax q
    L_u = lambda_u * mean_u( 1[max q >= tau] * CE(f(strong), q_hat) )

The mean runs over every unlabelled row, confident or not (the paper's normalisation), so the term grows as more
rows pass the threshold. Labelled, weak and strong rows share one forward (methods/terms.py); the evaluated network
is an exponential moving average of the weights: the term declares the recipe's decay, 0.999, which ``ema.decay``
overrides (methods/ema.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from sskt.config import TrainConfig
from sskt.data.spec import DatasetSpec
from sskt.errors import UserError
from sskt.methods.base import MethodContext, single_label_primary
from sskt.methods.terms import Forward, Term, term_family


def consistency_loss(weak_logits: Tensor, strong_logits: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    """``(mean_u 1[max q >= tau] CE(strong, argmax q), fraction of rows above the threshold)`` with
    ``q = softmax(weak_logits)`` detached: no gradient reaches the weak view or the pseudo-label."""
    probs = weak_logits.detach().float().softmax(1)
    confidence, pseudo = probs.max(1)
    mask = (confidence >= threshold).float()
    per_row = F.cross_entropy(strong_logits.float(), pseudo, reduction="none")
    return (per_row * mask).mean(), mask.mean()


@term_family("fixmatch")
class ConsistencyTerm(Term):
    """FixMatch's masked cross-entropy between the strong view and the weak view's confident hard label."""

    reads_unlabeled = True
    reads_strong = True
    ema_decay = 0.999

    @classmethod
    def check(cls, cfg: TrainConfig) -> None:
        fm = cfg.method.fixmatch
        if cfg.data.unlabeled is None:
            raise UserError(f"method {cfg.method.name!r} needs unlabelled images: set data.unlabeled (e.g. 'rest')")
        if not 0.0 <= fm.threshold <= 1.0:
            raise UserError(f"method.fixmatch.threshold must be in [0, 1], got {fm.threshold}")
        if fm.lambda_u < 0:
            raise UserError(f"method.fixmatch.lambda_u must be >= 0, got {fm.lambda_u}")
        single_label_primary("fixmatch", cfg.method.primary_loss)

    @classmethod
    def check_data(cls, cfg: TrainConfig, spec: DatasetSpec) -> None:
        if spec.task not in ("single_label", "video"):
            raise UserError(f"method 'fixmatch' needs a single-label dataset; {spec.name!r} is {spec.task!r}")

    def __init__(self, ctx: MethodContext) -> None:
        self.cfg = ctx.cfg.method.fixmatch

    def __call__(self, fwd: Forward, epoch: int) -> tuple[Tensor, dict[str, Tensor]]:
        if fwd.strong == 0:  # a batch without unlabelled rows
            zero = fwd.logits("labeled").sum() * 0
            return zero, {"unlabeled_loss": zero.detach(), "mask_rate": torch.zeros_like(zero).detach()}
        loss, rate = consistency_loss(fwd.logits("weak"), fwd.logits("strong"), self.cfg.threshold)
        return self.cfg.lambda_u * loss, {"unlabeled_loss": loss.detach(), "mask_rate": rate}
