"""Any timm model with ``features_only`` support as a backbone, by the name ``timm:<model>``.

timm is an optional dependency (the ``timm`` extra) and is imported only when such a model is built.
Stage channels and strides come from timm's own ``feature_info`` declaration.
"""

from __future__ import annotations

from torch import Tensor, nn

from sskt.errors import UserError, install_hint
from sskt.models.base import MODELS, Backbone, StageInfo

# What timm raises when a model cannot be wrapped with features_only (no feature_info or no stage hooks).
_FEATURE_ERRORS = (RuntimeError, AssertionError, AttributeError, KeyError, TypeError, NotImplementedError)


class TimmBackbone(Backbone):
    """A timm ``features_only`` network; one stage per entry of its ``feature_info``."""

    family = "imagenet"

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        info = net.feature_info
        self.feature_info = [StageInfo(c, r) for c, r in zip(info.channels(), info.reduction(), strict=True)]

    def forward_stages(self, x: Tensor) -> list[Tensor]:
        """[B, 3, H, W] -> one [B, C_i, H / r_i, W / r_i] per stage."""
        return list(self.net(x))


def _import_timm():  # noqa: ANN202 - returns the timm module
    try:
        import timm
    except ImportError as err:
        raise UserError(f"timm models need the optional package timm: {install_hint('timm')}") from err
    return timm


@MODELS.register_prefix("timm:")
def build_timm(name: str, pretrained: bool = False) -> TimmBackbone:
    """The timm model ``name`` with ``features_only=True`` (ImageNet weights from the Hugging Face hub when
    ``pretrained``)."""
    timm = _import_timm()
    if not timm.is_model(name):
        raise UserError(f"unknown timm model {name!r}; see timm.list_models('*pattern*') for valid names")
    try:
        net = timm.create_model(name, pretrained=pretrained, features_only=True)
    except OSError as err:
        raise UserError(
            f"could not fetch timm weights for {name} ({type(err).__name__}); download them where the Hugging Face "
            "hub cache can find them (HF_HOME) or set model.pretrained=false"
        ) from err
    except _FEATURE_ERRORS as err:
        raise UserError(f"timm model {name!r} does not expose feature_info (features_only=True failed: {err})") from err
    return TimmBackbone(net)
