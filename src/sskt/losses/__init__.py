"""Loss functions: pure functions of logits, each docstring giving its formula and paper.

``aux_loss(name)`` and ``primary_loss(name)`` turn config names into functions: auxiliary losses are called as
``fn(aux_logits [B, C], source_logits [B, C], T) -> scalar``, primary losses as ``fn(logits [B, K], labels)``.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from sskt.errors import choice_error
from sskt.losses.primary import bce, cross_entropy, focal
from sskt.losses.soft import focal_soft, kd, kd_legacy, sigmoid_kd, soft_ce

# The primary focal loss under a name that cannot be confused with the soft-target one.
focal_primary = focal

AUX_LOSSES: dict[str, Callable[[Tensor, Tensor, float], Tensor]] = {
    "ce": soft_ce,
    "kd": kd,
    "kd_legacy": kd_legacy,
    "focal": focal_soft,
}
PRIMARY_LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"ce": cross_entropy, "focal": focal, "bce": bce}


def aux_loss(name: str) -> Callable[[Tensor, Tensor, float], Tensor]:
    """The auxiliary loss called ``name`` ('ce', 'kd', 'kd_legacy', 'focal'); unknown names raise a UserError."""
    if name not in AUX_LOSSES:
        raise choice_error("auxiliary loss", name, AUX_LOSSES)
    return AUX_LOSSES[name]


def primary_loss(name: str) -> Callable[[Tensor, Tensor], Tensor]:
    """The primary loss called ``name`` ('ce', 'focal', 'bce'); unknown names raise a UserError."""
    if name not in PRIMARY_LOSSES:
        raise choice_error("primary loss", name, PRIMARY_LOSSES)
    return PRIMARY_LOSSES[name]


__all__ = [
    "AUX_LOSSES",
    "PRIMARY_LOSSES",
    "aux_loss",
    "bce",
    "cross_entropy",
    "focal",
    "focal_primary",
    "focal_soft",
    "kd",
    "kd_legacy",
    "primary_loss",
    "sigmoid_kd",
    "soft_ce",
]
