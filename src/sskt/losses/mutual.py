"""Deep mutual learning loss (Zhang, Xiang, Hospedales, Lu, "Deep Mutual Learning", CVPR 2018)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch.nn.functional as F
from torch import Tensor


def mutual_kl(logits: Tensor, peer_logits: Sequence[Tensor], temperature: float = 1.0) -> Tensor:
    """Mean KL from the other peers to this one: ``T^2 / (K-1) * sum_{l != k} KL(softmax(p_l/T) || softmax(p_k/T))``.

    Each KL is averaged over the batch (batchmean). ``logits`` [B, C] are peer k's (gradients flow into them);
    ``peer_logits`` are the K-1 other peers' [B, C] logits, detached here so no peer learns from another's loss.
    ``T^2`` keeps the gradient scale independent of T (Hinton et al. 2015); the paper uses T = 1.
    """
    if not peer_logits:
        raise ValueError("mutual_kl needs at least one other peer")
    log_q = F.log_softmax(logits / temperature, dim=1)
    total = logits.new_zeros(())
    for other in peer_logits:
        log_p = F.log_softmax(other.detach() / temperature, dim=1)
        total = total + F.kl_div(log_q, log_p, reduction="batchmean", log_target=True)
    return total * temperature**2 / len(peer_logits)


def mutual_sigmoid(logits: Tensor, peer_logits: Sequence[Tensor], temperature: float = 1.0) -> Tensor:
    """Multi-label DML: the mean per-class sigmoid distillation from the other peers (``losses.sigmoid_kd``)."""
    from sskt.losses.soft import sigmoid_kd

    if not peer_logits:
        raise ValueError("mutual_sigmoid needs at least one other peer")
    return sum(sigmoid_kd(logits, other.detach(), temperature) for other in peer_logits) / len(peer_logits)


def dml_loss(
    logits: Tensor,
    labels: Tensor,
    peer_logits: Sequence[Tensor],
    temperature: float = 1.0,
    primary: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
    multi_label: bool = False,
) -> Tensor:
    """Peer k's DML objective: ``CE(p_k, y) + 1/(K-1) sum_{l != k} KL(p_l || p_k)`` (Zhang et al. 2018, eq. 10).

    ``logits`` [B, C] of peer k, ``labels`` int64 [B], ``peer_logits`` K-1 tensors [B, C] (detached inside);
    ``primary`` replaces the label cross-entropy (``method.primary_loss``). ``multi_label`` uses the per-class
    sigmoid distillation instead of the softmax KL (and ``primary`` is then BCE).
    """
    mutual = mutual_sigmoid if multi_label else mutual_kl
    return primary(logits, labels) + mutual(logits, peer_logits, temperature)
