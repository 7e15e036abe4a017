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


def split_validation(labels: Tensor, per_class: int | None, seed: int) -> tuple[Tensor, Tensor]:
    """``(validation, remaining)`` sorted int64 indices: ``per_class`` images of every class held out, chosen by
    ``seed`` alone, and every other index. ``per_class`` None holds out nothing.

    Drawn before the labelled subset and the unlabelled pool, from its own seed, so every method and every run seed
    that shares ``seed`` shares the validation split, and no validation image is ever trained on.
    """
    everything = torch.arange(len(labels))
    if per_class is None:
        return everything[:0], everything
    if labels.dim() == 2:  # multi-label: per_class x K images at random (classes overlap; no stratification)
        count = per_class * labels.shape[1]
        if not 0 < count < len(labels):
            raise UserError(f"data.val_per_class={per_class} holds out {count} of {len(labels)} multi-label images")
        val = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:count].sort().values
        keep = torch.ones(len(labels), dtype=torch.bool).index_fill_(0, val, False)
        return val, everything[keep]
    try:
        val = labeled_subset(labels, per_class, seed)
    except UserError as err:
        raise UserError(str(err).replace("labels_per_class", "data.val_per_class", 1)) from None
    keep = torch.ones(len(labels), dtype=torch.bool).index_fill_(0, val, False)
    return val, everything[keep]


def labeled_after_validation(labels: Tensor, remaining: Tensor, per_class: int | None, seed: int) -> Tensor:
    """The labelled subset (sorted int64 dataset indices) chosen among ``remaining``: all of them, or ``per_class``
    per class chosen by ``seed``. With nothing held out this is exactly ``labeled_subset(labels, per_class, seed)``."""
    if per_class is None:
        return remaining
    return remaining[labeled_subset(labels[remaining], per_class, seed)]


POOL_SEED = 0
"""Seed of the fixed unlabelled pool: one constant, so every run seed, row and label budget draws the same pool."""


def fixed_pool(remaining: Tensor, labeled: Tensor, size: int | None) -> Tensor:
    """The unlabelled pool: ``size`` indices drawn once from ``remaining`` (every index outside the validation
    split) by ``POOL_SEED`` alone, minus the labelled ones, sorted; ``size`` None keeps all of ``remaining`` outside
    ``labeled``.

    Drawn before the labelled subset is removed, so two runs that label different images still share the pool but
    for the few images one of them labelled (at most ``len(labeled)``): the same unlabelled images for every row and
    regime of a benchmark, as a pool too large to pass through a slow source every epoch must be cut to a subset.
    """
    if size is not None and not 1 <= size <= len(remaining):
        raise UserError(f"data.unlabeled_pool={size} is out of range; valid: 1..{len(remaining)} or null (all)")
    chosen = remaining
    if size is not None:
        order = torch.randperm(len(remaining), generator=torch.Generator().manual_seed(POOL_SEED))
        chosen = remaining[order[:size]]
    keep = ~torch.isin(chosen, labeled)
    return torch.sort(chosen[keep]).values
