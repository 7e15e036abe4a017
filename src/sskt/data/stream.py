"""Training and evaluation batches.

``TrainStream`` yields one epoch of ``Batch`` objects as a pure function of ``(seed, epoch)``: the sample order,
the augmentation parameters and the unlabelled rows come from generators seeded by those two numbers only, so a
resumed run replays exactly the batches it would have seen. In-memory splits are gathered by index from their
uint8 tensor (no per-image Python); lazily decoded splits go through a ``DataLoader``.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from sskt.config import DataConfig, StrongViewConfig, TrainConfig
from sskt.data.augment import Augment, Normalize, build_augment
from sskt.data.datasets import EXTRA_SPLITS, load_extra_split, stored_shape
from sskt.data.folder import unlabeled_folder
from sskt.data.randaugment import strong_augment
from sskt.data.spec import Batch, DatasetSpec, ImageSet
from sskt.data.subsets import fixed_pool, labeled_after_validation, split_validation
from sskt.errors import UserError


class ViewProvider(Protocol):
    """Stored augmentation views and their cached source logits (the soft-label cache)."""

    def lookup(
        self, indices: Tensor, generator: torch.Generator, split: str = "train"
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """For int64 [n] ``indices`` in index space ``split``, choose one stored view per sample with
        ``generator`` and return its augmentation params int64 [n, P] and the cached logits float [n, C_m] per
        source name."""
        ...


def epoch_generator(seed: int, epoch: int, purpose: str) -> torch.Generator:
    """A CPU generator seeded by ``(seed, epoch, purpose)`` only; each purpose gets an independent stream, so
    changing how one draws (say, the unlabelled ratio) never shifts another (the labelled order)."""
    entropy = [seed % 2**64, epoch, zlib.crc32(purpose.encode())]
    state = np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) >> 1)


@dataclass
class Pool:
    """Where rows of a batch come from: a split, the member indices, their index space and augmentation."""

    name: str
    """Index space of ``indices``: 'train', 'stl10:unlabeled', or 'folder:<absolute path>'."""
    split: ImageSet
    indices: Tensor
    augment: Augment


class _BatchReader(Dataset):
    """Decodes whole batches of a lazy split, so a DataLoader worker returns one uint8 [b, C, H, W] per item; with
    ``starts`` (clips) each row is ``split.read(index, start)``."""

    def __init__(self, split: ImageSet, batches: list[Tensor], starts: list[Tensor] | None = None) -> None:
        self.split, self.batches, self.starts = split, batches, starts

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> Tensor:
        if self.starts is not None:
            rows = zip(self.batches[i].tolist(), self.starts[i].tolist(), strict=True)
            return torch.stack([self.split.read(j, s) for j, s in rows])
        return torch.stack([self.split[int(j)][0] for j in self.batches[i]])


def read_batches(
    split: ImageSet, batches: list[Tensor], num_workers: int = 0, images: Tensor | None = None, starts=None
):
    """Yield uint8 [b, C, H, W] for each index batch: gathered from ``images`` (or ``split.images``) when the split
    is in memory, else decoded by a DataLoader with ``num_workers`` processes (clips from ``starts``)."""
    images = getattr(split, "images", None) if images is None else images
    if images is not None:
        for idx in batches:
            yield images[idx.to(images.device)]
        return
    yield from DataLoader(_BatchReader(split, batches, starts), batch_size=None, num_workers=num_workers)


@dataclass
class TrainSplit:
    """How the training images divide: the validation split (held out first, by ``data.val_seed``), the labelled
    subset chosen among the rest, and everything else (candidates for ``data.unlabeled='rest'``; with
    ``data.unlabeled_pool`` a fixed subset of them)."""

    val: Tensor
    labeled: Tensor
    rest: Tensor


def train_split(spec: DatasetSpec, cfg: TrainConfig | DataConfig, seed: int | None = None) -> TrainSplit:
    """The validation split, then the labelled training indices (all remaining, or ``labels_per_class`` per class
    chosen by ``data.subset_seed``, else by the run's ``seed``), then the rest; each sorted int64 dataset indices
    into ``spec.train``. ``cfg``: the data settings and the run's seed, or (older callers) the whole run config."""
    data, seed = split_config(cfg, seed)
    val, remaining = split_validation(spec.train.labels, data.val_per_class, data.val_seed)
    seed = seed if data.subset_seed is None else data.subset_seed
    labeled = labeled_after_validation(spec.train.labels, remaining, data.labels_per_class, seed)
    return TrainSplit(val, labeled, fixed_pool(remaining, labeled, data.unlabeled_pool))


def split_config(cfg: TrainConfig | DataConfig, seed: int | None) -> tuple[DataConfig, int]:
    """``(data settings, run seed)`` from explicit ones, or from a whole run config (the older call form)."""
    if isinstance(cfg, DataConfig):
        if seed is None:
            raise TypeError("the run's seed is needed with a DataConfig")
        return cfg, seed
    return cfg.data, cfg.seed


def labeled_indices(spec: DatasetSpec, cfg: TrainConfig | DataConfig, seed: int | None = None) -> Tensor:
    """The labelled training indices (sorted int64), outside the validation split."""
    return train_split(spec, cfg, seed).labeled


def unlabeled_pool(spec: DatasetSpec, data: DataConfig, rest: Tensor) -> Pool | None:
    """The unlabelled images named by ``data.unlabeled`` (None when unused); bad values are UserErrors."""
    if data.unlabeled is None:
        if data.unlabeled_ratio:
            raise UserError(f"data.unlabeled_ratio={data.unlabeled_ratio} needs data.unlabeled (e.g. 'rest')")
        return None
    if data.unlabeled_ratio < 1:
        raise UserError(
            f"data.unlabeled={data.unlabeled!r} needs data.unlabeled_ratio >= 1; got {data.unlabeled_ratio}"
        )
    hw = stored_shape(spec.train)[-2:]
    pad = data.crop_padding
    if data.unlabeled == "rest":
        if len(rest) == 0:
            raise UserError(
                "data.unlabeled='rest' is empty: every training image is labelled or held out for validation; "
                "set labels_per_class"
            )
        return Pool("train", spec.train, rest, build_augment(spec, data.augment, padding=pad))
    if data.unlabeled in EXTRA_SPLITS:
        name, split = data.unlabeled, load_extra_split(data.unlabeled, data)
    elif Path(data.unlabeled).expanduser().is_dir():
        path = Path(data.unlabeled).expanduser().resolve()
        name, split = f"folder:{path}", unlabeled_folder(path, hw, data.skip_bad_images)
    else:
        valid = ", ".join(["rest", *EXTRA_SPLITS, "an existing folder of images"])
        raise UserError(f"unknown data.unlabeled {data.unlabeled!r}; valid choices: {valid}")
    if stored_shape(split)[-2:] != hw:
        raise UserError(f"data.unlabeled {data.unlabeled!r} has {stored_shape(split)[-2:]} px images; {spec.name} {hw}")
    return Pool(name, split, torch.arange(len(split)), build_augment(spec, data.augment, in_hw=hw, padding=pad))


def _cycle(members: Tensor, total: int, generator: torch.Generator) -> Tensor:
    """``total`` members drawn as back-to-back random permutations (each member once per pass)."""
    passes = math.ceil(total / len(members))
    return torch.cat([members[torch.randperm(len(members), generator=generator)] for _ in range(passes)])[:total]


@dataclass
class Rows:
    """One pool's rows of a batch, before the pools are joined into a ``Batch``."""

    indices: Tensor
    """int64 [n] dataset indices in the pool's index space."""
    images: Tensor
    """float [n, C, H, W] (or [n, C, T, H, W]) augmented and normalised."""
    params: Tensor
    """int64 [n, P] augmentation parameters that made ``images`` (replayable)."""
    soft: dict[str, Tensor] | None
    """Cached logits per frozen network for the same views (the view provider's), or None."""
    strong: Tensor | None
    """The rows' strong views, normalised, or None (not asked for)."""


class TrainStream:
    """Epochs of training batches, deterministic in ``(seed, epoch)``.

    Each batch holds up to ``data.batch_size`` labelled rows, then ``unlabeled_ratio`` unlabelled rows per labelled
    row. ``len(stream)`` is the number of steps per epoch (the last partial batch is kept). With ``device`` set,
    in-memory images are kept on that device and augmented there. ``enable_strong_views`` adds a strong view of
    every unlabelled row (``Batch.strong``), drawn from its own (seed, epoch) stream. The stream takes the data
    settings and the run's seed (``TrainStream(spec, cfg.data, cfg.seed)``); a whole ``TrainConfig`` in place of
    both is the older call form.
    """

    def __init__(
        self,
        spec: DatasetSpec,
        data: DataConfig | TrainConfig,
        seed: int | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        data, seed = split_config(data, seed)
        self.spec, self.seed, self.batch_size = spec, seed, data.batch_size
        self.num_workers, self.padding = data.num_workers, data.crop_padding
        self.device = None if device is None else torch.device(device)
        self.augment = build_augment(spec, data.augment, padding=data.crop_padding)
        self.normalize = Normalize(spec.mean, spec.std)
        self.split = train_split(spec, data, seed)
        self.labeled = Pool("train", spec.train, self.split.labeled, self.augment)
        self.unlabeled = unlabeled_pool(spec, data, self.split.rest)
        self.ratio = data.unlabeled_ratio if self.unlabeled is not None else 0
        self.strong: Augment | None = None
        self.provider: ViewProvider | None = None
        self._resident: dict[str, Tensor] = {}
        self.rank, self.world = 0, 1

    @property
    def labeled_indices(self) -> Tensor:
        """Sorted int64 train indices of the labelled images."""
        return self.labeled.indices

    @property
    def val_indices(self) -> Tensor:
        """Sorted int64 train indices of the validation split (empty without ``data.val_per_class``)."""
        return self.split.val

    @property
    def unlabeled_name(self) -> str | None:
        """Index space of unlabelled rows: 'train' for 'rest', 'stl10:unlabeled', 'folder:<path>'; None if unused."""
        return None if self.unlabeled is None else self.unlabeled.name

    def __len__(self) -> int:
        return math.ceil(len(self.labeled.indices) / self.batch_size)

    def pools(self) -> list[Pool]:
        """Where the rows come from: the labelled pool, then the unlabelled one when there is one."""
        return [self.labeled] + ([self.unlabeled] if self.unlabeled is not None else [])

    def shard(self, rank: int, world: int) -> None:
        """Under data parallelism: every epoch draws the same global batches on every rank (the same (seed, epoch)
        streams), and this rank trains on ``Batch.shard(rank, world)`` of each."""
        self.rank, self.world = rank, world

    def enable_strong_views(self, views: StrongViewConfig | TrainConfig) -> None:
        """Add the strong view (``strong_views``: RandAugment and Cutout) of every unlabelled row as
        ``Batch.strong``; a ``TrainConfig`` stands for its ``strong_views`` (the older call form)."""
        if self.unlabeled is None:
            raise UserError("strong views are of unlabelled images: set data.unlabeled (e.g. 'rest')")
        views = views.strong_views if isinstance(views, TrainConfig) else views
        hw = stored_shape(self.unlabeled.split)[-2:]
        self.strong = strong_augment(self.spec, views, in_hw=hw, padding=self.padding)

    def set_view_provider(self, provider: ViewProvider | None) -> None:
        """Replay stored views: epochs take augmentation params and ``Batch.soft`` from ``provider``."""
        self.provider = provider

    def epoch(self, epoch: int) -> Iterator[Batch]:
        """The batches of ``epoch`` (0-based); the same ``(seed, epoch)`` always gives the same batches."""
        order_gen = epoch_generator(self.seed, epoch, "order")
        members = self.labeled.indices
        labeled = list(members[torch.randperm(len(members), generator=order_gen)].split(self.batch_size))
        views_gen = epoch_generator(self.seed, epoch, "views")
        clip_gen = epoch_generator(self.seed, epoch, "clip_start")
        parts = [
            self._rows(self.labeled, labeled, epoch_generator(self.seed, epoch, "augment"), views_gen, None, clip_gen)
        ]
        if self.unlabeled is not None:
            sizes = [self.ratio * len(b) for b in labeled]
            drawn = _cycle(self.unlabeled.indices, sum(sizes), epoch_generator(self.seed, epoch, "unlabeled"))
            aug_gen = epoch_generator(self.seed, epoch, "unlabeled_augment")
            strong_gen = epoch_generator(self.seed, epoch, "unlabeled_strong")
            clip_gen = epoch_generator(self.seed, epoch, "unlabeled_clip_start")
            parts.append(self._rows(self.unlabeled, list(drawn.split(sizes)), aug_gen, views_gen, strong_gen, clip_gen))
        for rows in zip(*parts, strict=True):
            yield self._batch(rows).shard(self.rank, self.world)

    def _rows(self, pool: Pool, batches: list[Tensor], aug_gen, views_gen, strong_gen=None, clip_gen=None):
        """Yield the ``Rows`` of each index batch drawn from ``pool``; strong views only with ``strong_gen`` and
        strong views asked for."""
        sizes = [len(b) for b in batches]
        params = pool.augment.sample(sum(sizes), aug_gen).split(sizes)
        strong = self.strong if strong_gen is not None else None
        strong_params = strong.sample(sum(sizes), strong_gen).split(sizes) if strong else [None] * len(sizes)
        starts = None
        if clip_gen is not None and hasattr(pool.split, "sample_starts"):  # clips: a window per video and epoch
            starts = list(pool.split.sample_starts(torch.cat(batches), clip_gen).split(sizes))
        images = read_batches(pool.split, batches, self.num_workers, self._images(pool), starts)
        for idx, p, sp, raw in zip(batches, params, strong_params, images, strict=True):
            soft = None
            if self.provider is not None:  # the cache's stored view replaces the sampled one
                p, soft = self.provider.lookup(idx, views_gen, pool.name)
            raw = raw if self.device is None else raw.to(self.device, non_blocking=True)
            view = None if strong is None else self.normalize(strong.apply(raw, sp))
            yield Rows(idx, self.normalize(pool.augment.apply(raw, p)), p, soft, view)

    def _images(self, pool: Pool) -> Tensor | None:
        """The pool's in-memory uint8 images, moved once to ``self.device`` (None for lazy splits)."""
        images = getattr(pool.split, "images", None)
        if images is None or self.device is None:
            return images
        if pool.name not in self._resident:
            self._resident[pool.name] = images.to(self.device)
        return self._resident[pool.name]

    def _batch(self, parts: tuple[Rows, ...]) -> Batch:
        """One ``Batch`` of the labelled ``Rows`` and (when there are any) the unlabelled ones, in that order."""
        labeled, device = parts[0], self.device or torch.device("cpu")
        soft = None if labeled.soft is None else {k: torch.cat([p.soft[k] for p in parts]) for k in labeled.soft}
        return Batch(
            images=torch.cat([p.images for p in parts]),
            labels=self.labeled.split.labels[labeled.indices].to(device),
            indices=torch.cat([p.indices for p in parts]).to(device),
            num_labeled=len(labeled.indices),
            aug_params=torch.cat([p.params.to(device) for p in parts]),
            soft=soft,
            strong=parts[-1].strong if len(parts) > 1 else None,
        )


def eval_batches(
    split: ImageSet,
    spec: DatasetSpec,
    batch_size: int,
    device: torch.device | str | None = None,
    num_workers: int = 0,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield ``(images float [b, 3, S, S] normalised, unaugmented; labels [b])`` over ``split`` in order; for test
    clips (a split with ``video_ids``) labels are ``[b, 2]``: class and video."""
    augment = build_augment(spec, "none", in_hw=stored_shape(split)[-2:])
    norm = Normalize(spec.mean, spec.std)
    batches = list(torch.arange(len(split)).split(batch_size))
    ids = getattr(split, "video_ids", None)
    protocol = getattr(split, "protocol_labels", None)  # VOC test: [b, 2, K], the policy's and the protocol's labels
    for idx, raw in zip(batches, read_batches(split, batches, num_workers), strict=True):
        raw = raw if device is None else raw.to(device, non_blocking=True)
        labels = split.labels[idx] if ids is None else torch.stack([split.labels[idx], ids[idx]], 1)
        labels = labels if protocol is None else torch.stack([labels, protocol[idx]], 1)
        yield norm(augment.apply(raw, augment.identity_params(len(idx)))), labels.to(raw.device)
