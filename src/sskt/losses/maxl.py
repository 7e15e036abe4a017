"""The pieces of Meta Auxiliary Learning (Liu, Davison, Johns, "Self-Supervised Generalisation with Meta Auxiliary
Learning", NeurIPS 2019): the class-masked softmax of the label generator, focal loss on probabilities, and the
entropy regulariser that keeps generated labels from collapsing onto one auxiliary class.

Auxiliary classes are laid out per primary class: class ``c`` owns slots ``[c * psi, (c + 1) * psi)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

PAPER_MASK_FLOOR = 1e-8
"""The released code's mask value outside the true class's slots. It leaks ``1e-8 * exp(logit gap)`` of the mass
there, which grows as the generator's logits grow (1e-5 already at a gap of 14), so the default floor is 0: an exact
mask (the softmax gives those slots exactly zero mass and zero gradient; the true class always keeps psi >= 1
slots, so nothing divides by zero)."""


def class_mask(labels: Tensor, num_classes: int, psi: int, floor: float = 0.0) -> Tensor:
    """Mask M [B, num_classes * psi]: 1 on the ``psi`` auxiliary slots of each row's primary class, ``floor``
    elsewhere. ``labels`` int64 [B]."""
    slots = torch.arange(num_classes * psi, device=labels.device)
    owned = (slots.unsqueeze(0) // psi) == labels.unsqueeze(1)
    return torch.where(owned, 1.0, floor)


def masked_softmax(logits: Tensor, labels: Tensor, psi: int, floor: float = 0.0) -> Tensor:
    """Generated auxiliary label ``softmax(logits + log M)`` [B, C * psi] from generator logits [B, C * psi].

    Only the ``psi`` slots of the true class ``labels`` (int64 [B]) carry mass; with ``floor > 0``
    (``PAPER_MASK_FLOOR`` reproduces the released code) the rest get up to ``floor * exp(logit gap)`` of it.
    """
    if logits.shape[1] % psi:
        raise ValueError(f"generator output width {logits.shape[1]} is not a multiple of psi={psi}")
    mask = class_mask(labels, logits.shape[1] // psi, psi, floor).to(logits.dtype)
    return F.softmax(logits + mask.log(), dim=1)


def focal_to_probs(logits: Tensor, target: Tensor, gamma: float = 2.0) -> Tensor:
    """Focal loss on probabilities, as MAXL uses for both tasks: ``mean_b sum_c -p_c (1 - q_c)^gamma log q_c``.

    ``q = softmax(logits)`` [B, C] is the prediction; ``target`` is either int64 [B] class indices (p one-hot)
    or probabilities [B, C] (a generated label, gradients flow into it). Lin et al. 2017, "Focal Loss".
    """
    log_q = F.log_softmax(logits, dim=1)
    p = F.one_hot(target, logits.shape[1]).to(logits.dtype) if target.dim() == 1 else target
    return -(p * (1 - log_q.exp()) ** gamma * log_q).sum(dim=1).mean()


def label_entropy_penalty(gen_probs: Tensor) -> Tensor:
    """``sum_k pbar_k log pbar_k`` with ``pbar`` the batch-mean generated label (``gen_probs`` [B, K]).

    The negative entropy of the average label: adding it to the generator's loss pushes the batch's labels to use
    every auxiliary class (MAXL weighs it by 0.2). The 1e-20 guards log 0 for classes absent from the batch.
    """
    pbar = gen_probs.mean(dim=0)
    return (pbar * torch.log(pbar + 1e-20)).sum()
