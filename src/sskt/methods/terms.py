"""An objective as a sum of terms over one forward of the target.

Scratch, SSKT, KD and FixMatch differ only in what they add to the label loss, so each is a list of ``Term`` objects
that one method class, ``Composite``, sums over a single forward of the target:

    scratch         L = primary
    sskt            L = primary + alpha * sum_m w_m aux_m           (auxiliary heads, methods/sskt.py)
    kd              L = (1 - lam) primary + lam * KD                 (methods/kd.py)
    fixmatch        L = primary + lambda_u * consistency             (methods/fixmatch.py)
    a+b             the terms of both, the primary loss once, e.g. 'fixmatch+sskt', 'kd+sskt'

The forward covers the labelled rows, then the unlabelled (weak) rows when any term reads them, then the strong
views when any term reads those: one BatchNorm batch, as FixMatch prescribes. A term sees the rows it needs through
``Forward``; unlabelled rows never reach the label loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor

from sskt.config import TrainConfig
from sskt.data.spec import Batch
from sskt.losses import primary_loss
from sskt.methods.base import MethodContext, SingleNetMethod
from sskt.methods.ema import EMA, ema_decay
from sskt.models import build_target
from sskt.models.base import TargetOutput

if TYPE_CHECKING:
    from lightning_fabric import Fabric


@dataclass
class Forward:
    """The target's output over ``[labelled | unlabelled weak | strong]`` rows of one batch."""

    batch: Batch
    out: TargetOutput
    weak: int
    """Unlabelled weak rows in the forward (0 when no term reads them)."""
    strong: int
    """Strong-view rows in the forward (0 when no term reads them)."""

    @property
    def labeled(self) -> int:
        return self.batch.num_labeled

    @property
    def rows(self) -> int:
        return self.labeled + self.weak + self.strong

    def logits(self, part: str) -> Tensor:
        """Primary logits of 'labeled', 'weak', 'strong', or 'images' (labelled + weak) rows."""
        return self.out.logits[self.span(part)]

    def aux_logits(self, key: str, part: str = "images") -> Tensor:
        return self.out.aux_logits[key][self.span(part)]

    def span(self, part: str) -> slice:
        n, u = self.labeled, self.weak
        return {
            "labeled": slice(0, n),
            "weak": slice(n, n + u),
            "images": slice(0, n + u),
            "strong": slice(n + u, n + u + self.strong),
        }[part]


class Term:
    """One summand of an objective. Subclasses set what they read and implement ``__call__``."""

    reads_unlabeled: ClassVar[bool] = False
    """The term uses the unlabelled (weak) rows when the batch has them."""
    reads_strong: ClassVar[bool] = False
    """The term needs the strong views of the unlabelled rows (FixMatch)."""
    primary_scale: float = 1.0
    """Factor this term puts on the label loss (KD's 1 - lam)."""
    aux_classes: dict[str, int] = {}
    """Auxiliary heads this term needs on the target, by source key."""

    @classmethod
    def check(cls, cfg: TrainConfig) -> None:
        """A one-line UserError for a setting of this term that cannot work."""

    def setup(self, fabric: Fabric) -> None:
        """Move frozen networks (sources, teachers) to the fabric's device."""

    def __call__(self, fwd: Forward, epoch: int) -> tuple[Tensor, dict[str, Tensor]]:
        """``(weighted loss, logs of detached unweighted values)``."""
        raise NotImplementedError


TERM_FAMILIES: dict[str, type[Term]] = {}
"""Method families that add a term: 'sskt', 'kd', 'fixmatch' (filled by their modules)."""


def term_family(name: str):
    """Class decorator: register a Term under the method family ``name``."""

    def wrap(cls: type[Term]) -> type[Term]:
        TERM_FAMILIES[name] = cls
        return cls

    return wrap


class Composite(SingleNetMethod):
    """The target trained on the label loss plus the terms of ``families``, summed over one forward."""

    families: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def strong_views(cls) -> bool:
        """Whether the stream must add strong views of the unlabelled rows."""
        return any(TERM_FAMILIES[f].reads_strong for f in cls.families)

    @classmethod
    def check(cls, cfg: TrainConfig) -> None:
        for family in cls.families:
            TERM_FAMILIES[family].check(cfg)

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        self.terms = [TERM_FAMILIES[f](ctx) for f in self.families]
        self.primary = primary_loss(self.cfg.method.primary_loss)
        self.primary_scale = 1.0
        for term in self.terms:
            self.primary_scale *= term.primary_scale
            self.aux_classes = self.aux_classes | term.aux_classes
        self.reads_unlabeled = any(t.reads_unlabeled for t in self.terms)
        self.reads_strong = any(t.reads_strong for t in self.terms)
        num_classes, aux = ctx.spec.num_classes, dict(self.aux_classes)
        # Declared, so seeded, alike under every composition: the backbone starts from the same weights.
        self.declare("target", lambda: build_target(self.cfg.model, num_classes, aux, self.cfg.head))
        decay = ema_decay(self.cfg.method.ema_decay, self.reads_strong)
        self.ema = EMA(self.networks["target"].raw, decay) if decay else None

    def setup(self, fabric: Fabric) -> None:
        super().setup(fabric)
        for term in self.terms:
            term.setup(fabric)
        if self.ema is not None:
            self.ema.to(fabric.device, self.cfg.channels_last)

    def forward_rows(self, batch: Batch) -> Forward:
        """One forward over the rows the terms read."""
        parts = [batch.images if self.reads_unlabeled else batch.labeled_images]
        strong = 0
        if self.reads_strong and batch.strong is not None:
            parts.append(batch.strong)
            strong = batch.strong.shape[0]
        out = self.net(parts[0] if len(parts) == 1 else torch.cat(parts))
        weak = batch.num_unlabeled if self.reads_unlabeled else 0
        return Forward(batch, out, weak, strong)

    def compute_loss(self, batch: Batch) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        fwd = self.forward_rows(batch)
        logits = fwd.logits("labeled")
        primary = self.primary(logits, batch.labels)
        loss, logs = self.primary_scale * primary, {"primary_loss": primary.detach()}
        for term in self.terms:
            value, term_logs = term(fwd, self.epoch)
            loss = loss + value
            logs |= term_logs
        self.rows = fwd.rows
        return loss, logits, logs

    def training_step(self, batch: Batch):
        out = super().training_step(batch)
        out.rows = self.rows
        if self.ema is not None:
            self.ema.update(self.networks["target"].raw)
        return out

    def evaluated(self) -> dict:
        return {"": self.ema.module} if self.ema is not None else super().evaluated()

    def state_dict(self) -> dict:
        state = super().state_dict()
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if self.ema is not None:
            self.ema.load(state.get("ema"), self.networks["target"].raw)


def register_compositions(methods, names: list[str]) -> None:
    """Register one Composite subclass per name: 'scratch' (no term), a family, or families joined by '+'."""
    for name in names:
        families = () if name == "scratch" else tuple(name.split("+"))
        cls = type(f"Composite[{name}]", (Composite,), {"families": families, "__doc__": Composite.__doc__})
        methods.register(name)(cls)
