"""Places365 scene classifiers (Zhou et al. 2017, "Places: A 10 Million Image Database for Scene Recognition"):
the CSAIL ResNet18/ResNet50 checkpoints, 365 classes, trained with the ImageNet mean/std at 224 px."""

from __future__ import annotations

from functools import partial

from sskt.sources.base import SOURCES, Pretrained
from sskt.sources.weights import load_into, load_weights

PLACES_URL = "http://places2.csail.mit.edu/models_places365/{arch}_places365.pth.tar"
PLACES_ARCHS = ("resnet18", "resnet50")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def places365_source(arch: str, weights: str | None = None) -> Pretrained:
    """torchvision ``arch`` with 365 outputs and the CSAIL weights (``weights``: a local copy or another URL).

    The CSAIL files are training checkpoints (``{'epoch', 'arch', 'state_dict', 'best_prec1'}``) saved from
    DataParallel, so the state dict is unwrapped and its ``module.`` prefix stripped.
    """
    what = f"source '{arch}.places365'"
    state = load_weights(weights, PLACES_URL.format(arch=arch), what)
    import torchvision  # here, not at the top: importing it costs over a second (torch._dynamo)

    net = load_into(torchvision.models.get_model(arch, weights=None, num_classes=365), state, what)
    return Pretrained(net, IMAGENET_MEAN, IMAGENET_STD, 365, 224)


for _arch in PLACES_ARCHS:
    SOURCES.register(f"{_arch}.places365")(partial(places365_source, _arch))
