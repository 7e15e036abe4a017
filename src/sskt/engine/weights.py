"""The run's trained target, shipped through ``sskt.trained`` (``model.safetensors`` and ``model.json``)."""

from __future__ import annotations

from typing import Any

from torch import nn

from sskt.config import TrainConfig
from sskt.data.spec import DatasetSpec
from sskt.methods import Method
from sskt.rundir import RunDir
from sskt.trained import model_card, save_trained


def target_of(method: Method) -> nn.Module:
    """The run's headline network: the one evaluated under the empty prefix (FixMatch's weight average), else the
    first one the method trains."""
    return method.evaluated().get("") or next(iter(method.trained().values()))


def card_fields(method: Method, cfg: TrainConfig) -> dict[str, Any]:
    """The method's own card fields (``card_fields(cfg)``; a probe names its architecture and source), {} when it
    adds none."""
    fields = getattr(type(method), "card_fields", None)
    shipped = getattr(target_of(method), "card_fields", None)  # a network that ships more than weights (fused heads)
    return (fields(cfg) if fields is not None else {}) | (shipped() if shipped is not None else {})


def save_target(method: Method, cfg: TrainConfig, spec: DatasetSpec, run: RunDir) -> None:
    """Ship the network inference needs: the target without its auxiliary heads (they stay in the training
    checkpoint, ``checkpoints/last.pt``) and its card."""
    card = model_card(cfg, spec, card_fields(method, cfg))
    save_trained(target_of(method), card, run, method.aux_classes)
