"""Limited-label subsets: the same stratified choice for every method, given the seed."""

from __future__ import annotations

import torch
from torch import Tensor

from sskt.errors import UserError


def labeled_subset(labels: Tensor, per_class: int, seed: int) -> Tensor:
    """Exactly ``per_class`` indices of every class present in ``labels`` (int64 [N]), chosen by ``seed``.

    Uses its own ``torch.Generator``, so the choice depends on nothing but (labels, per_class, seed). Returns the
    chosen indices sorted, int64 [per_class * num_classes]. A class smaller than ``per_class`` is a UserError.
    """
    if labels.dim() != 1:
        raise UserError(f"labels_per_class needs single-label data; got labels of shape {list(labels.shape)}")
    classes, counts = torch.unique(labels, return_counts=True)
    smallest = int(counts.argmin())
    if per_class < 1 or per_class > int(counts[smallest]):
        raise UserError(
            f"labels_per_class={per_class} is out of range; valid: 1..{int(counts[smallest])} "
            f"(the smallest class, {int(classes[smallest])}, has {int(counts[smallest])} images)"
        )
    generator = torch.Generator().manual_seed(seed)
    shuffled = torch.randperm(len(labels), generator=generator)
    # A stable sort by label keeps the random order within each class; take the first per_class of each.
    by_class = shuffled[torch.sort(labels[shuffled], stable=True).indices]
    starts = torch.cumsum(counts, 0) - counts
    take = (starts[:, None] + torch.arange(per_class)).flatten()
    return torch.sort(by_class[take]).values
