"""A frozen source with a linear classifier on its penultimate features: the network of a linear-probe run.

It lives with the sources, not with the method that trains it (``sskt.methods.probe``), because a finished probe
run is itself a network to reload (``sskt.trained``) and to serve as a teacher (``checkpoint:`` sources), and the
sources must not import a method. ``PROBE`` is its architecture name in ``model.json``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from sskt.config import SourceConfig
from sskt.errors import UserError
from sskt.models.base import TargetOutput
from sskt.sources.base import Source, SourceBank, build_source
from sskt.sources.weights import State, load_into

PROBE = "probe"
"""``ModelCard.architecture`` of a probe run."""
BANK_PREFIX = "bank."
"""The frozen source's keys in a ProbeNet state dict; no target model has them (how an older run without a card
is told apart)."""


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
        self.memo: Callable[[Tensor, Callable[[Tensor], Tensor]], Tensor] | None = None
        """Set by the L-BFGS probe run (``sources.features.FeatureMemo``): features of images seen before are read,
        not computed. A plain attribute: nothing of it is in the state dict."""

    def features(self, x: Tensor) -> Tensor:
        """The frozen source's penultimate features of ``x`` (from the memo when one is set)."""
        compute = lambda images: self.bank(images)["features"].float()  # noqa: E731
        return compute(x) if self.memo is None else self.memo(x, compute)

    def forward(self, x: Tensor) -> TargetOutput:
        return TargetOutput(self.fc(self.features(x)))


def build_probe(
    source: SourceConfig, mean: Sequence[float], std: Sequence[float], num_classes: int, chunk: int | None = None
) -> ProbeNet:
    """A probe on ``source`` for images normalised with ``mean``/``std`` (the target dataset's)."""
    return ProbeNet(build_source(source, mean, std), num_classes, chunk)


def is_probe_state(state: State) -> bool:
    """Whether ``state`` is a ProbeNet's (its frozen source bank is saved with the classifier)."""
    return any(k.startswith(BANK_PREFIX) for k in state)


@torch.no_grad()
def probe_from_run(source: dict, data_stats: tuple, state: State, what: str) -> ProbeNet:
    """The trained probe of a run: its ``sources[0]`` (a dict) and its saved weights ``state``."""
    try:
        cfg = SourceConfig(**source)
    except TypeError as exc:
        raise UserError(f"{what}: the run's sources[0] is not a source ({exc})") from exc
    num_classes = int(state["fc.weight"].shape[0])
    net = build_probe(cfg, *data_stats, num_classes)
    load_into(net, state, what)
    return net
