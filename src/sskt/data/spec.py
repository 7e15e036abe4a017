"""The shapes that flow between data, methods and the engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor


class ImageSet(Protocol):
    """A split of a dataset: fixed-size uint8 images and their labels.

    ``__getitem__(i)`` returns ``(image uint8 [C, H, W], label)``; ``labels`` holds every label (int64 [N] for
    single-label, float [N, K] multi-hot for multi-label) so subsets can be chosen without decoding images.
    In-memory sets also expose ``images`` (uint8 [N, C, H, W]) for fast batched gathering.
    """

    labels: Tensor

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor | int]: ...


@dataclass
class DatasetSpec:
    """A named dataset: its splits and what a model needs to know about it."""

    name: str
    train: ImageSet
    test: ImageSet
    num_classes: int
    mean: tuple[float, float, float]
    """Per-channel mean of the target's normalisation (3 channels; grey images are expanded to 3)."""
    std: tuple[float, float, float]
    image_size: int
    """Side of the (square) image the target sees after augmentation."""
    task: str = "single_label"
    """'single_label' (accuracy) or 'multi_label' (average precision)."""
    class_names: list[str] = field(default_factory=list)


@dataclass
class Batch:
    """One training step's data, already augmented and normalised, on the step's device.

    The first ``num_labeled`` rows are labelled; any rows after them are unlabelled images that feed only the
    auxiliary losses. ``soft`` holds cached source logits per source name (same rows) when the cache is on.
    """

    images: Tensor
    """float [B, C, H, W] (or [B, C, T, H, W] for video), normalised with the dataset's mean/std."""
    labels: Tensor
    """int64 [num_labeled] class indices, or float [num_labeled, K] multi-hot."""
    indices: Tensor
    """int64 [B] dataset indices of every row (labelled and unlabelled)."""
    num_labeled: int
    aug_params: Tensor | None = None
    """Augmentation parameters that produced each row (replayable), int64 [B, P]."""
    soft: dict[str, Tensor] | None = None
    """Cached source logits per source name, float [B, C_m]."""
    strong: Tensor | None = None
    """A second, strongly augmented view of each unlabelled row (FixMatch), float [B - num_labeled, C, H, W],
    normalised; None unless the method asks for strong views."""

    @property
    def labeled_images(self) -> Tensor:
        return self.images[: self.num_labeled]

    @property
    def num_unlabeled(self) -> int:
        return self.images.shape[0] - self.num_labeled

    def shard(self, rank: int, world: int) -> Batch:
        """This process's part of a global batch under data parallelism: labelled rows ``[rank::world]`` and
        unlabelled rows ``[rank::world]`` (their strong views and cached logits alike), so the ranks' rows are
        disjoint and together the whole batch. When a batch has fewer labelled rows than processes (a small last
        batch), every rank keeps all of them: the averaged gradient is still the batch's."""
        if world == 1:
            return self
        n = self.num_labeled
        lab = torch.arange(n)
        lab = lab[rank::world] if n >= world else lab
        unl = torch.arange(n, len(self.indices))[rank::world]
        rows = torch.cat([lab, unl]).to(self.images.device)
        soft = None if self.soft is None else {k: v[rows.to(v.device)] for k, v in self.soft.items()}
        strong = None if self.strong is None else self.strong[(unl - n).to(self.strong.device)]
        return Batch(
            images=self.images[rows],
            labels=self.labels[lab.to(self.labels.device)],
            indices=self.indices[rows.to(self.indices.device)],
            num_labeled=len(lab),
            aug_params=None if self.aug_params is None else self.aug_params[rows.to(self.aug_params.device)],
            soft=soft,
            strong=strong,
        )

    def to(self, device: torch.device) -> Batch:
        soft = None if self.soft is None else {k: v.to(device, non_blocking=True) for k, v in self.soft.items()}
        return Batch(
            images=self.images.to(device, non_blocking=True),
            labels=self.labels.to(device, non_blocking=True),
            indices=self.indices.to(device, non_blocking=True),
            num_labeled=self.num_labeled,
            aug_params=None if self.aug_params is None else self.aug_params.to(device, non_blocking=True),
            soft=soft,
            strong=None if self.strong is None else self.strong.to(device, non_blocking=True),
        )
