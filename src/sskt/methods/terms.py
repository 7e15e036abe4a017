"""An objective as a sum of terms over one forward of the target.

Scratch, SSKT, KD and FixMatch differ only in what they add to the label loss, so each is a list of ``Term`` objects
that one method class, ``Composite``, sums over a single forward of the target:

    scratch         L = primary
    sskt            L = primary + alpha * sum_m w_m aux_m           (auxiliary heads, methods/sskt.py)
    kd              L = w_l primary + lam * KD                       (methods/kd.py; w_l = 1, or 1 - lam)
    dho             L = w_l primary + lam * KD on a second head      (methods/dho.py; the heads fused at inference)
    fixmatch        L = primary + lambda_u * consistency             (methods/fixmatch.py)
    a+b             the terms of both, the primary loss once, e.g. 'fixmatch+sskt', 'kd+sskt'

The forward covers the labelled rows, then the unlabelled (weak) rows when any term reads them, then the strong
views when any term reads those: one BatchNorm batch, as FixMatch prescribes. A term sees the rows it needs through
``Forward``; unlabelled rows never reach the label loss.

A term declares what it needs as class attributes and class methods (the rows it reads, the frozen networks it
takes from ``MethodContext.frozen``, its default EMA decay); ``Composite`` declares their union to the engine. A new
objective is one file: a ``Term`` registered with ``@term_family(name)`` and its method names with
``register_compositions``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor, nn

from sskt.config import SourceConfig, TrainConfig
from sskt.data.spec import Batch, DatasetSpec
from sskt.losses import primary_loss
from sskt.methods.base import MethodContext, SingleNetMethod, StepOutput
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
    ema_decay: ClassVar[float] = 0.0
    """The decay of the target's weight average this term's recipe evaluates when ``ema.decay`` is None (0: none)."""
    primary_scale: float = 1.0
    """Factor this term puts on the label loss (KD's Hinton form: 1 - lam)."""

    @classmethod
    def check(cls, cfg: TrainConfig) -> None:
        """A one-line UserError for a setting of this term that cannot work."""

    @classmethod
    def check_data(cls, cfg: TrainConfig, spec: DatasetSpec) -> None:
        """A one-line UserError for a setting of this term that cannot work on this dataset (``Method.check_data``)."""

    @classmethod
    def frozen_networks(cls, cfg: TrainConfig) -> dict[str, SourceConfig]:
        """The frozen networks the term reads, by key (``Method.frozen_networks``)."""
        return {}

    @classmethod
    def cache_temperatures(cls, cfg: TrainConfig) -> dict[str, float]:
        """The temperature at which the term reads cached logits, by config field (``Method.cache_temperatures``)."""
        return {}

    def aux_heads(self) -> dict[str, int]:
        """Auxiliary heads this term needs on the target: class count by source key."""
        return {}

    def setup(self, fabric: Fabric, target: nn.Module) -> None:
        """Move frozen networks (sources, teachers) to the fabric's device; ``target`` is the raw module being
        trained (a term that keeps a copy of it, such as a teacher's average, makes it here)."""

    def __call__(self, fwd: Forward, epoch: int) -> tuple[Tensor, dict[str, Tensor]]:
        """``(weighted loss, logs of detached unweighted values)``."""
        raise NotImplementedError

    def after_step(self, target: nn.Module) -> None:
        """After the target's optimizer step (``target``: the raw module), e.g. to move a teacher's average."""

    def calibrate(self, net: nn.Module, data: Mapping[str, Iterable]) -> None:
        """Before each evaluation: choose what is set after training (DHO's fusion weights) on the un-augmented
        batches of ``data`` ('labeled', 'val': ``(images, labels)``), for ``net``, the target as evaluated."""

    def wrap_evaluated(self, net: nn.Module) -> nn.Module:
        """The network evaluated and shipped in place of ``net`` (DHO: both heads fused); ``net`` by default."""
        return net

    def state_dict(self) -> dict:
        """What the term keeps across steps (a teacher's average, say), for the checkpoint; {} for none."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore ``state_dict()``'s output ({} when the checkpoint holds none for this term)."""


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
    def term_classes(cls) -> list[type[Term]]:
        return [TERM_FAMILIES[f] for f in cls.families]

    @classmethod
    def wants_strong_views(cls, cfg: TrainConfig) -> bool:
        return any(t.reads_strong for t in cls.term_classes())

    @classmethod
    def frozen_networks(cls, cfg: TrainConfig) -> dict[str, SourceConfig]:
        """The union of the terms' frozen networks (SSKT's sources, KD's teacher)."""
        return {k: s for t in cls.term_classes() for k, s in t.frozen_networks(cfg).items()}

    @classmethod
    def default_ema_decay(cls, cfg: TrainConfig) -> float:
        """The largest of the terms' recipe decays (FixMatch's 0.999), 0 without any."""
        return max((t.ema_decay for t in cls.term_classes()), default=0.0)

    @classmethod
    def cache_temperatures(cls, cfg: TrainConfig) -> dict[str, float]:
        return {k: v for t in cls.term_classes() for k, v in t.cache_temperatures(cfg).items()}

    @classmethod
    def check(cls, cfg: TrainConfig) -> None:
        for term in cls.term_classes():
            term.check(cfg)

    @classmethod
    def check_data(cls, cfg: TrainConfig, spec: DatasetSpec) -> None:
        for term in cls.term_classes():
            term.check_data(cfg, spec)

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        self.terms = [term(ctx) for term in self.term_classes()]
        self.primary = primary_loss(self.cfg.method.primary_loss)
        self.primary_scale = 1.0
        for term in self.terms:
            self.primary_scale *= term.primary_scale
            self.aux_classes = self.aux_classes | term.aux_heads()
        self.reads_unlabeled = any(t.reads_unlabeled for t in self.terms)
        self.reads_strong = any(t.reads_strong for t in self.terms)
        num_classes, aux = ctx.spec.num_classes, dict(self.aux_classes)
        # Declared, so seeded, alike under every composition: the backbone starts from the same weights.
        self.declare("target", lambda: build_target(self.cfg.model, num_classes, aux, self.cfg.head))

    def setup(self, fabric: Fabric) -> None:
        super().setup(fabric)
        for term in self.terms:
            term.setup(fabric, self.networks["target"].raw)

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

    def compute_loss(self, batch: Batch) -> StepOutput:
        fwd = self.forward_rows(batch)
        logits = fwd.logits("labeled")
        primary = self.primary(logits, batch.labels)
        loss, logs = self.primary_scale * primary, {"primary_loss": primary.detach()}
        for term in self.terms:
            value, term_logs = term(fwd, self.epoch)
            loss = loss + value
            logs |= term_logs
        return StepOutput(loss, logits, logs, fwd.rows)

    def after_step(self) -> None:
        super().after_step()
        for term in self.terms:
            term.after_step(self.networks["target"].raw)

    def calibrate(self, data: Mapping[str, Iterable]) -> None:
        net = super().evaluated_target()
        for term in self.terms:
            term.calibrate(net, data)

    def evaluated_target(self) -> nn.Module:
        """The base's (the weight average or the target), as each term wraps it for evaluation and shipping."""
        net = super().evaluated_target()
        for term in self.terms:
            net = term.wrap_evaluated(net)
        return net

    def state_dict(self) -> dict:
        """The base's state, plus ``"terms"`` (by family) when a term keeps any."""
        terms = {f: s for f, t in zip(self.families, self.terms, strict=True) if (s := t.state_dict())}
        return super().state_dict() | ({"terms": terms} if terms else {})

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        for family, term in zip(self.families, self.terms, strict=True):
            term.load_state_dict(state.get("terms", {}).get(family, {}))


def register_compositions(methods, names: list[str]) -> None:
    """Register one Composite subclass per name: 'scratch' (no term), a family, or families joined by '+'."""
    for name in names:
        families = () if name == "scratch" else tuple(name.split("+"))
        cls = type(f"Composite[{name}]", (Composite,), {"families": families, "__doc__": Composite.__doc__})
        methods.register(name)(cls)
