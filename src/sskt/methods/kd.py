"""KD: knowledge distillation (Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network", 2015).

A teacher with the target's label space, trained by a run of its own (``sskt train`` with ``method.name=scratch``,
e.g. ``efficientnet_lite0`` fine-tuned from ImageNet), is loaded by path as the source ``checkpoint:<run dir>``: it is
frozen and re-normalised/resized from the target's batch like every source. The target minimises

    L = (1 - lam) CE(z, y) + lam * T^2 * KL(softmax(t / T) || softmax(z / T))       (KL averaged per sample)

``kd.legacy`` swaps the KL for the released SSKT code's elementwise mean (``kd_legacy``, C times weaker).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from sskt import losses
from sskt.config import SourceConfig, TrainConfig
from sskt.data.spec import Batch
from sskt.errors import UserError
from sskt.methods import METHODS
from sskt.methods.base import MethodContext, SingleNetMethod, single_label_primary
from sskt.models import build_target
from sskt.sources import SOURCES, SourceBank, build_source


def kd_objective(
    logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    temperature: float,
    lam: float,
    legacy: bool = False,
    primary: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(1 - lam) CE(z, y) + lam * KD(z, t; T)`` and its two terms ``(loss, ce, kd)``.

    ``logits`` [B, C] student, ``teacher_logits`` [B, C] (no gradient needed), ``labels`` int64 [B]. ``KD`` is
    ``T^2 KL(softmax(t/T) || softmax(z/T))`` batchmean, or the released code's elementwise mean when ``legacy``.
    ``primary`` replaces the label cross-entropy (``method.primary_loss``).
    """
    ce = primary(logits, labels)
    distill = (losses.kd_legacy if legacy else losses.kd)(logits, teacher_logits.detach(), temperature)
    return (1 - lam) * ce + lam * distill, ce, distill


@METHODS.register("kd")
class KD(SingleNetMethod):
    """The target distilled from a frozen teacher run (``method.kd.teacher: checkpoint:<run dir>``)."""

    @classmethod
    def check(cls, cfg: TrainConfig) -> None:
        """A teacher is given and names a source (normally ``checkpoint:<teacher run dir>``)."""
        if cfg.method.kd.teacher is None:
            raise UserError("method 'kd' needs method.kd.teacher, e.g. checkpoint:runs/teacher (a trained run)")
        SOURCES.require(cfg.method.kd.teacher, "source (method.kd.teacher)")

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        kd = self.cfg.method.kd
        if ctx.spec.task != "single_label":
            raise UserError(f"method 'kd' needs a single-label dataset; {ctx.spec.name!r} is {ctx.spec.task!r}")
        self.primary = single_label_primary("kd", self.cfg.method.primary_loss)
        teacher_cfg = SourceConfig(name=kd.teacher, input_size=kd.teacher_input_size)
        self.teacher = build_source(teacher_cfg, ctx.spec.mean, ctx.spec.std)
        if self.teacher.num_classes != ctx.spec.num_classes:
            raise UserError(
                f"KD teacher {kd.teacher!r} predicts {self.teacher.num_classes} classes; "
                f"dataset {ctx.spec.name!r} has {ctx.spec.num_classes}"
            )
        # The sources' fast path: inference mode, channels-last, chunks of source_chunk images on CPU.
        self.bank = SourceBank({"teacher": self.teacher}, chunk=self.cfg.source_chunk)
        self.declare("target", lambda: build_target(self.cfg.model, ctx.spec.num_classes, {}, self.cfg.head))

    def setup(self, fabric) -> None:
        super().setup(fabric)
        # The teacher is frozen: on the device, outside Fabric's wrapping, never in an optimizer.
        self.bank = self.bank.to(fabric.device)

    def compute_loss(self, batch: Batch) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        kd = self.cfg.method.kd
        images = batch.labeled_images
        with torch.no_grad(), self.fabric.autocast():
            teacher_logits = self.bank(images)["teacher"].float()
        logits = self.net(images).logits
        loss, ce, distill = kd_objective(
            logits, teacher_logits, batch.labels, kd.temperature, kd.lam, kd.legacy, self.primary
        )
        return loss, logits, {"ce_loss": ce.detach(), "kd_loss": distill.detach()}
