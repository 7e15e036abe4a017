"""CIFAR ResNets (He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016, section 4.2).

A 3x3 stem with 16 channels, then 3 stages of ``n`` basic blocks with 16/32/64 channels at strides 1/2/2, so the
network has ``6n + 2`` layers (ResNet20: n = 3). Shortcuts are option A: identity, and where the shape changes a
strided subsample with zero-padded extra channels, so shortcuts add no parameters. With a 10-class linear classifier
the networks have 0.27M / 0.46M / 0.66M / 0.85M / 1.7M parameters (ResNet20/32/44/56/110), as in the paper.
"""

from __future__ import annotations

from functools import partial

import torch.nn.functional as F
from torch import Tensor, nn

from sskt.errors import UserError
from sskt.models.base import MODELS, Backbone, StageInfo

STAGE_CHANNELS = (16, 32, 64)
DEPTHS = (20, 32, 44, 56, 110)


class PadShortcut(nn.Module):
    """Option-A shortcut: keep every ``stride``-th pixel and pad the new channels with zeros (no parameters)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra = out_channels - in_channels

    def forward(self, x: Tensor) -> Tensor:
        """[B, C_in, H, W] -> [B, C_out, H / stride, W / stride]."""
        x = x[:, :, :: self.stride, :: self.stride]
        # Split the padding evenly before and after the existing channels, as the original Torch code did.
        half = self.extra // 2
        return F.pad(x, (0, 0, 0, 0, half, self.extra - half))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a ReLU between them and after the residual sum."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        reshape = stride != 1 or in_channels != out_channels
        self.shortcut = PadShortcut(in_channels, out_channels, stride) if reshape else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """[B, C_in, H, W] -> [B, C_out, H / stride, W / stride]."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(Backbone):
    """ResNet for 32 px inputs with ``depth = 6n + 2`` layers; stages at strides 1, 2 and 4."""

    family = "cifar"

    def __init__(self, depth: int) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2, got {depth}")
        blocks = (depth - 2) // 6
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True))
        stages, in_channels = [], 16
        for i, channels in enumerate(STAGE_CHANNELS):
            first_stride = 1 if i == 0 else 2
            layers = [
                BasicBlock(in_channels if j == 0 else channels, channels, first_stride if j == 0 else 1)
                for j in range(blocks)
            ]
            stages.append(nn.Sequential(*layers))
            in_channels = channels
        self.stages = nn.ModuleList(stages)
        self.feature_info = [StageInfo(c, 2**i) for i, c in enumerate(STAGE_CHANNELS)]
        self._init_weights()

    def _init_weights(self) -> None:
        # He et al. initialise convolutions with the fan-out Kaiming normal and BN to identity.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_stages(self, x: Tensor) -> list[Tensor]:
        """[B, 3, H, W] -> [[B, 16, H, W], [B, 32, H/2, W/2], [B, 64, H/4, W/4]]."""
        x = self.stem(x)
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs


def build_cifar_resnet(depth: int, pretrained: bool = False) -> CifarResNet:
    """A CIFAR ResNet of the given depth; there are no pretrained weights for these."""
    if pretrained:
        raise UserError(f"resnet{depth} (CIFAR) has no pretrained weights; set model.pretrained=false")
    return CifarResNet(depth)


for _depth in DEPTHS:
    MODELS.register(f"resnet{_depth}")(partial(build_cifar_resnet, _depth))
