"""ImageNet classifiers as sources: every torchvision classifier and timm (``timm:<name>``).

The name of a torchvision source says which ImageNet weights it carries:

- ``<arch>.imagenet``: torchvision's DEFAULT weights today (for ResNet50 ``IMAGENET1K_V2``, 80.86% top-1, trained
  with label smoothing, mixup and cutmix, so its soft labels are calibrated differently);
- ``<arch>.imagenet_v1``: the original ``IMAGENET1K_V1`` weights (ResNet50: 76.13%, ``resnet50-0676ba61.pth``),
  what ``resnet50(pretrained=True)`` loaded in the authors' released code. The faithful presets use these.

The URL, mean/std and crop size come from the weights API; the architecture is built without weights and the state
dict loaded with ``weights_only=True`` (from the download, or from a local file or URL given as the source's
``weights``).
"""

from __future__ import annotations

import difflib
from functools import partial
from typing import Any

from sskt.errors import UserError, choice_error, install_hint
from sskt.sources.base import SOURCES, Pretrained
from sskt.sources.weights import load_into, load_weights

# Shown by name in `sskt list sources`; every other torchvision classifier works as '<arch>.imagenet' too.
LISTED_TORCHVISION = ("resnet18", "resnet34", "resnet50", "vgg16")
LISTED_NEWER_DEFAULT = ("resnet50",)
"""The listed architectures whose DEFAULT weights are not IMAGENET1K_V1, so '<arch>.imagenet_v1' is listed too.
Spelled out because registering must not import torchvision (over a second: torch._dynamo), which every command
that loads a trained network would pay; tests/test_startup.py checks it against torchvision."""

WEIGHT_TAGS = {"imagenet": "DEFAULT", "imagenet_v1": "IMAGENET1K_V1"}
"""Source-name suffix -> torchvision weights entry."""


def torchvision_archs() -> list[str]:
    """Names of torchvision's ImageNet classifiers (detection, segmentation and video models excluded)."""
    import torchvision

    return torchvision.models.list_models(module=torchvision.models)


def _builder_kwargs(arch: str, weights: Any) -> dict[str, Any]:
    """What torchvision's builders set when they load pretrained weights, so the state dict fits."""
    kwargs: dict[str, Any] = {"num_classes": len(weights.meta["categories"])}
    if arch in ("googlenet", "inception_v3"):
        # Their ported weights expect the builder's internal re-normalisation and come with the aux classifiers.
        kwargs.update(transform_input=True, aux_logits=True, init_weights=False)
    if arch.startswith("vit_"):
        kwargs["image_size"] = weights.meta["min_size"][0]  # vit_h_14's SWAG weights run at 518 px
    return kwargs


def torchvision_weights(arch: str, tag: str = "DEFAULT") -> Any:
    """The torchvision weights entry ``tag`` ('DEFAULT', 'IMAGENET1K_V1', ...) of ``arch``; unknown architectures and
    entries are UserErrors naming the valid ones."""
    archs = torchvision_archs()
    if arch not in archs:
        raise choice_error("torchvision ImageNet architecture", arch, archs)
    import torchvision

    entries = torchvision.models.get_model_weights(arch)
    if tag == "DEFAULT":
        return entries.DEFAULT
    if tag not in entries.__members__:
        raise choice_error(f"torchvision weights of {arch}", tag, list(entries.__members__))
    return entries[tag]


def torchvision_source(arch: str, weights: str | None = None, suffix: str = "imagenet") -> Pretrained:
    """torchvision ``arch`` with the ImageNet weights its suffix names (``WEIGHT_TAGS``), or ``weights``: a local
    file or URL holding them."""
    entry = torchvision_weights(arch, WEIGHT_TAGS[suffix])
    import torchvision

    net = torchvision.models.get_model(arch, weights=None, **_builder_kwargs(arch, entry))
    what = f"source '{arch}.{suffix}' ({entry.name})"
    load_into(net, load_weights(weights, entry.url, what), what)
    tf = entry.transforms()
    return Pretrained(net, tuple(tf.mean), tuple(tf.std), len(entry.meta["categories"]), tf.crop_size[0])


for _suffix in WEIGHT_TAGS:
    SOURCES.register_suffix(f".{_suffix}", label="<torchvision arch>")(partial(torchvision_source, suffix=_suffix))
for _arch in LISTED_TORCHVISION:
    SOURCES.register(f"{_arch}.imagenet")(partial(torchvision_source, _arch))
    if _arch in LISTED_NEWER_DEFAULT:
        SOURCES.register(f"{_arch}.imagenet_v1")(partial(torchvision_source, _arch, suffix="imagenet_v1"))


def _import_timm() -> Any:
    try:
        import timm
    except ImportError as exc:
        raise UserError(f"timm sources need timm: {install_hint('timm')}") from exc
    return timm


@SOURCES.register_prefix("timm:")
def timm_source(name: str, weights: str | None = None) -> Pretrained:
    """timm model ``name`` with its pretrained weights (timm's download), or with ``weights``: a local file or a URL,
    which is then what loads (downloaded through torch's hub cache and read with ``weights_only=True``), never
    timm's own hub weights. Mean, std and size come from timm's data config for the model."""
    timm = _import_timm()
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5)
        raise UserError(f"unknown timm model {name!r}; valid choices: timm.list_models() (closest: {', '.join(close)})")
    what = f"source 'timm:{name}'"
    if weights is not None:
        net = load_into(timm.create_model(name, pretrained=False), load_weights(weights, None, what), what)
    else:
        try:
            net = timm.create_model(name, pretrained=True)
        except Exception as exc:  # offline hub, missing weights: several error types
            raise UserError(
                f"could not fetch the pretrained weights of {what} ({type(exc).__name__}); without network, pass a "
                "local weights file as the source's weights=<path>"
            ) from exc
    data = timm.data.resolve_model_data_config(net)
    return Pretrained(net, tuple(data["mean"]), tuple(data["std"]), net.num_classes, data["input_size"][-1])
