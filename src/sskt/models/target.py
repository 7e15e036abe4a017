"""The target network: a backbone, its primary classifier, and one auxiliary head per source.

The auxiliary heads only serve training; a trained Target's weights load into a plain Target (no auxiliary heads)
with ``strict=False``, and ``primary_state_dict`` gives the weights without them, for export or as a KD teacher.
"""

from __future__ import annotations

import re

import torch.nn.functional as F
from torch import Tensor, nn

from sskt.config import HeadConfig, ModelConfig
from sskt.errors import UserError
from sskt.models.base import MODELS, Backbone, TargetOutput
from sskt.models.heads import build_head

AUX_PREFIX = "aux."


def module_key(name: str, taken: set[str]) -> str:
    """A ModuleDict key for a source name: source names hold '.' and ':', which module names may not; the 'src_'
    prefix keeps keys clear of ModuleDict's own attributes (a source called 'items' stays valid)."""
    key = "src_" + re.sub(r"\W", "_", name)
    unique, n = key, 1
    while unique in taken:
        n += 1
        unique = f"{key}_{n}"
    return unique


class Target(nn.Module):
    """``backbone`` + primary ``fc`` on the globally average-pooled last stage + ``aux`` heads keyed by source.

    ``aux_keys`` maps each source name to its key in the ``aux`` ModuleDict.
    """

    def __init__(self, backbone: Backbone, num_classes: int, aux_heads: dict[str, nn.Module] | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_classes = num_classes
        self.fc = nn.Linear(backbone.num_features, num_classes)
        self.aux_keys: dict[str, str] = {}
        for name in aux_heads or {}:
            self.aux_keys[name] = module_key(name, set(self.aux_keys.values()))
        self.aux = nn.ModuleDict({self.aux_keys[n]: head for n, head in (aux_heads or {}).items()})

    def features(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        """[B, 3, H, W] -> (every stage output [B, C_i, H_i, W_i], pooled last stage [B, num_features])."""
        stages = self.backbone.forward_stages(x)
        if stages[-1].dim() == 5:  # a clip: pool over time and space
            return stages, stages[-1].mean(dim=(2, 3, 4))
        return stages, F.adaptive_avg_pool2d(stages[-1], 1).flatten(1)

    def forward(self, x: Tensor, with_aux: bool = True) -> TargetOutput:
        """[B, 3, H, W] -> TargetOutput(logits [B, num_classes], aux_logits {source: [B, C_m]}); ``with_aux=False``
        skips the auxiliary heads (evaluation, export)."""
        stages, pooled = self.features(x)
        aux = {}
        if with_aux:
            aux = {name: self.aux[key](stages, pooled) for name, key in self.aux_keys.items()}
        return TargetOutput(self.fc(pooled), aux)

    def primary_state_dict(self) -> dict[str, Tensor]:
        """The weights of backbone and primary classifier only (what inference needs), without the aux heads."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(AUX_PREFIX)}


def build_target(model: ModelConfig, num_classes: int, aux_classes: dict[str, int], head: HeadConfig) -> Target:
    """The target ``model.name`` with ``num_classes`` primary outputs and one ``head.kind`` head per source, sized
    ``aux_classes[source]``. Unknown names or kinds raise a UserError listing the valid ones."""
    backbone = MODELS.create(model.name, pretrained=model.pretrained)
    if not isinstance(backbone, Backbone):
        raise TypeError(f"model {model.name!r} built a {type(backbone).__name__}, not a Backbone")
    if num_classes < 1 or any(c < 1 for c in aux_classes.values()):
        raise UserError(f"class counts must be positive, got num_classes={num_classes}, aux_classes={aux_classes}")
    heads = {
        name: build_head(head, backbone.feature_info, backbone.family, classes) for name, classes in aux_classes.items()
    }
    return Target(backbone, num_classes, heads)
