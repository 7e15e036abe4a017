"""SSKT (Hong et al., WACV 2022): the target learns its labels plus, per frozen source, that source's soft labels
through its own auxiliary head.

    L = L_primary(z[:n], y) + alpha_e * sum_m w_m * L_aux(a_m, s_m; T)

``z`` primary logits (labelled rows ``:n`` only), ``a_m`` auxiliary logits for source ``m`` (all rows, unlabelled
included), ``s_m`` the source's logits for the same augmented image (from the soft-label cache when the batch
carries them, else computed online without gradient), ``w_m`` the per-source weight, ``alpha_e`` the scheduled
auxiliary weight of epoch ``e``.

Unlabelled rows go through the whole target; the primary head is a per-row linear layer, so its outputs on them
never touch the loss or any statistic.
"""

from __future__ import annotations

import math
from typing import get_args

from torch import Tensor, nn

from sskt.config import AlphaSchedule, AuxLoss, SourceConfig, SSKTConfig, TrainConfig
from sskt.data.spec import Batch
from sskt.errors import UserError, check_choice, check_range
from sskt.losses import aux_loss
from sskt.methods.base import MethodContext
from sskt.methods.terms import Forward, Term, term_family
from sskt.sources import SourceBank

ALPHA_SCHEDULES = get_args(AlphaSchedule)


def alpha_at(cfg: SSKTConfig, epoch: int, epochs: int) -> float:
    """The auxiliary weight during ``epoch`` (0-based) of ``epochs``.

    'constant': ``alpha`` (the paper). 'warmup': linear ramp reaching ``alpha`` at epoch ``alpha_warmup_epochs``.
    'cosine': half-cosine decay from ``alpha`` at the first epoch to ``alpha_floor * alpha`` at the last.
    """
    check_choice("method.sskt.alpha_schedule", cfg.alpha_schedule, ALPHA_SCHEDULES)
    if cfg.alpha_schedule == "warmup":
        return cfg.alpha * min(1.0, (epoch + 1) / (cfg.alpha_warmup_epochs + 1))
    if cfg.alpha_schedule == "cosine":
        progress = epoch / max(1, epochs - 1)
        return cfg.alpha * (cfg.alpha_floor + (1 - cfg.alpha_floor) * 0.5 * (1 + math.cos(math.pi * progress)))
    return cfg.alpha


def source_keys(sources: list[SourceConfig]) -> list[str]:
    """One unique key per source: its name, suffixed '#<i>' when the same name appears more than once."""
    names = [s.name for s in sources]
    return [n if names.count(n) == 1 else f"{n}#{i}" for i, n in enumerate(names)]


@term_family("sskt")
class AuxTerm(Term):
    """SSKT's term: per source, its auxiliary head against the source's soft labels, on every row of the batch."""

    reads_unlabeled = True

    @classmethod
    def check(cls, cfg: TrainConfig) -> None:
        """At least one source, a known auxiliary loss and alpha schedule, and weights and a temperature inside their
        ranges (a temperature divides the logits; alpha_floor is a fraction of alpha)."""
        s = cfg.method.sskt
        check_range("method.sskt.alpha", s.alpha, 0)
        check_range("method.sskt.temperature", s.temperature, 0, open_low=True)
        check_range("method.sskt.alpha_warmup_epochs", s.alpha_warmup_epochs, 0)
        check_range("method.sskt.alpha_floor", s.alpha_floor, 0, 1)
        if not cfg.sources:
            raise UserError("method 'sskt' needs at least one source; set sources: [{name: <source>}] in the config")
        check_choice("method.sskt.aux_loss", cfg.method.sskt.aux_loss, get_args(AuxLoss))
        check_choice("method.sskt.alpha_schedule", cfg.method.sskt.alpha_schedule, ALPHA_SCHEDULES)

    @classmethod
    def frozen_networks(cls, cfg: TrainConfig) -> dict[str, SourceConfig]:
        """Every source, by its key (``source_keys``)."""
        return dict(zip(source_keys(cfg.sources), cfg.sources, strict=True))

    @classmethod
    def cache_temperatures(cls, cfg: TrainConfig) -> dict[str, float]:
        return {"method.sskt.temperature": cfg.method.sskt.temperature}

    def __init__(self, ctx: MethodContext) -> None:
        self.cfg = cfg = ctx.cfg
        self.keys = source_keys(cfg.sources)
        self.weights = {k: s.weight for k, s in zip(self.keys, cfg.sources, strict=True)}
        built = {k: ctx.frozen[k] for k in self.keys}
        self.bank = SourceBank(built, chunk=cfg.source_chunk)
        self.aux = aux_loss(cfg.method.sskt.aux_loss)
        self.aux_classes = {k: src.num_classes for k, src in built.items()}

    def aux_heads(self) -> dict[str, int]:
        """One head per source, of the source's class count."""
        return self.aux_classes

    def setup(self, fabric, target: nn.Module) -> None:
        # Sources are frozen: on the device, outside Fabric's wrapping, never in an optimizer.
        self.bank = self.bank.to(fabric.device)
        self.fabric = fabric

    def source_logits(self, batch: Batch) -> dict[str, Tensor]:
        """Soft-label targets per source: cached in the batch when available, else computed online."""
        if batch.soft is not None and all(k in batch.soft for k in self.keys):
            return {k: batch.soft[k] for k in self.keys}
        with self.fabric.autocast():
            return self.bank(batch.images)

    def __call__(self, fwd: Forward, epoch: int) -> tuple[Tensor, dict[str, Tensor]]:
        targets = self.source_logits(fwd.batch)
        alpha = alpha_at(self.cfg.method.sskt, epoch, self.cfg.epochs)
        loss, logs = 0.0, {}
        for key in self.keys:
            aux = self.aux(fwd.aux_logits(key), targets[key].float(), self.cfg.method.sskt.temperature)
            logs[f"aux_{key}"] = aux.detach()
            loss = loss + alpha * self.weights[key] * aux
        return loss, logs
