"""Target networks by name: CIFAR ResNets, torchvision and timm backbones, EfficientNet-Lite0.

``MODELS.create(name, pretrained=...)`` builds a ``Backbone``; ``build_target`` adds the primary classifier and one
auxiliary head per source. Importing this package registers every model.
"""

# Each model module registers its models into MODELS (defined in base.py) when imported.
from sskt.models import cifar_resnet, efficientnet_lite, timm_nets, torchvision_nets, video_nets  # noqa: F401
from sskt.models.base import MODELS, Backbone, StageInfo, TargetOutput
from sskt.models.heads import LinearHead, TransferModule, build_head
from sskt.models.target import Target, build_target

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
