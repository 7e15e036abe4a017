"""Primary (label) losses of the target: logits [B, K] against hard labels int64 [B] or multi-hot float [B, K]."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy for single-label tasks: ``mean_b -log softmax(z_b)_{y_b}``. logits [B, K], labels int64 [B]."""
    return F.cross_entropy(logits, labels)


def focal(logits: Tensor, labels: Tensor, gamma: float = 2.0) -> Tensor:
    """Focal loss on hard labels (Lin, Goyal, Girshick, He, Dollar 2017, "Focal Loss for Dense Object Detection"):

        L = mean_b -(1 - p_b)^gamma * log p_b,   p_b = softmax(z_b)_{y_b}

    logits [B, K], labels int64 [B]; gamma = 0 is cross-entropy.
    """
    log_p = F.log_softmax(logits, dim=1).gather(1, labels[:, None]).squeeze(1)
    return -((1 - log_p.exp()).pow(gamma) * log_p).mean()


def bce(logits: Tensor, targets: Tensor) -> Tensor:
    """Binary cross-entropy with logits for multi-label tasks (Pascal VOC in SSKT, Hong et al. WACV 2022):

        L = mean_{b,k} -[y_bk * log sigmoid(z_bk) + (1 - y_bk) * log(1 - sigmoid(z_bk))]

    logits [B, K], targets float multi-hot [B, K]; entries of -1 (a class ignored for that image, VOC's difficult
    objects under ``data.voc_difficult: ignore``) are left out of the mean.
    """
    # Masked always: asking whether any entry is -1 would make the host wait for the device at every step.
    keep = (targets >= 0).to(logits.dtype)
    per = F.binary_cross_entropy_with_logits(logits, targets.clamp(min=0).to(logits.dtype), reduction="none")
    return (per * keep).sum() / keep.sum().clamp(min=1)
