"""ImageNet-style torchvision classifiers as backbones: ResNet18-152, VGG16-BN, MobileNetV2, DenseNet121.

Each network is cut into stages that end where the resolution changes (the last stage ends at the feature the
torchvision classifier would read); the torchvision classifier itself is dropped, because the ``Target`` owns its
own primary classifier on the pooled last stage. Stage channels and strides are measured once, by a dry forward.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from sskt.errors import UserError
from sskt.models.base import MODELS, Backbone, StageInfo

if TYPE_CHECKING:  # imported where a network is built: importing torchvision costs over a second (torch._dynamo)
    import torchvision

# Side of the dry-forward probe: divisible by 32 (the deepest stride) and large enough for every stem.
PROBE_SIZE = 64


class StagedBackbone(Backbone):
    """A backbone given as a list of stage modules run in sequence; ``feature_info`` is measured at construction."""

    family = "imagenet"

    def __init__(self, stages: list[nn.Module]) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.feature_info = self._measure()

    @torch.no_grad()
    def _measure(self) -> list[StageInfo]:
        # Eval mode so the probe leaves BatchNorm running statistics untouched.
        was_training = self.training
        self.eval()
        outs = self.forward_stages(torch.zeros(1, 3, PROBE_SIZE, PROBE_SIZE))
        self.train(was_training)
        return [StageInfo(o.shape[1], PROBE_SIZE // o.shape[-1]) for o in outs]

    def forward_stages(self, x: Tensor) -> list[Tensor]:
        """[B, 3, H, W] -> one [B, C_i, H / r_i, W / r_i] per stage."""
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs


def resnet_stages(net: torchvision.models.ResNet) -> list[nn.Module]:
    """Stem + layer1, then layer2, layer3, layer4 (strides 4, 8, 16, 32)."""
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1)
    return [stem, net.layer2, net.layer3, net.layer4]


def vgg_stages(net: nn.Module) -> list[nn.Module]:
    """The five conv blocks, each ending with its max-pool (strides 2 ... 32)."""
    stages, current = [], []
    for module in net.features:
        current.append(module)
        if isinstance(module, nn.MaxPool2d):
            stages.append(nn.Sequential(*current))
            current = []
    return stages


def mobilenet_v2_stages(net: torchvision.models.MobileNetV2) -> list[nn.Module]:
    """Strides 2, 4, 8, 16, 32; the last stage ends with the 1280-channel 1x1 conv the classifier reads."""
    f = net.features
    cuts = [(0, 2), (2, 4), (4, 7), (7, 14), (14, len(f))]
    return [nn.Sequential(*f[a:b]) for a, b in cuts]


def densenet_stages(net: torchvision.models.DenseNet) -> list[nn.Module]:
    """Each dense block with the transition before it (strides 4, 8, 16, 32); the last ends with norm5 + ReLU,
    the feature torchvision's classifier reads."""
    f = net.features
    return [
        nn.Sequential(f.conv0, f.norm0, f.relu0, f.pool0, f.denseblock1),
        nn.Sequential(f.transition1, f.denseblock2),
        nn.Sequential(f.transition2, f.denseblock3),
        nn.Sequential(f.transition3, f.denseblock4, f.norm5, nn.ReLU(inplace=True)),
    ]


SPLITTERS: dict[str, Callable[[nn.Module], list[nn.Module]]] = {
    "resnet18": resnet_stages,
    "resnet34": resnet_stages,
    "resnet50": resnet_stages,
    "resnet101": resnet_stages,
    "resnet152": resnet_stages,
    "vgg16_bn": vgg_stages,
    "mobilenet_v2": mobilenet_v2_stages,
    "densenet121": densenet_stages,
}


def load_torchvision(name: str, pretrained: bool) -> nn.Module:
    """The torchvision classifier ``name``, with its DEFAULT ImageNet weights when ``pretrained`` (downloads once
    into the torch hub cache); an offline failure raises a one-line UserError saying where to put the file."""
    import torchvision

    if not pretrained:
        return torchvision.models.get_model(name, weights=None)
    weights = torchvision.models.get_model_weights(name).DEFAULT
    try:
        return torchvision.models.get_model(name, weights=weights)
    except (OSError, RuntimeError) as err:  # URLError is an OSError; a truncated file fails as RuntimeError
        target = f"{torch.hub.get_dir()}/checkpoints/{weights.url.rsplit('/', 1)[-1]}"
        reason = (str(err).splitlines() or [""])[0]  # the message stays one line
        raise UserError(
            f"could not fetch torchvision weights for {name} ({type(err).__name__}: {reason}); "
            f"download {weights.url} and place it at {target}"
        ) from err


def vgg16_bn_features() -> nn.Module:
    """A randomly initialised VGG16-BN without its classifier, initialised as torchvision does.

    Building the full torchvision VGG would draw a 25088 x 4096 classifier (102M parameters, seconds on a CPU) only
    to drop it.
    """
    import torchvision

    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"], batch_norm=True)
    for m in features.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return nn.ModuleDict({"features": features})


def build_torchvision(name: str, pretrained: bool = False) -> StagedBackbone:
    """A torchvision classifier cut into stages, its classifier dropped."""
    net = vgg16_bn_features() if name == "vgg16_bn" and not pretrained else load_torchvision(name, pretrained)
    return StagedBackbone(SPLITTERS[name](net))


for _name in SPLITTERS:
    MODELS.register(_name)(partial(build_torchvision, _name))
