"""Target networks by name: CIFAR ResNets, torchvision and timm backbones, EfficientNet-Lite0.

``MODELS.create(name, pretrained=...)`` builds a ``Backbone``; ``build_target`` adds the primary classifier and one
auxiliary head per source. Importing this package registers every model.
"""

from sskt.models.base import Backbone, StageInfo, TargetOutput
from sskt.registry import Registry

MODELS: Registry[Backbone] = Registry("model")

# Imported after MODELS exists: each module registers its models into it.
from sskt.models import cifar_resnet, efficientnet_lite, timm_nets, torchvision_nets  # noqa: E402, F401
from sskt.models.heads import LinearHead, TransferModule, build_head  # noqa: E402
from sskt.models.target import Target, build_target  # noqa: E402

__all__ = [
    "MODELS",
    "Backbone",
    "LinearHead",
    "StageInfo",
    "Target",
    "TargetOutput",
    "TransferModule",
    "build_head",
    "build_target",
]
