"""The source adapted to the target's labels by a linear probe: a linear classifier trained on the frozen source's
penultimate features (the cheap half of "adapt, then distil", ../docs METHOD.md section 9; fine-tuning is the other
half: ``method.name: scratch`` with a pretrained ``model.name``).

``method.name: probe`` with one entry in ``sources`` trains ``fc`` on the labelled images, through the same loop,
augmentation, validation choice and records as every method. The run directory then serves as a KD teacher,
``method.kd.teacher: checkpoint:<run dir>``, which ``sskt.sources.checkpoint`` rebuilds from the run's config: the
source with the trained classifier in place of its own.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sskt.config import SourceConfig, TrainConfig
from sskt.data.spec import Batch
from sskt.errors import UserError
from sskt.methods.base import METHODS, MethodContext, SingleNetMethod, StepOutput, single_label_primary
from sskt.models.base import TargetOutput
from sskt.sources import SourceBank, build_source
from sskt.sources.base import Source
from sskt.sources.weights import load_into


def strip_classifier(net: nn.Module, what: str) -> int:
    """Replace ``net``'s last ``nn.Linear`` by the identity, in place, so it returns its penultimate features;
    return their width."""
    linears = [(name, m) for name, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise UserError(f"{what} has no linear classifier to replace (a linear probe needs one)")
    name, layer = linears[-1]
    parent = net.get_submodule(name.rpartition(".")[0]) if "." in name else net
    setattr(parent, name.rpartition(".")[2], nn.Identity())
    return layer.in_features


class ProbeNet(nn.Module):
    """A frozen source's penultimate features (its own preprocessing included) and a trained linear ``fc``."""

    def __init__(self, source: Source, num_classes: int, chunk: int | None = None) -> None:
        super().__init__()
        width = strip_classifier(source.net, f"source {source.name!r}")
        self.bank = SourceBank({"features": source}, chunk=chunk)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> TargetOutput:
        return TargetOutput(self.fc(self.bank(x)["features"].float()))


def build_probe(source: SourceConfig, mean, std, num_classes: int, chunk: int | None = None) -> ProbeNet:
    """A probe on ``source`` for images normalised with ``mean``/``std`` (the target dataset's)."""
    return ProbeNet(build_source(source, mean, std), num_classes, chunk)


@METHODS.register("probe")
class Probe(SingleNetMethod):
    """``L = CE(fc(features(x)), y)`` on the labelled rows; only ``fc`` trains."""

    @classmethod
    def check(cls, cfg: TrainConfig) -> None:
        if len(cfg.sources) != 1:
            raise UserError(f"method 'probe' needs exactly one source (the network to adapt); got {len(cfg.sources)}")
        single_label_primary("probe", cfg.method.primary_loss)

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        self.primary = single_label_primary("probe", self.cfg.method.primary_loss)
        spec, cfg = ctx.spec, self.cfg
        self.declare("target", lambda: build_probe(cfg.sources[0], spec.mean, spec.std, spec.num_classes))

    def compute_loss(self, batch: Batch) -> StepOutput:
        logits = self.net(batch.labeled_images).logits
        return StepOutput(self.primary(logits, batch.labels), logits)


@torch.no_grad()
def probe_from_run(source: dict, data_stats: tuple, state: dict, what: str) -> ProbeNet:
    """The trained probe of a run: its config's ``sources[0]`` (a dict) and its saved weights ``state``."""
    try:
        cfg = SourceConfig(**source)
    except TypeError as exc:
        raise UserError(f"{what}: the run's sources[0] is not a source ({exc})") from exc
    num_classes = int(state["fc.weight"].shape[0])
    net = build_probe(cfg, *data_stats, num_classes)
    load_into(net, state, what)
    return net
