"""3D ResNets for clips ``[B, 3, T, H, W]`` (../docs METHOD.md section 11): the paper's Hara-style 3D ResNet18
(Hara, Kataoka, Satoh, CVPR 2018: a 7x7x7 stem conv and a max-pool, option-A shortcuts), a Hara-style 3D ResNet50
(bottlenecks, projection shortcuts) for DML's peer, and torchvision's ``r3d_18`` (a 3x7x7 stem, no max-pool), whose
``pretrained`` weights are Kinetics-400's, for fine-tuning.

Each is a ``Backbone`` of four stages whose ``feature_info`` (channels, spatial stride) is measured by a dry forward,
so a linear auxiliary head sizes itself; the ``Target`` pools the last stage over time and space.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sskt.errors import UserError
from sskt.models.base import MODELS, Backbone, StageInfo

VIDEO_MODELS = ("resnet3d_18", "resnet3d_50", "r3d_18")
"""The registered 3D targets (they take clips [B, 3, T, H, W])."""
PROBE = (16, 64)
"""Frames and side of the dry-forward probe: 16 frames survive the Hara nets' temporal strides (16x)."""


class VideoBackbone(Backbone):
    """Stages run in sequence on clips; ``feature_info`` measured at construction (reduction: spatial stride)."""

    family = "video"

    def __init__(self, stages: list[nn.Module]) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)
        with torch.no_grad():
            was = self.training
            self.eval()
            outs = self.forward_stages(torch.zeros(1, 3, PROBE[0], PROBE[1], PROBE[1]))
            self.train(was)
        self.feature_info = [StageInfo(o.shape[1], PROBE[1] // o.shape[-1]) for o in outs]

    def forward_stages(self, x: Tensor) -> list[Tensor]:
        """[B, 3, T, H, W] -> one [B, C_i, T_i, H_i, W_i] per stage."""
        if x.dim() != 5:
            raise ValueError(f"a 3D network takes clips [B, 3, T, H, W], got {list(x.shape)}")
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs


class PadShortcut3d(nn.Module):
    """Option-A shortcut in 3D: strided subsampling in time and space, new channels zero-padded (Hara's 'A')."""

    def __init__(self, extra: int, stride: int) -> None:
        super().__init__()
        self.extra, self.stride = extra, stride

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, 0, 0, self.extra))


class Basic3d(nn.Module):
    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(cout)
        self.conv2 = nn.Conv3d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm3d(cout)
        self.shortcut = _shortcut(cin, cout, stride, shortcut)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class Bottleneck3d(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int, shortcut: str) -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1, self.bn1 = nn.Conv3d(cin, width, 1, bias=False), nn.BatchNorm3d(width)
        self.conv2, self.bn2 = nn.Conv3d(width, width, 3, stride, 1, bias=False), nn.BatchNorm3d(width)
        self.conv3, self.bn3 = nn.Conv3d(width, cout, 1, bias=False), nn.BatchNorm3d(cout)
        self.shortcut = _shortcut(cin, cout, stride, shortcut)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        return F.relu(self.bn3(self.conv3(out)) + self.shortcut(x))


def _shortcut(cin: int, cout: int, stride: int, kind: str) -> nn.Module:
    if stride == 1 and cin == cout:
        return nn.Identity()
    if kind == "A":
        return PadShortcut3d(cout - cin, stride)
    return nn.Sequential(nn.Conv3d(cin, cout, 1, stride, bias=False), nn.BatchNorm3d(cout))


def hara_resnet(block: type, layers: list[int], shortcut: str) -> VideoBackbone:
    """Hara et al.'s 3D ResNet: conv 7x7x7 stride (1, 2, 2), BN, ReLU, max-pool 3 stride 2, then four layers at
    widths 64-512 (layers 2-4 halve time and space)."""
    stem = nn.Sequential(
        nn.Conv3d(3, 64, 7, (1, 2, 2), 3, bias=False), nn.BatchNorm3d(64), nn.ReLU(inplace=True),
        nn.MaxPool3d(3, 2, 1),
    )  # fmt: skip
    stages, cin = [], 64
    for i, (width, count) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
        blocks = []
        for j in range(count):
            blocks.append(block(cin, width, 2 if (i > 0 and j == 0) else 1, shortcut))
            cin = width * block.expansion
        stages.append(nn.Sequential(*blocks))
    stages[0] = nn.Sequential(stem, stages[0])
    backbone = VideoBackbone(stages)
    for m in backbone.modules():
        if isinstance(m, nn.Conv3d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return backbone


def _no_weights(name: str, pretrained: bool) -> None:
    if pretrained:
        raise UserError(f"model {name!r} has no pretrained weights in sskt (r3d_18 has Kinetics-400's)")


@MODELS.register("resnet3d_18")
def resnet3d_18(pretrained: bool = False) -> VideoBackbone:
    """The paper's 3D ResNet18 (Hara et al.; option-A shortcuts), randomly initialised."""
    _no_weights("resnet3d_18", pretrained)
    return hara_resnet(Basic3d, [2, 2, 2, 2], "A")


@MODELS.register("resnet3d_50")
def resnet3d_50(pretrained: bool = False) -> VideoBackbone:
    """Hara et al.'s 3D ResNet50 (bottlenecks, projection shortcuts): DML's peer in the paper."""
    _no_weights("resnet3d_50", pretrained)
    return hara_resnet(Bottleneck3d, [3, 4, 6, 3], "B")


@MODELS.register("r3d_18")
def r3d_18(pretrained: bool = False) -> VideoBackbone:
    """torchvision's R3D-18 (3x7x7 stem, no max-pool); ``pretrained`` loads its Kinetics-400 weights."""
    from torchvision.models.video import R3D_18_Weights
    from torchvision.models.video import r3d_18 as build

    weights = R3D_18_Weights.KINETICS400_V1 if pretrained else None
    try:
        net = build(weights=weights)
    except (OSError, RuntimeError) as err:
        raise UserError(f"could not fetch r3d_18's Kinetics-400 weights ({type(err).__name__}): {weights.url}") from err
    return VideoBackbone([nn.Sequential(net.stem, net.layer1), net.layer2, net.layer3, net.layer4])
