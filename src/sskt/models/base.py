"""What every target network declares and returns."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor, nn

from sskt.registry import Registry


@dataclass(frozen=True)
class StageInfo:
    """One tappable backbone stage: its output channels and its stride relative to the input."""

    channels: int
    reduction: int


@dataclass
class TargetOutput:
    """A target's forward result: primary logits [B, num_classes] and auxiliary logits per source name [B, C_m]."""

    logits: Tensor
    aux_logits: dict[str, Tensor] = field(default_factory=dict)


class Backbone(nn.Module):
    """A feature extractor that declares its stages once.

    Subclasses set ``feature_info`` (one ``StageInfo`` per stage, in order) and ``family`` ('cifar' for the CIFAR
    ResNets, 'imagenet' for ImageNet-style backbones; it picks the transfer module's default width) and implement
    ``forward_stages``. The pooled final feature is the global average of the last stage, ``num_features`` wide.
    """

    feature_info: list[StageInfo]
    family: str = "imagenet"

    @property
    def num_features(self) -> int:
        return self.feature_info[-1].channels

    def forward_stages(self, x: Tensor) -> list[Tensor]:
        """Every stage's output, in order: ``[B, feature_info[i].channels, H_i, W_i]``."""
        raise NotImplementedError


MODELS: Registry[Backbone] = Registry("model")
"""Target backbones by name; each model module registers into it when ``sskt.models`` is imported."""
