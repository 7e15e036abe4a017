"""A DHO-style dual head (Kang et al. 2025, "Simple Semi-supervised Knowledge Distillation from Vision-Language
Models via Dual-Head Optimization", arXiv 2505.07675; ../docs METHOD.md section 13): SSKT's separate-head idea with a
teacher adapted to the target's labels.

The target carries a second linear head ``z_kd`` on its pooled feature. The primary head learns the labels; the
second learns the adapted teacher's distribution over the same classes, on labelled and unlabelled rows:

    L = w_l CE(z_ce[:n], y) + lam * T^2 * mean_rows KL(softmax(t / T) || softmax(z_kd / T))

(``method.kd``: the teacher, ``T``, ``lam`` and ``label_weight`` as for KD, section 9's form by default). At
inference ``p = (1 - a) softmax(z_ce) + a softmax(z_kd / beta)`` (``sskt.models.fused``), with ``a`` and ``beta``
chosen on the validation split before every evaluation from ``method.dho.alphas`` x ``betas``; the run ships that
fused prediction (``model.json``'s ``fusion``). Against KD, which distils into the one head the labels train, it
isolates whether a separate head is what helps; against SSKT, whether the source's own label space does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from sskt import losses
from sskt.config import TrainConfig
from sskt.errors import UserError
from sskt.methods.base import METHODS
from sskt.methods.kd import KDTerm
from sskt.methods.terms import Forward, register_compositions, term_family
from sskt.models.fused import FusedHeads, choose_fusion

HEAD = "dho"
"""The second head's key among the target's auxiliary heads."""


@term_family("dho")
class DualHeadTerm(KDTerm):
    """KD from the adapted teacher into a second linear head; both heads fused for evaluation and shipping."""

    @classmethod
    def check(cls, cfg: TrainConfig) -> None:
        """KD's checks, a linear second head, and fusion grids inside their ranges."""
        super().check(cfg)
        if cfg.head.kind != "linear":
            raise UserError(
                f"method 'dho' needs head.kind 'linear' (a linear head on the pooled feature); got {cfg.head.kind!r}"
            )
        dho = cfg.method.dho
        if not dho.alphas or not all(0.0 <= a <= 1.0 for a in dho.alphas):
            raise UserError(f"method.dho.alphas must be a non-empty list in [0, 1]; got {dho.alphas}")
        if not dho.betas or not all(b > 0 for b in dho.betas):
            raise UserError(f"method.dho.betas must be a non-empty list of positive numbers; got {dho.betas}")

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        if self.multi_label:
            raise UserError(f"method 'dho' needs single-label data; {ctx.spec.name!r} is multi-label")
        self.num_classes = ctx.spec.num_classes
        self.a, self.beta = 0.0, 1.0

    def aux_heads(self) -> dict[str, int]:
        return {HEAD: self.num_classes}

    def __call__(self, fwd: Forward, epoch: int) -> tuple[Tensor, dict[str, Tensor]]:
        kd = self.cfg.method.kd
        logits = fwd.aux_logits(HEAD, "images" if fwd.weak else "labeled")
        teacher = self.teacher_logits(fwd.batch, logits.shape[0])
        distill = (losses.kd_legacy if kd.legacy else losses.kd)(logits, teacher, kd.temperature)
        return kd.lam * distill, {"kd_loss": distill.detach()}

    def calibrate(self, net: nn.Module, data: Mapping[str, Iterable]) -> None:
        """Choose ``a`` and ``beta`` on the validation split (kept as they are without one)."""
        if data.get("val") is not None:
            z_ce, z_kd, labels = both_heads(FusedHeads(net, HEAD), data["val"], self.fabric.device)
            dho = self.cfg.method.dho
            self.a, self.beta, _ = choose_fusion(z_ce, z_kd, labels, dho.alphas, dho.betas)

    def wrap_evaluated(self, net: nn.Module) -> nn.Module:
        return FusedHeads(net, HEAD, self.a, self.beta)

    def state_dict(self) -> dict:
        return {"a": self.a, "beta": self.beta}

    def load_state_dict(self, state: dict) -> None:
        self.a, self.beta = float(state.get("a", 0.0)), float(state.get("beta", 1.0))


@torch.no_grad()
def both_heads(fused: FusedHeads, batches: Iterable, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Both heads' logits [N, C] (float32) and the labels [N] over ``(images, labels)`` batches, in eval mode."""
    was_training = fused.target.training
    fused.target.eval()
    z_ce, z_kd, labels = [], [], []
    for images, y in batches:
        a, b = fused.heads(images.to(device))
        z_ce.append(a.float()), z_kd.append(b.float()), labels.append(y.to(device))
    fused.target.train(was_training)
    return torch.cat(z_ce), torch.cat(z_kd), torch.cat(labels)


register_compositions(METHODS, ["dho", "dho+sskt"])
