"""Auxiliary (soft-target) losses between a head's logits and a frozen network's logits.

Notation: ``a`` the head's logits [B, C], ``s`` the source's (or teacher's) logits for the same images [B, C],
``T`` the temperature, ``softmax`` over the class dimension. Every loss returns a scalar and is a pure function:
pass the source logits as a constant (computed without autograd) so gradients reach only ``a``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def soft_ce(aux_logits: Tensor, source_logits: Tensor, T: float = 1.0) -> Tensor:
    """Soft-target cross-entropy, the SSKT auxiliary loss (Hong et al., WACV 2022, eq. 2):

        L = T^2 * mean_b sum_c -softmax(s_b / T)_c * log_softmax(a_b / T)_c

    ``aux_logits``, ``source_logits``: [B, C]. The T^2 factor keeps gradient magnitudes independent of T.
    """
    target = F.softmax(source_logits / T, dim=1)
    return -(target * F.log_softmax(aux_logits / T, dim=1)).sum(dim=1).mean() * (T * T)


def _kl_sum(student_logits: Tensor, teacher_logits: Tensor, T: float) -> Tensor:
    """sum_b sum_c KL terms: softmax(t/T)_c * (log_softmax(t/T)_c - log_softmax(z/T)_c)."""
    log_p = F.log_softmax(teacher_logits / T, dim=1)
    log_q = F.log_softmax(student_logits / T, dim=1)
    return F.kl_div(log_q, log_p, reduction="sum", log_target=True)


def kd(student_logits: Tensor, teacher_logits: Tensor, T: float = 1.0) -> Tensor:
    """Knowledge distillation (Hinton, Vinyals, Dean 2015, "Distilling the Knowledge in a Neural Network"):

        L = T^2 * (1/B) * sum_b KL(softmax(t_b / T) || softmax(z_b / T))

    ``student_logits`` z and ``teacher_logits`` t: [B, C]. Batchmean reduction: the gradient w.r.t. z equals that of
    ``soft_ce`` (the two differ by the teacher's entropy, a constant).
    """
    return _kl_sum(student_logits, teacher_logits, T) / student_logits.shape[0] * (T * T)


def kd_legacy(student_logits: Tensor, teacher_logits: Tensor, T: float = 1.0) -> Tensor:
    """The KD term as the released SSKT code computes it (``nn.KLDivLoss()`` with its default elementwise mean):

        L = T^2 * (1/(B*C)) * sum_b KL(softmax(t_b / T) || softmax(z_b / T))  =  kd / C

    ``student_logits``, ``teacher_logits``: [B, C]. C times weaker than ``kd`` (1000x for ImageNet sources, 365x for
    Places); needed only to reproduce the paper's KD rows (Hong et al., WACV 2022).
    """
    return _kl_sum(student_logits, teacher_logits, T) / student_logits.numel() * (T * T)


def focal_soft(aux_logits: Tensor, source_logits: Tensor, T: float = 1.0, *, gamma: float = 2.0) -> Tensor:
    """Focal loss with a soft target (Lin et al. 2017 "Focal Loss for Dense Object Detection", as MAXL uses it,
    Liu, Davison, Johns 2019):

        L = mean_b sum_c -p_c * (1 - q_c)^gamma * log q_c,   p = softmax(s / T),  q = softmax(a / T)

    ``aux_logits``, ``source_logits``: [B, C]. ``T`` comes third so every auxiliary loss is called as
    ``fn(a, s, T)``; the method's default T = 1 gives the paper's form. ``gamma`` = 2 in the MAXL comparison rows.
    """
    p = F.softmax(source_logits / T, dim=1)
    log_q = F.log_softmax(aux_logits / T, dim=1)
    return -(p * (1 - log_q.exp()).pow(gamma) * log_q).sum(dim=1).mean()


def sigmoid_kd(student_logits: Tensor, teacher_logits: Tensor, T: float = 1.0) -> Tensor:
    """Per-class sigmoid distillation for multi-label tasks (../docs METHOD.md section 10):

        L = T^2 * mean_{b,k} BCE(sigmoid(z_bk / T), target sigmoid(t_bk / T))

    ``student_logits`` z and ``teacher_logits`` t (no gradient): [B, K]. Each class is its own binary problem, so
    the softmax KL of single-label KD does not apply; ``T^2`` keeps the gradient scale as in Hinton et al.
    """
    target = torch.sigmoid(teacher_logits.detach().float() / T)
    return F.binary_cross_entropy_with_logits(student_logits.float() / T, target) * (T * T)
