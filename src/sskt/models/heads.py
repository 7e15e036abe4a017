"""Auxiliary heads, one per source, sized from the backbone's declared stages (METHOD.md section 3).

Every head is called as ``head(stages, pooled)`` with all stage outputs of the backbone and the globally
average-pooled last stage, and returns logits ``[B, num_classes]``.
"""

from __future__ import annotations

from typing import get_args

from torch import Tensor, nn

from sskt.config import HeadConfig, HeadKind
from sskt.errors import UserError, check_choice
from sskt.models.base import StageInfo

HEAD_KINDS = get_args(HeadKind)
# Transfer-module width W by backbone family (Hong et al. 2022: 64 for CIFAR ResNets, 1000 for ImageNet-style).
DEFAULT_TM_WIDTH = {"cifar": 64, "imagenet": 1000, "video": 1000}
CONV = {2: (nn.Conv2d, nn.BatchNorm2d, nn.AdaptiveAvgPool2d), 3: (nn.Conv3d, nn.BatchNorm3d, nn.AdaptiveAvgPool3d)}


class LinearHead(nn.Module):
    """``Linear(num_features, num_classes)`` on the same pooled final feature the primary classifier reads."""

    def __init__(self, num_features: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(num_features, num_classes)

    def forward(self, stages: list[Tensor], pooled: Tensor) -> Tensor:
        """pooled [B, num_features] -> logits [B, num_classes]; the stage maps are not used."""
        return self.fc(pooled)


def conv_bn_relu(in_channels: int, out_channels: int, kernel: int, stride: int = 1, dims: int = 2) -> list[nn.Module]:
    """A bias-free conv, BatchNorm and ReLU ("same" padding for odd kernels), 2D or 3D (clips)."""
    conv, bn, _ = CONV[dims]
    return [conv(in_channels, out_channels, kernel, stride, kernel // 2, bias=False), bn(out_channels), nn.ReLU(True)]


def bottleneck_branch(in_channels: int, width: int, dims: int = 2) -> nn.Sequential:
    """``1x1 conv -> BN -> ReLU -> 3x3 conv stride 2 -> BN -> ReLU -> 1x1 conv -> BN -> ReLU -> global avg pool``
    with mid width ``width // 2``: [B, in_channels, H, W] -> [B, width]; with ``dims`` 3 the convolutions are 3D
    (3x3x3, stride 2 in time and space) and the pool runs over time and space, for clips."""
    mid = max(width // 2, 1)
    return nn.Sequential(
        *conv_bn_relu(in_channels, mid, 1, dims=dims),
        *conv_bn_relu(mid, mid, 3, stride=2, dims=dims),
        *conv_bn_relu(mid, width, 1, dims=dims),
        CONV[dims][2](1),
        nn.Flatten(),
    )


class TransferModule(nn.Module):
    """The transfer module of SSKT (Hong, Yoon, Choi, Kim, WACV 2022): one bottleneck branch per selected stage, the
    pooled branch vectors averaged (as the released code does; the paper says summed), then ``Linear(W, C_m)``."""

    def __init__(
        self, stages: list[StageInfo], width: int, num_classes: int, indices: list[int] | None = None, dims: int = 2
    ) -> None:
        super().__init__()
        self.indices = select_stages(len(stages), indices)
        self.branches = nn.ModuleList(bottleneck_branch(stages[i].channels, width, dims) for i in self.indices)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, stages: list[Tensor], pooled: Tensor) -> Tensor:
        """stages[i] [B, C_i, H_i, W_i] -> logits [B, num_classes]; ``pooled`` is not used."""
        vectors = [branch(stages[i]) for i, branch in zip(self.indices, self.branches, strict=True)]
        return self.fc(sum(vectors) / len(vectors))


def select_stages(num_stages: int, indices: list[int] | None) -> list[int]:
    """The stage indices a transfer module reads (None = all); a bad index raises a UserError listing valid ones.

    Negative indices count from the last stage, as in Python.
    """
    if indices is None:
        return list(range(num_stages))
    valid = ", ".join(str(i) for i in range(num_stages))
    if not indices:
        raise UserError(f"head.stages is empty; valid stage indices: {valid}")
    chosen = []
    for index in indices:
        if not -num_stages <= index < num_stages:
            raise UserError(f"unknown head stage index {index}; valid stage indices: {valid}")
        chosen.append(index % num_stages)
    return sorted(set(chosen))


def build_head(cfg: HeadConfig, feature_info: list[StageInfo], family: str, num_classes: int) -> nn.Module:
    """An auxiliary head of kind ``cfg.kind`` with ``num_classes`` outputs for a backbone with these stages."""
    check_choice("head kind", cfg.kind, HEAD_KINDS)
    if cfg.kind == "linear":
        return LinearHead(feature_info[-1].channels, num_classes)
    width = cfg.width if cfg.width is not None else DEFAULT_TM_WIDTH.get(family, DEFAULT_TM_WIDTH["imagenet"])
    if width < 2:
        raise UserError(f"head.width must be at least 2 (mid width W/2), got {width}")
    return TransferModule(feature_info, width, num_classes, cfg.stages, dims=3 if family == "video" else 2)
