"""KD: knowledge distillation (Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network", 2015).

A teacher with the target's label space, trained by a run of its own (``sskt train`` with ``method.name=scratch``,
e.g. ``efficientnet_lite0`` fine-tuned from ImageNet), is loaded by path as the source ``checkpoint:<run dir>``: it is
frozen and re-normalised/resized from the target's batch like every source. The target minimises

    L = w_l CE(z_l, y) + lam * T^2 * mean_rows KL(softmax(t / T) || softmax(z / T))

over the labelled rows ``l`` and, with ``data.unlabeled``, the unlabelled rows too (the KD term on every row). The
label weight ``w_l`` is ``kd.label_weight``: 1 by default, METHOD.md section 9's form, where the label loss keeps the
weight it has in every other method (so in ``kd+sskt`` SSKT's alpha weighs against 1, as in plain SSKT); null is
Hinton's ``1 - lam`` (section 7; 0.1 at the default lam 0.9), kept for the presets that reproduce older results.
The teacher is also the source adapted to the labels: a linear probe on its frozen features (``method.name:
probe``). The engine builds the teacher once (``frozen_networks``) and serves its logits from the soft-label cache.

``kd.legacy`` swaps the KL for the released SSKT code's elementwise mean (``kd_legacy``, C times weaker).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sskt import losses
from sskt.config import KDConfig, SourceConfig, TrainConfig
from sskt.data.spec import Batch, DatasetSpec
from sskt.errors import UserError, check_range
from sskt.methods.base import MethodContext, label_loss
from sskt.methods.terms import Forward, Term, term_family
from sskt.sources import SOURCES, SourceBank


def label_weight(kd: KDConfig) -> float:
    """The label loss's weight: ``kd.label_weight``, or Hinton's ``1 - lam`` when it is None."""
    return 1 - kd.lam if kd.label_weight is None else kd.label_weight


TEACHER_KEY = "kd_teacher"
"""The teacher's key among a batch's cached logits (``Batch.soft``) and in the soft-label cache."""


def teacher_config(cfg: TrainConfig) -> SourceConfig:
    """``method.kd.teacher`` as a source."""
    return SourceConfig(name=cfg.method.kd.teacher, input_size=cfg.method.kd.teacher_input_size)


@term_family("kd")
class KDTerm(Term):
    """Distillation from a frozen teacher with the target's label space, on every row: the labelled ones and, when
    ``data.unlabeled`` is set, the unlabelled ones (SimCLRv2's last step). The label loss gets ``label_weight``."""

    reads_unlabeled = True

    @classmethod
    def frozen_networks(cls, cfg: TrainConfig) -> dict[str, SourceConfig]:
        """The teacher, under ``TEACHER_KEY``."""
        return {TEACHER_KEY: teacher_config(cfg)} if cfg.method.kd.teacher else {}

    @classmethod
    def cache_temperatures(cls, cfg: TrainConfig) -> dict[str, float]:
        return {"method.kd.temperature": cfg.method.kd.temperature}

    @classmethod
    def check(cls, cfg: TrainConfig) -> None:
        """A teacher is given and names a source (normally ``checkpoint:<teacher run dir>``); the temperature divides
        the logits (0 trains to NaN weights) and lambda mixes two terms."""
        kd = cfg.method.kd
        check_range("method.kd.temperature", kd.temperature, 0, open_low=True)
        check_range("method.kd.lam", kd.lam, 0, 1)
        if kd.teacher_input_size is not None:
            check_range("method.kd.teacher_input_size", kd.teacher_input_size, 1)
        if cfg.method.kd.teacher is None:
            raise UserError("method 'kd' needs method.kd.teacher, e.g. checkpoint:runs/teacher (a trained run)")
        SOURCES.require(cfg.method.kd.teacher, "source (method.kd.teacher)")
        weight = cfg.method.kd.label_weight
        if weight is not None and weight < 0:
            raise UserError(f"method.kd.label_weight must be >= 0 or null (1 - lam), got {weight}")

    @classmethod
    def check_data(cls, cfg: TrainConfig, spec: DatasetSpec) -> None:
        """The label loss suits the task: ce/focal, or bce on multi-label data."""
        label_loss("kd", cfg.method.primary_loss, spec.task)

    def __init__(self, ctx: MethodContext) -> None:
        self.cfg = cfg = ctx.cfg
        self.multi_label = ctx.spec.task == "multi_label"
        self.teacher = ctx.frozen[TEACHER_KEY]
        if self.teacher.num_classes != ctx.spec.num_classes:
            raise UserError(
                f"KD teacher {cfg.method.kd.teacher!r} predicts {self.teacher.num_classes} classes; "
                f"dataset {ctx.spec.name!r} has {ctx.spec.num_classes}"
            )
        # The sources' fast path: inference mode, channels-last, chunks of source_chunk images on CPU.
        self.bank = SourceBank({TEACHER_KEY: self.teacher}, chunk=cfg.source_chunk)
        self.primary_scale = label_weight(cfg.method.kd)

    def setup(self, fabric, target: nn.Module) -> None:
        # The teacher is frozen: on the device, outside Fabric's wrapping, never in an optimizer.
        self.bank = self.bank.to(fabric.device)
        self.fabric = fabric

    def teacher_logits(self, batch: Batch, rows: int) -> Tensor:
        """The teacher's logits for the first ``rows`` rows: cached in the batch when there, else computed."""
        if batch.soft is not None and TEACHER_KEY in batch.soft:
            return batch.soft[TEACHER_KEY][:rows].float()
        with torch.no_grad(), self.fabric.autocast():
            return self.bank(batch.images[:rows])[TEACHER_KEY].float()

    def __call__(self, fwd: Forward, epoch: int) -> tuple[Tensor, dict[str, Tensor]]:
        kd = self.cfg.method.kd
        part = "images" if fwd.weak else "labeled"
        logits = fwd.logits(part)
        teacher = self.teacher_logits(fwd.batch, logits.shape[0])
        if self.multi_label:  # per-class sigmoid distillation
            distill = losses.sigmoid_kd(logits, teacher, kd.temperature)
        else:
            distill = (losses.kd_legacy if kd.legacy else losses.kd)(logits, teacher, kd.temperature)
        return kd.lam * distill, {"kd_loss": distill.detach()}
