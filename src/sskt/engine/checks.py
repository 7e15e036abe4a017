"""``check_config``: every name and choice in a TrainConfig resolves before any data loads or network builds.

The checks every run shares live here; what only one method reads (DML's peers, MAXL's generator, KD's teacher,
SSKT's loss and schedule) is checked by that method's own ``check``, which the method registry runs.
"""

from __future__ import annotations

from typing import get_args

import torch

from sskt.config import Augment, BNMode, DataConfig, HeadKind, Precision, PrimaryLoss, Schedule, TrainConfig
from sskt.data import DATASETS
from sskt.errors import UserError, check_choice, check_range
from sskt.methods import METHODS
from sskt.models import MODELS
from sskt.sources import SOURCES
from sskt.sources.cache import check_cache_config

ACCELERATORS = ("auto", "cpu", "cuda", "gpu", "mps")


def check_config(cfg: TrainConfig) -> None:
    """Raise a one-line UserError naming the first bad value and its valid choices."""
    DATASETS.require(cfg.data.name, "dataset")
    MODELS.require(cfg.model.name, "model")
    METHODS.require(cfg.method.name, "method")
    for source in cfg.sources:
        SOURCES.require(source.name, "source")
        check_choice("source bn_mode", source.bn_mode, get_args(BNMode))
    check_choice("head.kind", cfg.head.kind, get_args(HeadKind))
    check_choice("data.augment", cfg.data.augment, get_args(Augment))
    check_choice("method.primary_loss", cfg.method.primary_loss, get_args(PrimaryLoss))
    check_choice("optim.schedule", cfg.optim.schedule, get_args(Schedule))
    check_choice("precision", str(cfg.precision), get_args(Precision))
    check_choice("accelerator", cfg.accelerator, ACCELERATORS)
    _check_ranges(cfg)
    method = METHODS.get(cfg.method.name)
    method.check(cfg)
    if cfg.cache.enabled:
        check_cache_config(cfg.cache, method.cache_temperatures(cfg))
    _check_positive(cfg)
    _check_strong_views(cfg)
    _check_used_by_dataset(cfg)
    _check_device(cfg)


def _check_positive(cfg: TrainConfig) -> None:
    for key, value in {
        "epochs": cfg.epochs,
        "eval_every": cfg.eval_every,
        "data.batch_size": cfg.data.batch_size,
        "data.eval_batch_size": cfg.data.eval_batch_size,
    }.items():
        if value < 1:
            raise UserError(f"{key} must be at least 1, got {value}")
    for key, value in {
        "data.labels_per_class": cfg.data.labels_per_class,
        "data.val_per_class": cfg.data.val_per_class,
        "data.image_size": cfg.data.image_size,
        "threads": cfg.threads,  # 0 would mean "all cores" to torch: say null for torch's default instead
    }.items():
        if value is not None and value < 1:
            raise UserError(f"{key} must be at least 1 or null, got {value}")
    for key, value in {"data.crop_padding": cfg.data.crop_padding, "data.num_workers": cfg.data.num_workers}.items():
        if value < 0:
            raise UserError(f"{key} must be >= 0, got {value}")
    if cfg.data.unlabeled_pool is not None and cfg.data.unlabeled != "rest":
        raise UserError(f"data.unlabeled_pool subsets data.unlabeled 'rest'; got data.unlabeled={cfg.data.unlabeled!r}")
    if not cfg.optim.lr > 0:
        raise UserError(f"optim.lr must be positive, got {cfg.optim.lr}")
    if not str(cfg.out).strip():
        raise UserError("out must name a run directory, got an empty path")


def _check_ranges(cfg: TrainConfig) -> None:
    """Numbers every run reads, inside the interval where they mean something: torch takes ``momentum 5`` or a
    negative ``precise_bn`` silently, and ``devices 0`` or a negative weight decay only with a traceback."""
    optim = cfg.optim
    check_range("optim.momentum", optim.momentum, 0, 1, open_high=True)
    check_range("optim.weight_decay", optim.weight_decay, 0)
    check_range("optim.gamma", optim.gamma, 0, open_low=True)
    check_range("optim.warmup_epochs", optim.warmup_epochs, 0)
    check_range("precise_bn", cfg.precise_bn, 0)
    check_range("devices", cfg.devices, 1)
    check_range("num_nodes", cfg.num_nodes, 1)
    check_range("dist_timeout", cfg.dist_timeout, 0, open_low=True)
    if cfg.source_chunk is not None:
        check_range("source_chunk", cfg.source_chunk, 0)
    for i, source in enumerate(cfg.sources):
        check_range(f"sources[{i}].weight", source.weight, 0)
        if source.input_size is not None:
            check_range(f"sources[{i}].input_size", source.input_size, 1)
        if source.resize_factor is not None:
            check_range(f"sources[{i}].resize_factor", source.resize_factor, 0, open_low=True)


DATASET_OPTIONS = {
    "data.image_size": (lambda d: d.image_size is not None, ("fashion_mnist", "cifar10", "cifar100", "stl10")),
    "data.clip_len": (lambda d: d.clip_len != DataConfig.clip_len, ("fashion_mnist", "cifar10", "cifar100", "stl10",
                                                                    "imagefolder", "voc2007")),
    "data.video_split": (lambda d: d.video_split != DataConfig.video_split,
                         ("fashion_mnist", "cifar10", "cifar100", "stl10", "imagefolder", "voc2007")),
}  # fmt: skip
"""Options a built-in dataset ignores, with when they count as set: a run that sets one would store a value that
was never used (``data.image_size 64`` on Fashion-MNIST trains at 32 px), so it is refused instead."""


def _check_used_by_dataset(cfg: TrainConfig) -> None:
    for key, (is_set, ignored_by) in DATASET_OPTIONS.items():
        if cfg.data.name in ignored_by and is_set(cfg.data):
            value = getattr(cfg.data, key.split(".")[1])
            raise UserError(f"{key} {value} is not used by dataset {cfg.data.name!r}; leave it unset (its default)")


def _check_strong_views(cfg: TrainConfig) -> None:
    views = cfg.strong_views
    if views.ops < 0 or views.magnitude_bins < 1 or not 0.0 <= views.cutout <= 1.0:
        raise UserError(
            "strong_views needs ops >= 0, magnitude_bins >= 1 and cutout in [0, 1]; got "
            f"ops={views.ops}, magnitude_bins={views.magnitude_bins}, cutout={views.cutout}"
        )


def _check_device(cfg: TrainConfig) -> None:
    """An accelerator that is asked for by name must exist here."""
    wants = {"cuda": torch.cuda.is_available, "gpu": torch.cuda.is_available, "mps": torch.backends.mps.is_available}
    if cfg.accelerator in wants and not wants[cfg.accelerator]():
        raise UserError(f"accelerator {cfg.accelerator!r} is not available on this machine; use 'auto' or 'cpu'")
