"""Scratch: the target alone, trained on its labelled data with the primary loss (the paper's baseline)."""

from __future__ import annotations

from torch import Tensor

from sskt.data.spec import Batch
from sskt.losses import primary_loss
from sskt.methods import METHODS
from sskt.methods.base import MethodContext, SingleNetMethod
from sskt.models import build_target


@METHODS.register("scratch")
class Scratch(SingleNetMethod):
    """``L = L_primary(z, y)`` on the labelled rows; the target carries no auxiliary heads."""

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        self.primary = primary_loss(self.cfg.method.primary_loss)
        self.declare("target", lambda: build_target(self.cfg.model, ctx.spec.num_classes, {}, self.cfg.head))

    def compute_loss(self, batch: Batch) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        # Unlabelled rows carry nothing for scratch: only the labelled ones go through the network.
        logits = self.net(batch.labeled_images).logits
        return self.primary(logits, batch.labels), logits, {}
