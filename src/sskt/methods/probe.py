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
import time
from collections.abc import Iterable, Mapping
from typing import Any, get_args

import torch
from torch import Tensor, nn

from sskt.config import ProbeSolver, TrainConfig
from sskt.data.datasets import SubsetImageSet
from sskt.data.spec import Batch
from sskt.errors import UserError, check_choice
from sskt.methods.base import METHODS, MethodContext, SingleNetMethod, StepOutput, single_label_primary
from sskt.sources.base import build_source
from sskt.sources.cache.key import cache_root
from sskt.sources.features import FeatureMemo, source_features
from sskt.sources.linear_eval import L2_GRID, choose_l2
from sskt.sources.probe import PROBE, build_probe

Pair = tuple[Tensor, Tensor]
"""Features [N, D] and labels [N]."""


@METHODS.register("probe")
class Probe(SingleNetMethod):
    """``L = CE(fc(features(x)), y)`` on the labelled rows; only ``fc`` trains."""

    @classmethod
    def check(cls, cfg: TrainConfig) -> None:
        if len(cfg.sources) != 1:
            raise UserError(f"method 'probe' needs exactly one source (the network to adapt); got {len(cfg.sources)}")
        single_label_primary("probe", cfg.method.primary_loss)
        check_choice("method.probe.solver", cfg.method.probe.solver, get_args(ProbeSolver))
        if cfg.method.probe.solver == "lbfgs" and not cfg.data.val_per_class:
            raise UserError("method.probe.solver 'lbfgs' chooses its L2 strength on validation: set data.val_per_class")
        if cfg.method.probe.solver == "lbfgs" and cfg.epochs != 1:
            raise UserError(f"method.probe.solver 'lbfgs' fits once, without epochs: set epochs 1 (got {cfg.epochs})")
        if any(v <= 0 for v in cfg.method.probe.l2 or ()):
            raise UserError(f"method.probe.l2 must hold positive strengths, got {cfg.method.probe.l2}")

    @classmethod
    def card_fields(cls, cfg: TrainConfig) -> dict[str, Any]:
        """``model.json`` names the probe's architecture and its source: the network is not ``cfg.model``."""
        return {"architecture": PROBE, "source": dataclasses.asdict(cfg.sources[0])}

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        self.primary = single_label_primary("probe", self.cfg.method.primary_loss)
        spec, cfg = ctx.spec, self.cfg
        self.declare("target", lambda: build_probe(cfg.sources[0], spec.mean, spec.std, spec.num_classes))
        self.fit_facts: dict[str, float] = {}

    def compute_loss(self, batch: Batch) -> StepOutput:
        logits = self.net(batch.labeled_images).logits
        return StepOutput(self.primary(logits, batch.labels), logits)

    # --- method.probe.solver 'lbfgs': the linear-evaluation protocol, no SGD step -------------------------------
    def phases(self) -> tuple[str, ...]:
        return () if self.cfg.method.probe.solver == "lbfgs" else super().phases()

    def end_epoch(self, epoch: int) -> None:
        if self.cfg.method.probe.solver != "lbfgs":  # no optimizer step was taken: no schedule to step
            super().end_epoch(epoch)

    def calibrate(self, data: Mapping[str, Iterable]) -> None:
        """'lbfgs': before the first evaluation, fit ``fc`` to convergence on the labelled images' un-augmented
        features and choose its L2 strength on the validation split's (``sskt.sources.linear_eval``)."""
        if self.cfg.method.probe.solver != "lbfgs" or self.fit_facts:
            return
        start = time.perf_counter()
        probe = self.networks["target"].raw
        if self.cfg.method.probe.feature_cache:  # every evaluation of this probe reads features seen before
            memo = FeatureMemo(cache_root(self.cfg.cache), probe.bank.sources[0].fingerprint())
            for net in {id(n): n for n in (probe, self.evaluated_target())}.values():
                net.memo = memo
        grid = tuple(self.cfg.method.probe.l2 or L2_GRID)
        cached = self.cached_features(data, next(probe.parameters()).device)
        labeled, val = cached or (features(probe, data["labeled"]), features(probe, data["val"]))
        fit = choose_l2(labeled, val, probe.fc.out_features, grid)
        with torch.no_grad():
            probe.fc.weight.copy_(fit.weight)
            probe.fc.bias.copy_(fit.bias)
        self.fit_facts = {"probe_l2": fit.l2, "probe_fit_seconds": time.perf_counter() - start}

    def cached_features(self, data: Mapping[str, Iterable], device: torch.device) -> tuple[Pair, Pair] | None:
        """With ``method.probe.feature_cache``, the labelled and validation images' features from the feature cache that
        ``sskt advise`` fills (``sskt.sources.features``, keyed by the source's weights, sizes and the images), so a
        source is run over them once for advise and the teacher alike; None when the splits are not training
        images (then ``features`` reads the batches)."""
        spec = self.ctx.spec
        splits = [getattr(data.get(name), "split", None) for name in ("labeled", "val")]
        from_train = all(isinstance(s, SubsetImageSet) and s.split is spec.train for s in splits)
        if not self.cfg.method.probe.feature_cache or not from_train:
            return None
        source = build_source(self.cfg.sources[0], spec.mean, spec.std)
        wanted = torch.cat([s.indices for s in splits])
        found = source_features(source, spec, wanted, cache_root(self.cfg.cache), self.cfg.data.eval_batch_size,
                                str(device), show=False)  # fmt: skip
        return tuple((found.rows(s.indices)[0], s.labels) for s in splits)  # type: ignore[return-value]

    def epoch_facts(self) -> dict[str, float]:
        return super().epoch_facts() | self.fit_facts

    def state_dict(self) -> dict:
        return super().state_dict() | {"probe_fit": dict(self.fit_facts)}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.fit_facts = dict(state.get("probe_fit", {}))


@torch.no_grad()
def features(probe: nn.Module, batches: Iterable) -> tuple[Tensor, Tensor]:
    """The frozen source's penultimate features [N, D] (float32, on the CPU) and the labels [N] of ``(images,
    labels)`` batches; the source preprocesses each batch itself (resize, its own normalisation)."""
    device = next(probe.parameters()).device
    feats, labels = [], []
    for images, y in batches:
        feats.append(probe.features(images.to(device)).cpu())
        labels.append(y.cpu())
    return torch.cat(feats), torch.cat(labels)
