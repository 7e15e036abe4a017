"""The source adapted to the target's labels by a linear probe: a linear classifier trained on the frozen source's
penultimate features (the cheap half of "adapt, then distil", ../docs METHOD.md section 9; fine-tuning is the other
half: ``method.name: scratch`` with a pretrained ``model.name``).

``method.name: probe`` with one entry in ``sources`` trains ``fc`` on the labelled images, through the same loop,
augmentation, validation choice and records as every method. The network (``ProbeNet``) lives in
``sskt.sources.probe``; the run's card names it and its source (``card_fields``), so the run directory serves as a
KD teacher, ``method.kd.teacher: checkpoint:<run dir>``, rebuilt by ``sskt.trained``: the source with the trained
classifier in place of its own.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sskt.config import TrainConfig
from sskt.data.spec import Batch
from sskt.errors import UserError
from sskt.methods.base import METHODS, MethodContext, SingleNetMethod, StepOutput, single_label_primary
from sskt.sources.probe import PROBE, build_probe


@METHODS.register("probe")
class Probe(SingleNetMethod):
    """``L = CE(fc(features(x)), y)`` on the labelled rows; only ``fc`` trains."""

    @classmethod
    def check(cls, cfg: TrainConfig) -> None:
        if len(cfg.sources) != 1:
            raise UserError(f"method 'probe' needs exactly one source (the network to adapt); got {len(cfg.sources)}")
        single_label_primary("probe", cfg.method.primary_loss)

    @classmethod
    def card_fields(cls, cfg: TrainConfig) -> dict[str, Any]:
        """``model.json`` names the probe's architecture and its source: the network is not ``cfg.model``."""
        return {"architecture": PROBE, "source": dataclasses.asdict(cfg.sources[0])}

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        self.primary = single_label_primary("probe", self.cfg.method.primary_loss)
        spec, cfg = ctx.spec, self.cfg
        self.declare("target", lambda: build_probe(cfg.sources[0], spec.mean, spec.std, spec.num_classes))

    def compute_loss(self, batch: Batch) -> StepOutput:
        logits = self.net(batch.labeled_images).logits
        return StepOutput(self.primary(logits, batch.labels), logits)
